"""`sentiment-flow optimize`: the int8 variant of a trained tiny model, its gate, its contract and its serving."""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from sentiment_flow import runs
from sentiment_flow.cli import cli
from sentiment_flow.config import INPUT_COLUMN, INT8_REQUEST_BATCH_SIZE, LABELS, OptimizeConfig
from sentiment_flow.data import load_data
from sentiment_flow.int8.gate import gate_misses
from sentiment_flow.training import tracking

from conftest import free_port, http_service, subprocess_env
from test_train import trained, trained_module  # noqa: F401 - fixtures: one tiny training per test module

TEXTS = ["the food was great today", "it is okay", "this is awful", ""]


@pytest.fixture(scope="module")
def optimize_output(trained_module):  # noqa: F811 - the imported fixture
    """`sentiment-flow optimize` of this module's tiny training, through the CLI as a user runs it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", trained_module["uri"])
        mlflow.set_tracking_uri(trained_module["uri"])
        return CliRunner().invoke(cli, ["optimize", trained_module["result"].model_uri])


@pytest.fixture
def optimized(trained, optimize_output):  # noqa: F811 - the imported fixture
    """The trained source and the optimize command's result, with their store as the current tracking URI."""
    return {"source": trained["result"], "cli": optimize_output}


@pytest.mark.slow  # the module's tiny training and optimize: 8 s of the quick loop
def test_optimize_registers_name_int8_with_lineage_tags_and_its_own_test_metrics(optimized):
    assert optimized["cli"].exit_code == 0, optimized["cli"].output
    source, client = optimized["source"], mlflow.MlflowClient()
    version = client.get_model_version(f"{source.registered_model_name}-int8", "1")
    assert version.tags["source_model"] == source.registered_model_name
    assert version.tags["source_version"] == source.version
    assert version.tags["source_run_id"] == source.run_id
    assert version.tags["quantization"] == "onnxruntime-static-int8"
    run = client.get_run(version.tags["mlflow_run_id"])
    assert run.info.run_id == version.run_id != source.run_id
    assert run.info.status == "FINISHED"
    assert float(version.tags["test_f1_macro"]) == pytest.approx(run.data.metrics["test_f1_macro"], abs=1e-4)
    assert run.data.metrics["label_agreement"] >= 0.99
    assert abs(run.data.metrics["f1_macro_drop"]) <= 0.005


@pytest.mark.slow  # the module's tiny training and optimize: 8 s of the quick loop
def test_the_int8_version_passes_the_promotion_gates_unchanged(optimized):
    name = f"{optimized['source'].registered_model_name}-int8"
    result = CliRunner().invoke(cli, ["promote", name, "--version", "1", "--alias", "champion"])
    assert result.exit_code == 0, result.output
    assert str(mlflow.MlflowClient().get_model_version_by_alias(name, "champion").version) == "1"


@pytest.mark.slow  # the module's tiny training and optimize: 8 s of the quick loop
def test_the_variant_answers_the_fp32_contract_through_pyfunc_and_the_scorer(optimized, tmp_path):
    source = optimized["source"]
    int8_uri = f"models:/{source.registered_model_name}-int8/1"
    fp32, int8 = mlflow.pyfunc.load_model(source.model_uri), mlflow.pyfunc.load_model(int8_uri)
    assert int8.metadata.signature == fp32.metadata.signature
    # Both serve in batches (the transformers pipeline's default is one text per forward pass): fp32 in its training
    # batch size (the run's param, which MLflow also logs from the model_config), int8 in INT8_REQUEST_BATCH_SIZE.
    run_params = mlflow.get_run(source.run_id).data.params
    assert fp32.model_config["batch_size"] == int(run_params["batch_size"]) > 1
    assert int8.model_config["batch_size"] == INT8_REQUEST_BATCH_SIZE
    frame = pd.DataFrame({INPUT_COLUMN: TEXTS})
    expected, answered = fp32.predict(frame), int8.predict(frame)
    assert list(answered.columns) == ["label", "score"]
    assert list(answered["label"]) == list(expected["label"])
    assert answered["score"].between(0, 1).all()

    pd.DataFrame({"text": TEXTS}).to_csv(tmp_path / "in.csv", index=False)
    result = CliRunner().invoke(cli, ["score", int8_uri, str(tmp_path / "in.csv"), str(tmp_path / "out.csv")])
    assert result.exit_code == 0, result.output
    scored = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert list(scored["label"]) == list(expected["label"])
    assert set(scored["model_version"]) == {f"{source.registered_model_name}-int8/1"}


