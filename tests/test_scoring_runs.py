"""Scoring runs: one MLflow run per scoring job, with its inputs, results and drift against training."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.metrics import accuracy_score, f1_score

from sentiment_flow import scoring_runs
from sentiment_flow.cli import cli
from sentiment_flow.config import LABELS, SCORING_EXPERIMENT, TrainConfig
from sentiment_flow.train import train

from conftest import isolate, subprocess_env, synthetic_split


@pytest.fixture(scope="module")
def trained_store(tiny_model_dir, tiny_data_dir, tmp_path_factory):
    """A real (tiny) training, so the drift baseline is the one `train` writes; returns its store URI."""
    root = tmp_path_factory.mktemp("scoring-runs")
    with pytest.MonkeyPatch.context() as mp:
        uri = isolate(mp, root)
        config = TrainConfig(model=str(tiny_model_dir), data=str(tiny_data_dir), epochs=1, learning_rate="5e-3", max_length=32)
        result = train(config)
    return {"uri": uri, "model_uri": result.model_uri, "run_id": result.run_id}


@pytest.fixture
def store(trained_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_store["uri"])
    mlflow.set_tracking_uri(trained_store["uri"])
    return trained_store


def scoring_runs_in(experiment: str = SCORING_EXPERIMENT) -> list:
    found = mlflow.get_experiment_by_name(experiment)
    return mlflow.MlflowClient().search_runs([found.experiment_id]) if found else []


def labelled_input(path, n: int = 60, seed: int = 3) -> pd.DataFrame:
    frame = synthetic_split(n, seed).rename(columns={"label": "gold"})
    frame.loc[0, "text"] = "   "  # one blank row
    frame.to_csv(path, index=False)
    return frame


def test_training_logs_the_drift_baseline_scoring_reads(store):
    baseline = mlflow.artifacts.load_dict(f"runs:/{store['run_id']}/{scoring_runs.BASELINE_ARTIFACT}")
    assert baseline["labels"] == list(LABELS)
    assert sum(baseline["test_label_counts"]) == 60  # the tiny data's test split
    assert sum(baseline["token_length_counts"]) == 900  # one count per training text
    assert len(baseline["token_length_counts"]) <= 33  # tokens after truncation to max_length 32


def test_a_scoring_job_is_one_run_with_model_input_results_and_drift(store, tmp_path):
    given = labelled_input(tmp_path / "in.csv")
    result = CliRunner().invoke(cli, ["score", store["model_uri"], "in.csv", "out.csv", "--label-column", "gold"])
    assert result.exit_code == 0, result.output

    (run,) = scoring_runs_in()
    assert run.info.status == "FINISHED"
    name, version = store["model_uri"].removeprefix("models:/").split("/")
    params = run.data.params
    assert {k: params[k] for k in ("engine", "model_name", "model_version", "model_run_id")} == {
        "engine": "local", "model_name": name, "model_version": version, "model_run_id": store["run_id"],
    }
    sha256 = hashlib.sha256((tmp_path / "in.csv").read_bytes()).hexdigest()
    assert params["input_path"] == str(tmp_path / "in.csv") and params["input_hash"] == sha256

    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == sha256[:32] and str(tmp_path / "in.csv") in dataset_input.dataset.source
    assert {tag.key: tag.value for tag in dataset_input.tags}["mlflow.data.context"] == "scoring"

    predicted = pd.read_csv(tmp_path / "out.csv")["label"]
    metrics = run.data.metrics
    assert metrics["rows"] == 60 and metrics["blank_rows"] == 1 and metrics["rows_per_second"] > 0
    shares = predicted.value_counts(normalize=True).reindex(LABELS, fill_value=0)
    assert {label: metrics[f"predicted_share_{label}"] for label in LABELS} == pytest.approx(shares.to_dict())
    assert metrics["accuracy"] == pytest.approx(accuracy_score(given["gold"], predicted))
    assert metrics["f1_macro"] == pytest.approx(f1_score(given["gold"], predicted, average="macro", labels=list(LABELS)))

    baseline = mlflow.artifacts.load_dict(f"runs:/{store['run_id']}/{scoring_runs.BASELINE_ARTIFACT}")
    counts = predicted.value_counts().reindex(LABELS, fill_value=0).tolist()
    assert metrics["drift_label_psi"] == pytest.approx(scoring_runs.psi(baseline["test_label_counts"], counts))
    assert metrics["drift_token_length_psi"] >= 0
    assert run.data.tags["drift"] == "computed"
    plots = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "drift")}
    assert plots == {"drift/label_drift.png", "drift/token_length_drift.png"}
    assert "drift label psi" in result.output


def test_psi_is_zero_for_the_same_distribution_and_grows_with_the_shift():
    assert scoring_runs.psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0)
    small, large = scoring_runs.psi([10, 20, 30], [12, 20, 28]), scoring_runs.psi([10, 20, 30], [30, 20, 10])
    assert 0 < small < 0.1 < large
    assert np.isfinite(scoring_runs.psi([10, 0, 30], [0, 5, 0]))  # empty bins do not make it infinite


def test_token_lengths_are_binned_with_longer_texts_in_the_open_last_bin():
    counts = np.zeros(300, dtype=int)
    counts[[3, 10, 299]] = 1
    bins = scoring_runs.length_bins(counts)
    assert len(bins) == len(scoring_runs.LENGTH_EDGES) and bins[0] == bins[1] == bins[-1] == 1 and bins.sum() == 3


def test_a_version_without_a_baseline_is_scored_with_drift_skipped_not_failed(register_tiny_model, tmp_path):
    version = register_tiny_model()  # logged like a version trained before baselines existed
    labelled_input(tmp_path / "in.csv", n=5)
    result = CliRunner().invoke(cli, ["score", f"models:/sentiment-english/{version}", "in.csv", "out.parquet",
                                      "--experiment-name", "nightly"])
    assert result.exit_code == 0, result.output
    (run,) = scoring_runs_in("nightly")
    assert run.info.status == "FINISHED" and run.data.tags["drift"].startswith("skipped: training run ")
    assert "drift_label_psi" not in run.data.metrics and run.data.metrics["rows"] == 5
    assert scoring_runs_in() == []  # nothing in the default experiment, nor in Default
    assert all("rows" not in r.data.metrics for r in mlflow.MlflowClient().search_runs(["0"]))  # Default: the model's run


def test_a_job_refused_on_bad_input_ends_its_run_failed(store, tmp_path):
    pd.DataFrame({"review": ["nice"]}).to_csv(tmp_path / "in.csv", index=False)
    result = CliRunner().invoke(cli, ["score", store["model_uri"], "in.csv", "out.csv", "--experiment-name", "refused"])
    assert result.exit_code == 2 and "has no text column 'text'" in result.output
    (run,) = scoring_runs_in("refused")
    assert run.info.status == "FAILED"


def test_under_mlflow_run_the_job_records_into_that_run_not_a_second_one(store, tmp_path, monkeypatch):
    labelled_input(tmp_path / "in.csv", n=5)
    client = mlflow.MlflowClient()
    project_run = client.create_run(client.create_experiment("project"))
    client.log_param(project_run.info.run_id, "engine", "local")  # as `mlflow run` logs its parameters
    monkeypatch.setenv("MLFLOW_RUN_ID", project_run.info.run_id)
    result = CliRunner().invoke(cli, ["score", store["model_uri"], "in.csv", "out.csv", "--experiment-name", "unused"])
    assert result.exit_code == 0, result.output
    (run,) = scoring_runs_in("project")
    assert run.info.status == "FINISHED" and run.data.metrics["rows"] == 5 and "drift_label_psi" in run.data.metrics
    assert mlflow.get_experiment_by_name("unused") is None


@pytest.mark.slow
def test_jobs_starting_at_once_on_a_new_sqlite_store_all_open_it(tmp_path):
    # MLflow creates and migrates the tables when a process first opens a store; without the lock in
    # tracking.check_store, two of these failed with `duplicate column name: step` and a traceback.
    command = [sys.executable, "-c", "from sentiment_flow import tracking; tracking.check_store()"]
    env = {**subprocess_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/new.db"}
    procs = [subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors = [proc.communicate(timeout=300)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 4, "\n".join(errors)
