"""`serve`: a registered model version online, following its alias and batching concurrent requests."""

from __future__ import annotations

import click
from rich.console import Console

from sentiment_flow.cli.group import cli, config_options, user_errors
from sentiment_flow.config import ServeConfig

DEFAULT_HOST = "127.0.0.1"  # loopback: serving to others is a choice (--host 0.0.0.0)
DEFAULT_PORT = 5001  # docs/serving.md's `mlflow models serve` example uses the same


@cli.command("serve")
@click.argument("model_uri")
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Interface to listen on; 0.0.0.0 for others.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535))
@config_options(ServeConfig)
@user_errors
def serve_command(model_uri: str, host: str, port: int, **options) -> None:
    """Serve MODEL_URI with MLflow's scoring protocol (/invocations, /ping, /health, /version) until Ctrl-C or
    SIGTERM, which first answers the requests in flight.

    Given models:/NAME@ALIAS it follows the alias: a version the alias moves to is loaded beside the one serving,
    checked with the canary texts and swapped in without dropping a request. Every answer names its version in
    the X-Model-Version header. MODEL_URI may also be models:/NAME/VERSION, runs:/RUN_ID/model or a directory.
    """
    from sentiment_flow.serving.app import serve  # here: it imports MLflow and FastAPI

    config = ServeConfig(**options)
    out = Console()
    serve(model_uri, host, port, config, lambda text: out.print(text, highlight=False, markup=False, soft_wrap=True))
