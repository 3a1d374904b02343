"""`sentiment-flow serve`: MLflow's scoring protocol around a model version that can change under it.

Requests are parsed and answered by MLflow's own `scoring_server.invocations` (the same payloads, the same 4xx
answers as `mlflow models serve`); this app adds the version that answered (the X-Model-Version header on
every response), the queue limit's 503 with a Retry-After, and a model that follows its alias (versions.py) and
batches across requests (batching.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request  # at module level: FastAPI resolves the handlers' annotations here
from fastapi.responses import Response
from mlflow.environment_variables import _MLFLOW_IS_IN_SERVING_ENVIRONMENT, MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import scoring_server
from mlflow.version import VERSION

from sentiment_flow.config import ServeConfig
from sentiment_flow.serving.batching import RETRY_AFTER_SECONDS, Overloaded
from sentiment_flow.serving.versions import AliasFollower, Router, load
from sentiment_flow.serving.webhook import SECRET_VAR, WEBHOOK_PATH, handler

logger = logging.getLogger(__name__)

VERSION_HEADER = "X-Model-Version"  # NAME/VERSION of the model that answered (the URI outside the registry)
JSON = "application/json"
REQUEST_THREADS = (
    128  # requests parsed or waiting for their batch at once: twice the default --max-batch of 1-text ones
)


def create_app(
    router: Router,
    config: ServeConfig,
    on_shutdown: Callable[[], None] = lambda: None,
    webhook: Callable[[bytes, Mapping[str, str]], tuple[int, str]] | None = None,
):
    """The FastAPI app: /invocations, /ping, /health and /version as `mlflow models serve` answers them, and
    POST /registry-webhook answered by `webhook` when given."""
    timeout = MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get()
    # Parsing and waiting for the batch happen in threads: asyncio's default pool (cores + 4 threads) would let
    # only that many requests at once reach the batcher. Admitted requests beyond REQUEST_THREADS wait for one.
    threads = ThreadPoolExecutor(REQUEST_THREADS, thread_name_prefix="sentiment_flow-request")
    admitted = 0  # requests between arrival and answer: bounded by queue_limit, as their bodies are memory too

    @asynccontextmanager
    async def lifespan(_app):
        yield
        on_shutdown()  # uvicorn has answered every request in flight by now (SIGTERM drains them first)
        threads.shutdown()

    app = FastAPI(lifespan=lifespan)

    def answered(content, status: int, served_version: str, media_type: str = JSON, **headers: str) -> Response:
        return Response(content, status, {VERSION_HEADER: served_version, **headers}, media_type=media_type)

    @app.get("/ping")
    @app.get("/health")
    async def ping():
        return answered("\n", 200, router.current.version)

    @app.get("/version")
    async def version():
        return answered(VERSION, 200, router.current.version)

    def invoke(data: bytes, content_type: str | None) -> Response:
        with router.lease() as served, served.batcher.arriving():
            try:
                result = scoring_server.invocations(data, content_type, served.model, served.input_schema)
            except Overloaded as exc:
                exc.message = str(exc.args[0])  # invocations prefixed it with the whole input: not echoed back
                return answered(exc.serialize_as_json(), 503, served.version, **{"Retry-After": RETRY_AFTER})
            except MlflowException as exc:
                return answered(exc.serialize_as_json(), exc.get_http_status_code(), served.version)
            return answered(result.response, result.status, served.version, result.mimetype)

    @app.post("/invocations")
    async def invocations(request: Request):
        nonlocal admitted
        if admitted >= config.queue_limit:
            overloaded = Overloaded(config.queue_limit)
            return answered(overloaded.serialize_as_json(), 503, router.current.version, **{"Retry-After": RETRY_AFTER})
        admitted += 1
        try:
            data = await request.body()
            work = asyncio.get_running_loop().run_in_executor(
                threads, invoke, data, request.headers.get("content-type")
            )
            return await asyncio.wait_for(asyncio.shield(work), timeout)
        except TimeoutError:
            return answered("Request processing time exceeded limit", 504, router.current.version)
        finally:
            admitted -= 1

    if webhook is not None:

        @app.post(WEBHOOK_PATH)
        async def registry_webhook(request: Request):
            status, text = webhook(await request.body(), request.headers)
            return answered(text + "\n", status, router.current.version, media_type="text/plain")

    return app


RETRY_AFTER = str(RETRY_AFTER_SECONDS)


def serve(model_uri: str, host: str, port: int, config: ServeConfig, announce: Callable[[str], None]) -> None:
    """Serve `model_uri` on host:port until SIGTERM or Ctrl-C, following its alias if it names one; in-flight
    requests are answered before it returns. Raises UserError if the model does not load or fails the canary."""
    import uvicorn

    from sentiment_flow.store import MODELS_URI

    os.environ[_MLFLOW_IS_IN_SERVING_ENVIRONMENT.name] = "true"  # as `mlflow models serve` sets for the flavors
    router = Router(load(model_uri, config))
    match = MODELS_URI.match(model_uri)
    follower = None
    if match and match["alias"]:
        follower = AliasFollower(model_uri, router, config, lambda uri: load(uri, config)).start()

    def shutdown() -> None:
        if follower:
            follower.stop()
        router.close()

    # A signed registry webhook wakes the follower at once (serving/webhook.py); the poll stays as the fallback.
    secret = os.environ.get(SECRET_VAR)
    hook = handler(secret, match["name"], match["alias"], follower.wake) if follower and match and secret else None
    app = create_app(router, config, on_shutdown=shutdown, webhook=hook)
    following = f", following {model_uri} every {config.poll_seconds:g} s" if follower else ""
    following += f" and on signed webhooks to {WEBHOOK_PATH}" if hook else ""
    announce(f"Serving {router.current.version} on http://{host}:{port}{following}")
    uvicorn_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get(),
    )
    uvicorn.Server(uvicorn_config).run()
