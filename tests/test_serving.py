"""The serving contract: `mlflow models serve` of a version `train` registered, posted to over loopback.

One tiny training and one server per module; every test posts to it. What MLflow's scoring server does
that the project cannot change is marked xfail(strict=True) with the reason, so a fix upstream shows up
as a failure here and the README's list of limits can shrink.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import mlflow
import pandas as pd
import pytest

from sentiment_flow import scoring
from sentiment_flow.config import LABELS
from sentiment_flow.tracking import INPUT_COLUMN
from sentiment_flow.train import train

from conftest import free_port, http_service, isolate, synthetic_split
from test_train import tiny_config

pytestmark = pytest.mark.slow  # a training and a server start per module

JSON = "application/json"
LONG_TEXT = " ".join(["the food was great today"] * 600)  # 15 KB, no punctuation: was HTTP 400 MemoryError


@dataclass(frozen=True)
class Served:
    url: str
    scorer: scoring.Scorer  # the batch scorer on the same version, for the expected labels


@pytest.fixture(scope="module")
def served(tiny_model_dir, tiny_data_dir, tmp_path_factory):
    """`mlflow models serve -m models:/NAME/VERSION` of a freshly trained tiny model, on a free loopback port."""
    root = tmp_path_factory.mktemp("served")
    with pytest.MonkeyPatch.context() as mp:
        isolate(mp, root)
        result = train(tiny_config(tiny_model_dir, tiny_data_dir))
        scorer = scoring.load_scorer(result.model_uri)
        port = free_port()
        command = [
            "mlflow", "models", "serve", "-m", result.model_uri, "--env-manager", "local", "-h", "127.0.0.1",
            "-p", str(port),
        ]
        # http_service stops the server (and its uvicorn workers) on teardown, whatever the tests did.
        with http_service(command, f"http://127.0.0.1:{port}", "/ping", root / "serve.log") as url:
            yield Served(url=url, scorer=scorer)


def post(url: str, body: bytes, content_type: str = JSON) -> tuple[int, str]:
    """Status and body text of one POST /invocations; an HTTP error is a result here, not an exception."""
    request = urllib.request.Request(f"{url}/invocations", body, {"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def batch_labels(served: Served, texts: list[str]) -> list[str]:
    return scoring.predict_texts(served.scorer, pd.Series(texts))["label"].tolist()


def payload(shape: str, texts: list[str]) -> bytes:
    """The same texts in each shape the README documents: three JSON ones and CSV."""
    if shape == "csv":
        return pd.DataFrame({INPUT_COLUMN: texts}).to_csv(index=False).encode()
    body = {
        "inputs": {"inputs": texts},
        "dataframe_split": {"dataframe_split": {"columns": [INPUT_COLUMN], "data": [[t] for t in texts]}},
        "dataframe_records": {"dataframe_records": [{INPUT_COLUMN: t} for t in texts]},
    }[shape]
    return json.dumps(body).encode()


def assert_no_internals(body: str) -> None:
    """No Python stack trace and no path of the server's files in a response body."""
    for leak in ("stack_trace", "Traceback", 'File "', "site-packages", sys.prefix):
        assert leak not in body, f"{leak!r} in {body[:500]}"


SENTENCES = list(synthetic_split(12, seed=11)["text"])


@pytest.mark.parametrize("shape", ["inputs", "dataframe_split", "dataframe_records", "csv"])
def test_every_payload_shape_answers_the_batch_scorers_labels(served, shape):
    texts = [*SENTENCES, "42", LONG_TEXT]
    status, body = post(served.url, payload(shape, texts), "text/csv" if shape == "csv" else JSON)
    assert status == 200, body[:2000]
    predictions = json.loads(body)["predictions"]
    assert [p["label"] for p in predictions] == batch_labels(served, texts)
    assert len(set(p["label"] for p in predictions[: len(SENTENCES)])) > 1  # a trained model: labels vary
    assert all(1 / len(LABELS) <= p["score"] <= 1 for p in predictions)


@pytest.mark.parametrize(
    "texts",
    [["42"], ["42", "hello"], [LONG_TEXT], ["{'text': 'great'}"], ["3.5"], ["None"], ["[1, 2]"]],
    ids=["42", "42-and-hello", "15kb-unpunctuated", "dict-literal", "float", "None", "list-literal"],
)
def test_texts_that_look_like_python_literals_or_are_long_answer_200_with_a_label(served, texts):
    """With an unnamed input column MLflow ran ast.literal_eval on each text: ["42"] and 15 KB texts failed."""
    status, body = post(served.url, payload("inputs", texts))
    assert status == 200, body[:2000]
    assert [p["label"] for p in json.loads(body)["predictions"]] == batch_labels(served, texts)


def test_request_params_cannot_turn_truncation_off(served):
    """The signature declares no params, so MLflow ignores them: a caller cannot override the model_config."""
    body = json.dumps({"inputs": [LONG_TEXT], "params": {"truncation": False, "max_length": 100000}}).encode()
    status, text = post(served.url, body)
    assert status == 200, text[:2000]
    assert [p["label"] for p in json.loads(text)["predictions"]] == batch_labels(served, [LONG_TEXT])


MISSING_TEXT = "Model is missing inputs ['text']"
ONE_FORMAT = "exactly one of the input fields"
NOT_STRINGS = "all values must be either strings or lists of strings"