@pytest.mark.slow  # a few seconds: a subprocess or a training
def test_scoring_with_the_variant_imports_no_torch(optimized, tmp_path):
    """The variant runs on ONNX Runtime alone; importing torch (and transformers' trainer and pipelines, which
    import it) cost every int8 scoring job about 4 s of its 37 s on 20,000 rows."""
    import subprocess

    int8_uri = f"models:/{optimized['source'].registered_model_name}-int8/1"
    pd.DataFrame({"text": TEXTS}).to_csv(tmp_path / "in.csv", index=False)
    code = (
        "import sys; from click.testing import CliRunner; from sentiment_flow.cli import cli; "
        f"result = CliRunner().invoke(cli, ['score', {int8_uri!r}, {str(tmp_path / 'in.csv')!r}, "
        f"{str(tmp_path / 'out.csv')!r}]); print(result.exit_code, 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True)
    assert done.stdout.split()[-2:] == ["0", "False"], done.stderr[-2000:]
    assert len(pd.read_csv(tmp_path / "out.csv")) == len(TEXTS)


@pytest.mark.slow  # the module's tiny training and optimize: 8 s of the quick loop
def test_requests_scored_at_once_get_the_answers_they_get_alone(optimized):
    """`mlflow models serve` runs requests in threads. transformers' tokenizer call resets the shared tokenizer's
    padding, so with it a request padded by one thread and read by another failed ("setting an array element with
    a sequence") or was scored with another request's padding."""
    from concurrent.futures import ThreadPoolExecutor

    model = mlflow.pyfunc.load_model(f"models:/{optimized['source'].registered_model_name}-int8/1")
    words = "the food was great today but the service was awful and slow".split()
    requests = [
        pd.DataFrame({INPUT_COLUMN: [" ".join(words[: (i * 7 + j) % len(words) + 1]) for j in range(1 + i % 5)]})
        for i in range(48)
    ]
    alone = [model.predict(request) for request in requests]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(model.predict, requests * 4))
    for expected, answered in zip(alone * 4, together):
        pd.testing.assert_frame_equal(answered, expected)


@pytest.mark.slow  # the module's tiny training and optimize: 8 s of the quick loop
def test_a_pass_smaller_than_cores_times_batch_size_gives_each_core_a_batch(optimized, monkeypatch):
    # Without sched_getaffinity (macOS) the variant counts os.cpu_count() cores.
    monkeypatch.delattr("os.sched_getaffinity")
    monkeypatch.setattr("os.cpu_count", lambda: 3)
    model = mlflow.pyfunc.load_model(f"models:/{optimized['source'].registered_model_name}-int8/1")
    variant = model.unwrap_python_model()
    batches, run = [], variant.session.run
    monkeypatch.setattr(
        variant,
        "session",
        type(
            "Recording",
            (),
            {"run": lambda self, names, feeds: batches.append(len(feeds["input_ids"])) or run(names, feeds)},
        )(),
    )
    variant.fp32_session = None
    variant.probabilities(["a text"] * 7, batch_size=32)
    assert sorted(batches) == [1, 3, 3]  # 7 rows on 3 cores: batches of 3, not one of 7
    batches.clear()
    variant.probabilities(["a text"] * 200, batch_size=32)
    assert max(batches) == 32 and sum(batches) == 200


