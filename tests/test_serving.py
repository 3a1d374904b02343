"""The serving contract: `mlflow models serve` and `sentiment-flow serve` of a version `train` registered and of
its int8 variant (`optimize`), posted to over loopback.

One tiny training and one optimize per module, served by each server in turn; every test posts the same payloads
to both models on both servers (`sentiment-flow serve` answers through MLflow's own scoring code). Where the two still answer differently, or MLflow's scoring server answers what the project would not
choose, the table below asserts what actually happens (the README lists the same), so a change upstream or in
either model shows up as a failure here.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from sentiment_flow import scoring
from sentiment_flow.config import INPUT_COLUMN, LABELS
from sentiment_flow.int8 import optimize
from sentiment_flow.training import train

from conftest import free_port, http_service, isolate, synthetic_split
from test_train import tiny_config

pytestmark = pytest.mark.slow  # a training, an optimize and two server starts per module

JSON = "application/json"
LONG_TEXT = " ".join(["the food was great today"] * 600)  # 15 KB, no punctuation: was HTTP 400 MemoryError
MODELS = ("fp32", "int8")
SERVERS = ("mlflow", "sentiment-flow")  # `mlflow models serve` and `sentiment-flow serve`: one contract


@dataclass(frozen=True)
class Served:
    url: str
    scorer: scoring.Scorer  # the batch scorer on the same version, for the expected labels
    server: str  # a key of SERVERS


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tiny_data_dir, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The store folder and the registry URIs of a freshly trained tiny model ("fp32") and of its int8 variant
    ("int8")."""
    root = tmp_path_factory.mktemp("served")
    with pytest.MonkeyPatch.context() as mp:
        isolate(mp, root)
        result = train(tiny_config(tiny_model_dir, tiny_data_dir))
        return root, {"fp32": result.model_uri, "int8": optimize(result.model_uri).model_uri}


