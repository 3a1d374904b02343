"""`sentiment-flow serve models:/NAME@champion` end to end: it follows promotions and rollbacks under load without a
failed request, keeps serving when the alias moves to a version that fails to load or fails the canary texts,
answers 503 with a Retry-After past its queue limit and recovers, and answers the requests in flight on SIGTERM.

The tiny model is registered as versions whose answers differ (a bias on one class each), so an answer shows
which version gave it; what each version answers alone (`mlflow.pyfunc`, one text at a time) is the expectation.
"""

from __future__ import annotations

import http.client
import json
import random
import shutil
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from email.message import Message
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from sentiment_flow import registry
from sentiment_flow.config import INPUT_COLUMN, LABELS
from sentiment_flow.serving.app import VERSION_HEADER
from sentiment_flow.store import models_uri

from conftest import free_port, http_process, synthetic_split

pytestmark = pytest.mark.slow  # registers tiny versions and starts servers

NAME = "sentiment-english"
TEXTS = list(synthetic_split(12, seed=5)["text"])
POLL = "0.2"  # seconds between alias checks: the tests wait for moves, not for the default 10 s


def register(tiny_model_dir: Path, favoured: str, labels: tuple[str, ...] = LABELS) -> str:
    """A version of the tiny model that leans to the class `favoured` (its answers differ from the others');
    `labels` other than LABELS make a version that loads but fails the canary texts."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from sentiment_flow import runs
    from sentiment_flow.training import tracking

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.classifier.bias[LABELS.index(favoured)] += 0.01  # the untrained model's scores differ by ~1e-3
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {label: i for i, label in enumerate(labels)}
    with mlflow.start_run() as run:
        info = tracking.log_model(model, AutoTokenizer.from_pretrained(tiny_model_dir), None)
        tags = {"lang": "english", "data_hash": "d" * 64, "mlflow_run_id": run.info.run_id}
        tags |= {"test_f1_macro": "0.7000", "test_accuracy": "0.7000", "base_model": "tiny-distilbert"}
        with runs.registration(NAME) as registered:
            registered.register(info.model_uri, tags, "Tiny test model.", "Tiny test models.")
    return str(registered.version)


def own_answers(version: str) -> dict[str, dict]:
    """What `version` answers for each text scored alone: {text: {"label", "score"}}."""
    model = mlflow.pyfunc.load_model(models_uri(NAME, version))
    answers = {}
    for text in TEXTS:
        row = model.predict(pd.DataFrame({INPUT_COLUMN: [text]})).iloc[0]
        answers[text] = {"label": row["label"], "score": float(row["score"])}
    return answers


@contextmanager
def serving(tmp_path: Path, *options: str):
    """`sentiment-flow serve models:/NAME@champion` on a free port: (its URL, its process, its log path)."""
    port, log = free_port(), tmp_path / "serve.log"
    command = [sys.executable, "-m", "sentiment_flow", "-v", "serve", f"models:/{NAME}@champion", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with http_process([*command, "--poll-seconds", POLL, *options], url, "/ping", log) as server:
        yield url, server, log


def post(url: str, texts: list[str]) -> tuple[int, Message, dict]:
    """(status, headers (names in any case), JSON body) of one POST /invocations of `texts`; an HTTP error is a
    result here."""
    body = json.dumps({"inputs": texts}).encode()
    request = urllib.request.Request(f"{url}/invocations", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.loads(error.read() or b"{}")


class Unfinished:
    """A POST /invocations whose body is still being sent: the server has admitted it and waits for the rest."""

    def __init__(self, url: str, texts: list[str]):
        self.body = json.dumps({"inputs": texts}).encode()
        self.connection = http.client.HTTPConnection(*url.removeprefix("http://").split(":"), timeout=60)
        self.connection.putrequest("POST", "/invocations")
        self.connection.putheader("Content-Type", "application/json")
        self.connection.putheader("Content-Length", str(len(self.body)))
        self.connection.endheaders(self.body[:5])

    def finish(self) -> tuple[int, dict]:
        """Send the rest of the body: (status, JSON body) of the answer."""
        self.connection.send(self.body[5:])
        response = self.connection.getresponse()
        try:
            return response.status, json.loads(response.read())
        finally:
            self.connection.close()


def wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_promotion_and_rollback_under_load_fail_no_request_and_switch_each_client_once_per_move(
    tiny_model_dir, tmp_path
):
    old, new = register(tiny_model_dir, "positive"), register(tiny_model_dir, "negative")
    registry.promote(NAME, old, "champion", force=True, reason="the first champion")
    expected = {f"{NAME}/{old}": own_answers(old), f"{NAME}/{new}": own_answers(new)}
    assert expected[f"{NAME}/{old}"] != expected[f"{NAME}/{new}"]  # an answer shows which version gave it
    answers: list[list[tuple[int, str, list[str], list[dict]]]] = [[] for _ in range(4)]  # per client, in order
    stop = threading.Event()

    def client(seen: list, seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            texts = rng.sample(TEXTS, rng.randint(1, 4))
            status, headers, body = post(url, texts)
            seen.append((status, headers.get(VERSION_HEADER), texts, body.get("predictions")))

    def served(version: str) -> bool:
        return sum(1 for seen in answers for a in seen[-3:] if a[1] == f"{NAME}/{version}") >= 8

    with serving(tmp_path) as (url, _, _), ThreadPoolExecutor(4) as pool:
        clients = [pool.submit(client, seen, seed) for seed, seen in enumerate(answers)]
        try:
            wait_for(lambda: served(old), "answers before the promotion")
            registry.promote(NAME, new, "champion", force=True, reason="the challenger")
            wait_for(lambda: served(new), f"every client to get version {new}")
            registry.rollback(NAME, reason="the rollback under test")
            wait_for(lambda: served(old), f"every client to get version {old} again")
        finally:
            stop.set()
        for done in clients:
            done.result()

    for seen in answers:
        assert [status for status, *_ in seen] == [200] * len(seen)
        versions = [version for _, version, _, _ in seen]
        switches = [(a, b) for a, b in zip(versions, versions[1:]) if a != b]
        assert switches == [(f"{NAME}/{old}", f"{NAME}/{new}"), (f"{NAME}/{new}", f"{NAME}/{old}")], switches
        for _, version, texts, predictions in seen:
            own = expected[version]
            assert [p["label"] for p in predictions] == [own[t]["label"] for t in texts]
            # fp32 within a batch pads to its longest text: float rounding of another matmul shape, no more.
            assert [p["score"] for p in predictions] == pytest.approx([own[t]["score"] for t in texts], abs=1e-6)


def test_a_version_that_fails_to_load_or_fails_the_canary_is_not_swapped_in(tiny_model_dir, tmp_path):
    serving_version = register(tiny_model_dir, "positive")
    unknown_labels = register(tiny_model_dir, "negative", labels=("good", "so-so", "bad"))
    unloadable = register(tiny_model_dir, "neutral")
    client = mlflow.MlflowClient()
    # Its weights gone from the artifact store: registered, but it cannot load.
    source = client.get_model_version(NAME, unloadable).source
    location = client.get_logged_model(source.removeprefix("models:/")).artifact_location
    shutil.rmtree(Path(location.removeprefix("file://")) / "model")
    client.set_registered_model_alias(NAME, "champion", serving_version)

    with serving(tmp_path) as (url, _, log):
        for broken, why in [(unknown_labels, "failed the canary texts"), (unloadable, "Could not load")]:
            # Moved by hand: the registry's own smoke gate would refuse both.
            client.set_registered_model_alias(NAME, "champion", broken)
            refusal = f"Not swapping to {NAME}/{broken}"
            wait_for(lambda refusal=refusal: refusal in log.read_text(), refusal)
            assert why in log.read_text()
            status, headers, body = post(url, TEXTS[:2])
            assert (status, headers[VERSION_HEADER]) == (200, f"{NAME}/{serving_version}"), body
            assert len(body["predictions"]) == 2


def test_past_the_queue_limit_requests_get_503_with_retry_after_and_the_server_recovers(register_tiny_model, tmp_path):
    version = register_tiny_model()
    mlflow.MlflowClient().set_registered_model_alias(NAME, "champion", version)
    with serving(tmp_path, "--queue-limit", "2") as (url, _, _):
        unfinished = [Unfinished(url, [text]) for text in TEXTS[:2]]  # two requests still arriving fill the queue
        time.sleep(0.5)
        status, headers, body = post(url, TEXTS[2:3])
        results = [request.finish() for request in unfinished]
        assert status == 503, body
        assert headers["Retry-After"] == "1" and "--queue-limit" in body["message"]
        assert [status for status, _ in results] == [200, 200]
        status, headers, body = post(url, TEXTS[2:3])
        assert (status, headers[VERSION_HEADER], len(body["predictions"])) == (200, f"{NAME}/{version}", 1)


def test_sigterm_answers_the_requests_in_flight_before_the_server_exits(register_tiny_model, tmp_path):
    version = register_tiny_model()
    mlflow.MlflowClient().set_registered_model_alias(NAME, "champion", version)
    with serving(tmp_path) as (url, server, _):
        in_flight = [Unfinished(url, [text]) for text in TEXTS[:2]]  # admitted, their bodies still arriving
        time.sleep(0.5)
        server.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        answers = [request.finish() for request in in_flight]
        server.wait(timeout=30)
    assert [(status, len(body["predictions"])) for status, body in answers] == [(200, 1), (200, 1)]
    assert server.returncode == 128 + signal.SIGTERM  # the CLI's exit code for SIGTERM, after draining