@pytest.mark.slow  # builds two variants: 4 s of the quick loop
@pytest.mark.parametrize("margin", [0.0, 1.0])
def test_the_fallback_margin_decides_which_rows_the_fp32_graph_scores_again(margin, tiny_model_dir, tiny_data_dir):
    from sentiment_flow.int8 import optimize

    # The untrained tiny model: its probabilities are near uniform on every row. (A trained one's calibrated head
    # saturates on the tiny data's easy rows, float32 softmax 1 and 0, which no margin up to 1 rescores.)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    data = load_data(str(tiny_data_dir), "english")
    with mlflow.start_run() as run:
        info = tracking.log_model(model, AutoTokenizer.from_pretrained(tiny_model_dir), None)
        tags = {"lang": "english", "data_source": data.source, "data_hash": data.content_hash}
        with runs.registration("unsure") as registered:
            registered.register(info.model_uri, {**tags, "mlflow_run_id": run.info.run_id}, "Untrained.", "Untrained.")
    result = optimize("models:/unsure/1", config=OptimizeConfig(fallback_margin=margin, max_f1_drop=1, min_agreement=0))
    # 0: no row (and no fp32 graph in the model); 1: every row (no two probabilities are a whole 1 apart).
    assert result.fallback_share == margin
    assert mlflow.get_run(result.run_id).data.metrics["fallback_share"] == margin
    files = {p.name for p in (Path(mlflow.artifacts.download_artifacts(result.model_uri)) / "artifacts").iterdir()}
    assert ("model.fp32.onnx" in files) == (margin > 0)
    frame = pd.DataFrame({INPUT_COLUMN: TEXTS})
    answered = mlflow.pyfunc.load_model(result.model_uri).predict(frame)
    if margin == 1.0:  # the fp32 graph's answers are the fp32 model's
        expected = mlflow.pyfunc.load_model("models:/unsure/1").predict(frame)
        assert list(answered["label"]) == list(expected["label"])
        np.testing.assert_allclose(answered["score"], expected["score"], atol=1e-4)


def test_a_variant_that_misses_the_gate_is_not_registered_and_its_run_fails(tiny_model_dir, tiny_data_dir):
    # An outlier weight in every output channel of pre_classifier sets each channel's int8 scale, so all its
    # other weights round to 0: a real int8 failure, caught by the gate. In fp32 the outliers multiply a
    # feature the last LayerNorm holds at 0, so the source model itself is intact.
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        last_norm = model.distilbert.transformer.layer[-1].output_layer_norm
        last_norm.weight[0] = last_norm.bias[0] = 0
        model.pre_classifier.weight[:, 0] = 1e4
    data = load_data(str(tiny_data_dir), "english")
    with mlflow.start_run() as run:
        info = tracking.log_model(model, AutoTokenizer.from_pretrained(tiny_model_dir), None)
        tags = {
            "lang": "english",
            "data_source": data.source,
            "data_hash": data.content_hash,
            "mlflow_run_id": run.info.run_id,
        }
        with runs.registration("outlier") as registered:
            registered.register(info.model_uri, tags, "Outlier weight.", "Outlier weights.")

    # int8 alone: the tiny model's two best classes are close on every row, so any fallback margin rescues them all.
    # Unsmoothed: smoothing divides the outlier column by the (zero) range of its input, which rescues it (below).
    result = CliRunner().invoke(cli, ["optimize", "models:/outlier/1", "--fallback-margin", "0", "--smooth-alpha", "0"])
    assert result.exit_code == 1, result.output
    line = " ".join(result.output.split())
    assert "was not registered" in line and "short of the 99% required" in line
    client = mlflow.MlflowClient()
    assert not client.search_registered_models("name = 'outlier-int8'")
    (refused,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.int8_gate LIKE 'refused%'"
    )
    assert refused.info.status == "FAILED"
    assert refused.data.metrics["label_agreement"] < 0.99

    smoothed = CliRunner().invoke(cli, ["optimize", "models:/outlier/1", "--fallback-margin", "0"])
    assert smoothed.exit_code == 0, smoothed.output
    version = client.get_model_version("outlier-int8", "1")
    assert mlflow.get_run(version.run_id).data.metrics["label_agreement"] >= 0.99
    assert mlflow.get_run(version.run_id).data.params["smooth_alpha"] == "0.9"


