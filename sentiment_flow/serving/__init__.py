"""`sentiment-flow serve`: a registered version served through MLflow's scoring protocol, following its alias
(versions.py: load beside, canary, swap, retire) and batching concurrent requests (batching.py); app.py is the
HTTP app and the server around them, options.py their options.

Only the options are re-exported here: the other modules load MLflow and FastAPI (a second) on import, which
every `sentiment-flow` command, `--help` included, would wait for. Import them as `sentiment_flow.serving.app`.
"""

from sentiment_flow.serving.options import ServeConfig

__all__ = ["ServeConfig"]