# (id, body, content type, status, phrase the message must contain)
MALFORMED = [
    ("not-json", b"{not json", JSON, 400, "valid JSON"),
    ("not-utf8", b'{"inputs": ["\xff"]}', JSON, 400, "valid JSON"),
    ("json-list", b'["great"]', JSON, 400, "Received a list"),
    ("unknown-key", b'{"texts": ["great"]}', JSON, 400, ONE_FORMAT),
    ("two-shapes", b'{"inputs": ["a"], "dataframe_records": [{"text": "a"}]}', JSON, 400, ONE_FORMAT),
    ("records-wrong-column", b'{"dataframe_records": [{"review": "great"}]}', JSON, 400, MISSING_TEXT),
    ("split-wrong-column", b'{"dataframe_split": {"columns": ["review"], "data": [["great"]]}}', JSON, 400, MISSING_TEXT),
    ("split-no-columns", b'{"dataframe_split": {"data": [["great"]]}}', JSON, 400, MISSING_TEXT),
    ("split-duplicate-column", b'{"dataframe_split": {"columns": ["text", "text"], "data": [["a", "b"]]}}', JSON, 400,
     "not compatible with model signature"),
    ("records-empty", b'{"dataframe_records": []}', JSON, 400, MISSING_TEXT),
    ("records-empty-row", b'{"dataframe_records": [{}]}', JSON, 400, MISSING_TEXT),
    ("records-number", b'{"dataframe_records": [{"text": 5}]}', JSON, 400, NOT_STRINGS),
    ("records-null", b'{"dataframe_records": [{"text": null}]}', JSON, 400, NOT_STRINGS),
    ("records-object", b'{"dataframe_records": [{"text": {"a": 1}}]}', JSON, 400, NOT_STRINGS),
    ("split-null", b'{"dataframe_split": {"columns": ["text"], "data": [[null]]}}', JSON, 400, NOT_STRINGS),
    ("inputs-null", b'{"inputs": null}', JSON, 400, MISSING_TEXT),
    ("inputs-number", b'{"inputs": 5}', JSON, 400, MISSING_TEXT),
    ("inputs-bare-string", b'{"inputs": "great"}', JSON, 400, MISSING_TEXT),
    ("inputs-nested-object", b'{"inputs": {"a": {"b": 1}}}', JSON, 400, "Failed to enforce schema"),
    ("csv-wrong-column", b"review\ngreat\n", "text/csv", 400, MISSING_TEXT),
    ("text-plain", b"great", "text/plain", 415, "only supports the following content types"),
    ("latin-1", b'{"inputs": ["great"]}', "application/json; charset=latin-1", 415, "only supports UTF-8"),
]


@pytest.mark.parametrize(("body", "content_type", "status", "phrase"), [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_a_malformed_payload_gets_a_4xx_naming_the_problem_without_internals(served, body, content_type, status, phrase):
    got, text = post(served.url, body, content_type)
    assert got == status, text[:2000]
    message = json.loads(text)["message"] if content_type.startswith(JSON) and status == 400 else text
    assert phrase in message
    assert_no_internals(text)


# MLflow's scoring server decides these, before or around the model; nothing in the logged model reaches them.
EMPTY = "the pipeline raises IndexError on no rows; MLflow's server returns that with a stack_trace field"
CAST = "MLflow casts `inputs` values to the signature's string type (5 -> '5', null -> 'None') before the model"
EXTRA = "MLflow's schema enforcement drops columns the signature does not name, with a log warning"
LIST = "MLflow's transformers flavor lets a list of strings through as one value: one prediction for two texts"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"inputs": []}', marks=pytest.mark.xfail(strict=True, reason=EMPTY), id="inputs-empty"),
        pytest.param(b'{"dataframe_split": {"columns": ["text"], "data": []}}',
                     marks=pytest.mark.xfail(strict=True, reason=EMPTY), id="split-empty"),
        pytest.param(b'{"inputs": [[]]}', marks=pytest.mark.xfail(strict=True, reason=EMPTY), id="inputs-empty-list"),
        pytest.param(b'{"inputs": [1, 2]}', marks=pytest.mark.xfail(strict=True, reason=CAST), id="inputs-numbers"),
        pytest.param(b'{"inputs": [null]}', marks=pytest.mark.xfail(strict=True, reason=CAST), id="inputs-null"),
        pytest.param(b'{"dataframe_records": [{"text": "great", "id": "7"}]}',
                     marks=pytest.mark.xfail(strict=True, reason=EXTRA), id="records-extra-column"),
        pytest.param(b'{"dataframe_records": [{"text": ["great", "awful"]}]}',
                     marks=pytest.mark.xfail(strict=True, reason=LIST), id="records-list-value"),
    ],
)
def test_known_mlflow_limits_a_fix_upstream_would_turn_into_a_clean_4xx(served, body):
    status, text = post(served.url, body)
    assert 400 <= status < 500
    assert_no_internals(text)


def test_fifty_concurrent_requests_all_answer_the_batch_scorers_labels(served):
    shapes = ["inputs", "dataframe_split", "dataframe_records"]
    texts = [SENTENCES[i % len(SENTENCES) :] + SENTENCES[: i % len(SENTENCES)] for i in range(50)]  # rotations
    requests = [(payload(shapes[i % 3], texts[i]), texts[i]) for i in range(50)]
    with ThreadPoolExecutor(max_workers=10) as pool:  # bounded: 10 in flight at a time, loopback only
        answers = list(pool.map(lambda request: post(served.url, request[0]), requests))
    expected = dict(zip(SENTENCES, batch_labels(served, SENTENCES)))
    for (_, sent), (status, body) in zip(requests, answers):
        assert status == 200, body[:2000]
        assert [p["label"] for p in json.loads(body)["predictions"]] == [expected[t] for t in sent]