def test_smoothing_changes_no_fp32_answer_and_flattens_each_linears_input_range(tiny_model_dir):
    from sentiment_flow.int8.smoothing import SmoothedLinear, smooth

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = [*TEXTS, "the service was slow and the room was cold", "great"]
    # alpha 1: all of each input channel's range moves into the weights, so on the calibration texts every
    # channel that is ever non-zero peaks at exactly 1.
    smoothed = smooth(model, tokenizer, texts, alpha=1.0, max_length=64)
    peaks = {}

    def channel_peaks(x):  # (batch, [tokens,] channels) -> max |x| per channel
        return x.abs().reshape(-1, x.shape[-1]).amax(dim=0)

    hooks = [
        m.linear.register_forward_hook(lambda mod, inputs, out, n=n: peaks.__setitem__(n, channel_peaks(inputs[0])))
        for n, m in smoothed.named_modules()
        if isinstance(m, SmoothedLinear)
    ]
    encoded = tokenizer(texts, truncation=True, max_length=64, padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected, answered = model(**encoded).logits, smoothed(**encoded).logits
    for hook in hooks:
        hook.remove()

    assert len(peaks) == sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    for peak in peaks.values():
        torch.testing.assert_close(peak[peak > 1e-4], torch.ones_like(peak[peak > 1e-4]), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(answered, expected, rtol=1e-4, atol=1e-4)
    assert not any(isinstance(m, SmoothedLinear) for m in model.modules())  # a copy: the source model is untouched
    # Query, key and value read one input: one scale, one tensor (so the export divides that input once).
    attention = [m for m in smoothed.modules() if hasattr(m, "q_lin")]  # DistilBERT's names
    assert len(attention) == 2
    for m in attention:
        assert m.q_lin.inverse is m.k_lin.inverse is m.v_lin.inverse
        assert m.out_lin.inverse is not m.q_lin.inverse


def test_data_other_than_the_source_was_tested_on_is_refused_before_any_work(register_tiny_model, tiny_data_dir):
    register_tiny_model()  # data_hash dddd..., not the tiny data's
    result = CliRunner().invoke(cli, ["optimize", "models:/sentiment-english/1", "--data", str(tiny_data_dir)])
    assert result.exit_code == 2
    assert "is not what sentiment-english version 1 was tested on" in result.output
    assert len(mlflow.search_runs(search_all_experiments=True)) == 1  # the registration's own run only


def test_without_the_fast_extra_optimize_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what `import onnxruntime` meets when it is absent
    result = CliRunner().invoke(cli, ["optimize", "models:/sentiment-english/1"])
    assert result.exit_code == 2
    assert "needs onnxruntime: pip install -e '.[fast]'" in result.output


@pytest.mark.parametrize(
    "drop, agreement, missed",
    [
        (0.005, 0.99, []),  # exactly at both limits: registered
        (0.006, 0.99, ["0.0060 below fp32's 0.7000, 0.0010 more than the 0.005 allowed"]),
        (0.0, 0.985, ["agree with fp32 on 98.50% of 200 test rows, 0.50% short of the 99% required"]),
    ],
)
def test_the_gate_says_by_how_much_each_rule_was_missed(drop, agreement, missed):
    misses = gate_misses(0.7, 0.7 - drop, agreement, 200, 0.005, 0.99)
    assert len(misses) == len(missed)
    for phrase, expected in zip(misses, missed):
        assert expected in phrase


@pytest.mark.slow
def test_mlflow_models_serve_of_the_int8_version_answers_like_the_scorer(optimized, tmp_path):
    source = optimized["source"]
    int8_uri = f"models:/{source.registered_model_name}-int8/1"
    port = free_port()
    command = [
        "mlflow",
        "models",
        "serve",
        "-m",
        int8_uri,
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    expected = mlflow.pyfunc.load_model(int8_uri).predict(pd.DataFrame({INPUT_COLUMN: TEXTS}))["label"].tolist()
    with http_service(command, f"http://127.0.0.1:{port}", "/ping", tmp_path / "serve.log") as url:
        for body in (
            {"inputs": TEXTS},
            {"dataframe_split": {"columns": [INPUT_COLUMN], "data": [[t] for t in TEXTS]}},
            {"dataframe_records": [{INPUT_COLUMN: t} for t in TEXTS]},
        ):
            request = urllib.request.Request(
                f"{url}/invocations", json.dumps(body).encode(), {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=60) as response:
                predictions = json.loads(response.read())["predictions"]
            assert [p["label"] for p in predictions] == expected
            assert set(expected) <= set(LABELS)
