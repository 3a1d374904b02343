"""`sentiment-flow serve`: a registered version served through MLflow's scoring protocol, following its alias
(versions.py: load beside, canary, swap, retire) and batching concurrent requests (batching.py); app.py is the
HTTP app and the server around them. Its options are config/serving.py's ServeConfig.

Nothing is re-exported here: these modules load MLflow and FastAPI (a second) on import, which every
`sentiment-flow` command, `--help` included, would wait for. Import them as `sentiment_flow.serving.app`.
"""