def server_command(server: str, uri: str, port: int) -> list[str]:
    """`mlflow models serve` or `sentiment-flow serve` of `uri` on loopback `port`."""
    if server == "sentiment-flow":
        return [sys.executable, "-m", "sentiment_flow", "serve", uri, "--port", str(port)]
    return ["mlflow", "models", "serve", "-m", uri, "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]


@pytest.fixture(scope="module", params=SERVERS)
def servers(trained, request) -> dict[str, Served]:
    """Each model served by `mlflow models serve` (then by `sentiment-flow serve`), each on a free loopback port."""
    root, uris = trained
    # The servers and the scorers read the trained store: each test's own store is set after this fixture.
    with pytest.MonkeyPatch.context() as mp, ExitStack() as stack:
        isolate(mp, root)
        served = {}
        for model, uri in uris.items():
            port = free_port()
            command = server_command(request.param, uri, port)
            # http_service stops the server (and its uvicorn workers) on teardown, whatever the tests did.
            url = stack.enter_context(
                http_service(command, f"http://127.0.0.1:{port}", "/ping", root / f"{request.param}-{model}.log")
            )
            served[model] = Served(url=url, scorer=scoring.load_scorer(uri), server=request.param)
        yield served


@pytest.fixture(params=MODELS)
def served(servers, request) -> Served:
    """Each of the two served models in turn."""
    return servers[request.param]


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
    assert len({p["label"] for p in predictions[: len(SENTENCES)]}) > 1  # a trained model: labels vary
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
NOT_STRINGS = "all values must be"  # fp32: "... either strings or lists of strings"; int8: "... strings"
NO_ROWS = "No rows to score"
UNEXPECTED = "Encountered an unexpected error while evaluating the model"


@dataclass(frozen=True)
class Answer:
    status: int
    phrase: str = ""  # in the error's message (the plain body for a 415)
    labels_of: tuple[str, ...] = ()  # a 200's predictions: one per text here, the batch scorer's labels for them
    stack_trace: bool = False  # MLflow's body carries a `stack_trace` field with the server's file paths
    note: str = ""  # where the models differ or MLflow decides: what happens, in the test id


def both(answer: Answer) -> dict[str, Answer]:
    return dict.fromkeys(MODELS, answer)


# (id, body, content type, the answer of each model). The README's serving contract states the same.
CONTRACT = [
    ("not-json", b"{not json", JSON, both(Answer(400, "valid JSON"))),
    ("not-utf8", b'{"inputs": ["\xff"]}', JSON, both(Answer(400, "valid JSON"))),
    ("json-list", b'["great"]', JSON, both(Answer(400, "Received a list"))),
    ("unknown-key", b'{"texts": ["great"]}', JSON, both(Answer(400, ONE_FORMAT))),
    ("two-shapes", b'{"inputs": ["a"], "dataframe_records": [{"text": "a"}]}', JSON, both(Answer(400, ONE_FORMAT))),
    ("records-wrong-column", b'{"dataframe_records": [{"review": "great"}]}', JSON, both(Answer(400, MISSING_TEXT))),
    (
        "split-wrong-column",
        b'{"dataframe_split": {"columns": ["review"], "data": [["great"]]}}',
        JSON,
        both(Answer(400, MISSING_TEXT)),
    ),
    ("split-no-columns", b'{"dataframe_split": {"data": [["great"]]}}', JSON, both(Answer(400, MISSING_TEXT))),
    (
        "split-duplicate-column",
        b'{"dataframe_split": {"columns": ["text", "text"], "data": [["a", "b"]]}}',
        JSON,
        both(Answer(400, "not compatible with model signature")),
    ),
    ("records-empty", b'{"dataframe_records": []}', JSON, both(Answer(400, MISSING_TEXT))),
    ("records-empty-row", b'{"dataframe_records": [{}]}', JSON, both(Answer(400, MISSING_TEXT))),
    ("records-number", b'{"dataframe_records": [{"text": 5}]}', JSON, both(Answer(400, NOT_STRINGS))),
    ("records-null", b'{"dataframe_records": [{"text": null}]}', JSON, both(Answer(400, NOT_STRINGS))),
    ("records-object", b'{"dataframe_records": [{"text": {"a": 1}}]}', JSON, both(Answer(400, NOT_STRINGS))),
    (
        "split-null",
        b'{"dataframe_split": {"columns": ["text"], "data": [[null]]}}',
        JSON,
        both(Answer(400, NOT_STRINGS)),
    ),
    ("inputs-null", b'{"inputs": null}', JSON, both(Answer(400, MISSING_TEXT))),
    ("inputs-number", b'{"inputs": 5}', JSON, both(Answer(400, MISSING_TEXT))),
    ("inputs-bare-string", b'{"inputs": "great"}', JSON, both(Answer(400, MISSING_TEXT))),
    ("inputs-nested-object", b'{"inputs": {"a": {"b": 1}}}', JSON, both(Answer(400, "Failed to enforce schema"))),
    ("csv-wrong-column", b"review\ngreat\n", "text/csv", both(Answer(400, MISSING_TEXT))),
    ("text-plain", b"great", "text/plain", both(Answer(415, "only supports the following content types"))),
    (
        "latin-1",
        b'{"inputs": ["great"]}',
        "application/json; charset=latin-1",
        both(Answer(415, "only supports UTF-8")),
    ),
    # The int8 variant refuses these itself. The fp32 model is MLflow's transformers flavor, which nothing in the
    # logged model can make refuse them: its pipeline fails on no rows (the server then answers with a
    # stack_trace), and it takes a list of strings in one cell as that many texts.
    (
        "inputs-empty",
        b'{"inputs": []}',
        JSON,
        {"fp32": Answer(400, UNEXPECTED, stack_trace=True, note="with-stack-trace"), "int8": Answer(400, NO_ROWS)},
    ),
    (
        "split-empty",
        b'{"dataframe_split": {"columns": ["text"], "data": []}}',
        JSON,
        {"fp32": Answer(400, UNEXPECTED, stack_trace=True, note="with-stack-trace"), "int8": Answer(400, NO_ROWS)},
    ),
    (
        "inputs-empty-list",
        b'{"inputs": [[]]}',
        JSON,
        {"fp32": Answer(400, UNEXPECTED, stack_trace=True, note="with-stack-trace"), "int8": Answer(400, NOT_STRINGS)},
    ),
    (
        "records-list-value",
        b'{"dataframe_records": [{"text": ["great", "awful"]}]}',
        JSON,
        {
            "fp32": Answer(200, labels_of=("great", "awful"), note="two-predictions-for-one-row"),
            "int8": Answer(400, NOT_STRINGS),
        },
    ),
    (
        "inputs-list-value",
        b'{"inputs": [["great", "awful"]]}',
        JSON,
        {
            "fp32": Answer(200, labels_of=("great", "awful"), note="two-predictions-for-one-row"),
            "int8": Answer(400, NOT_STRINGS),
        },
    ),
    # MLflow's scoring server decides these before either model sees the input.
    ("inputs-numbers", b'{"inputs": [1, 2]}', JSON, both(Answer(200, labels_of=("1", "2"), note="cast-to-strings"))),
    ("inputs-null-value", b'{"inputs": [null]}', JSON, both(Answer(200, labels_of=("None",), note="cast-to-None"))),
    (
        "inputs-object-null",
        b'{"inputs": {"text": null}}',
        JSON,
        both(Answer(200, labels_of=("None",), note="cast-to-None")),
    ),
    (
        "instances-null",
        b'{"instances": [{"text": null}]}',
        JSON,
        both(Answer(200, labels_of=("None",), note="cast-to-None")),
    ),
    (
        "records-extra-column",
        b'{"dataframe_records": [{"text": "great", "id": "7"}]}',
        JSON,
        both(Answer(200, labels_of=("great",), note="column-dropped")),
    ),
]


@pytest.mark.parametrize(
    ("model", "body", "content_type", "answer"),
    [
        pytest.param(
            model, body, content_type, answers[model], id="-".join(filter(None, (model, case, answers[model].note)))
        )
        for case, body, content_type, answers in CONTRACT
        for model in MODELS
    ],
)
def test_both_models_answer_each_payload_as_the_contract_table_says(servers, model, body, content_type, answer):
    served = servers[model]
    status, text = post(served.url, body, content_type)
    assert status == answer.status, text[:2000]
    if status == 200:
        predictions = json.loads(text)["predictions"]
        assert [p["label"] for p in predictions] == batch_labels(served, list(answer.labels_of))
        return
    message = json.loads(text)["message"] if content_type.startswith(JSON) and status == 400 else text
    assert answer.phrase in message
    if answer.stack_trace:
        assert "stack_trace" in json.loads(text)
    else:
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


def test_every_answer_of_sentiment_flow_serve_names_its_version_and_mlflow_models_serve_names_none(served):
    import mlflow

    from sentiment_flow.serving.app import VERSION_HEADER

    answers = [
        urllib.request.urlopen(urllib.request.Request(f"{served.url}{path}", body, {"Content-Type": JSON}), timeout=60)
        for path, body in [
            ("/ping", None),
            ("/health", None),
            ("/version", None),
            ("/invocations", payload("inputs", ["great"])),
        ]
    ]
    try:
        urllib.request.urlopen(
            urllib.request.Request(f"{served.url}/invocations", b"{not json", {"Content-Type": JSON})
        )
    except urllib.error.HTTPError as error:
        answers.append(error)
    assert [answer.status for answer in answers] == [200, 200, 200, 200, 400]
    assert answers[2].read().decode() == mlflow.__version__  # /version answers as MLflow's does
    expected = served.scorer.model_version if served.server == "sentiment-flow" else None  # NAME/VERSION
    assert [answer.headers.get(VERSION_HEADER) for answer in answers] == [expected] * len(answers)
