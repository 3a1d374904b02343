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

from sentiment_flow.cli import cli
from sentiment_flow.config import LABELS, SCORING_EXPERIMENT, ScoreConfig, TrainConfig
from sentiment_flow.monitoring import drift as scoring_runs
from sentiment_flow.scoring.files import score_csv
from sentiment_flow.training import train

from conftest import REPO_ROOT, SHARED_DATA, isolate, requires_shared_data, subprocess_env, synthetic_split

ENOUGH = scoring_runs.MIN_DRIFT_ROWS + 40  # rows of an input whose drift is judged
SCORED_SPLIT = ScoreConfig(output_prefix="pred_")  # a split's own `label` column stays as it is


@pytest.fixture(scope="module")
def trained_store(tiny_model_dir, tiny_data_dir, tmp_path_factory):
    """A real (tiny) training, so the drift baseline is the one `train` writes; returns its store URI."""
    root = tmp_path_factory.mktemp("scoring-runs")
    with pytest.MonkeyPatch.context() as mp:
        uri = isolate(mp, root)
        config = TrainConfig(
            model=str(tiny_model_dir), data=str(tiny_data_dir), epochs=1, learning_rate="5e-3", max_length=32
        )
        result = train(config)
    return {"uri": uri, "model_uri": result.model_uri, "run_id": result.run_id, "data": tiny_data_dir}


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
    assert sum(baseline["token_length_counts"]) == 60  # one count per test text: the same population
    assert len(baseline["token_length_counts"]) <= 33  # tokens after truncation to max_length 32


def test_the_baseline_counts_the_test_split_as_scoring_counts_the_same_file(store, tmp_path):
    # The baseline once counted the training split (900 texts, longer in the English data): the test split,
    # scored by its own model, then read as drifted. Now the same texts give the same histogram both ways.
    baseline = mlflow.artifacts.load_dict(f"runs:/{store['run_id']}/{scoring_runs.BASELINE_ARTIFACT}")
    test_csv = store["data"] / "english" / "test.csv"
    summary = score_csv(store["model_uri"], test_csv, tmp_path / "out.csv", SCORED_SPLIT, progress=False)
    assert np.trim_zeros(summary.token_length_counts, "b").tolist() == np.trim_zeros(
        baseline["token_length_counts"], "b"
    )


def test_a_scoring_job_is_one_run_with_model_input_results_and_drift(store, tmp_path):
    given = labelled_input(tmp_path / "in.csv", n=ENOUGH)
    result = CliRunner().invoke(cli, ["score", store["model_uri"], "in.csv", "out.csv", "--label-column", "gold"])
    assert result.exit_code == 0, result.output

    (run,) = scoring_runs_in()
    assert run.info.status == "FINISHED"
    name, version = store["model_uri"].removeprefix("models:/").split("/")
    params = run.data.params
    assert {k: params[k] for k in ("engine", "model_name", "model_version", "model_run_id")} == {
        "engine": "local",
        "model_name": name,
        "model_version": version,
        "model_run_id": store["run_id"],
    }
    sha256 = hashlib.sha256((tmp_path / "in.csv").read_bytes()).hexdigest()
    assert params["input_path"] == str(tmp_path / "in.csv") and params["input_hash"] == sha256

    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == sha256[:32] and str(tmp_path / "in.csv") in dataset_input.dataset.source
    assert {tag.key: tag.value for tag in dataset_input.tags}["mlflow.data.context"] == "scoring"

    predicted = pd.read_csv(tmp_path / "out.csv")["label"]
    metrics = run.data.metrics
    assert metrics["rows"] == ENOUGH and metrics["blank_rows"] == 1 and metrics["rows_per_second"] > 0
    shares = predicted.value_counts(normalize=True).reindex(LABELS, fill_value=0)
    assert {label: metrics[f"predicted_share_{label}"] for label in LABELS} == pytest.approx(shares.to_dict())
    assert metrics["accuracy"] == pytest.approx(accuracy_score(given["gold"], predicted))
    assert metrics["f1_macro"] == pytest.approx(
        f1_score(given["gold"], predicted, average="macro", labels=list(LABELS))
    )

    baseline = mlflow.artifacts.load_dict(f"runs:/{store['run_id']}/{scoring_runs.BASELINE_ARTIFACT}")
    counts = predicted.value_counts().reindex(LABELS, fill_value=0).tolist()
    assert metrics["drift_label_psi"] == pytest.approx(scoring_runs.psi(baseline["test_label_counts"], counts))
    assert metrics["drift_token_length_psi"] >= 0
    assert run.data.tags["drift"] == "computed" and run.data.tags["drift_baseline_run_id"] == store["run_id"]
    plots = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "drift")}
    assert plots == {"drift/label_drift.png", "drift/token_length_drift.png"}
    assert "drift label psi" in result.output


def test_a_small_input_records_not_enough_rows_instead_of_a_psi(store, tmp_path):
    # Three rows once read token-length PSI 11.5, "a large shift", with no caution.
    labelled_input(tmp_path / "in.csv", n=3)
    result = CliRunner().invoke(cli, ["score", store["model_uri"], "in.csv", "out.csv", "--experiment-name", "small"])
    assert result.exit_code == 0, result.output
    (run,) = scoring_runs_in("small")
    note = f"not enough rows (3 < {scoring_runs.MIN_DRIFT_ROWS})"
    assert run.info.status == "FINISHED" and run.data.tags["drift"] == f"skipped: {note}"
    assert run.data.tags["drift_label_psi"] == run.data.tags["drift_token_length_psi"] == note
    assert not {"drift_label_psi", "drift_token_length_psi"} & set(run.data.metrics)
    assert mlflow.MlflowClient().list_artifacts(run.info.run_id, "drift") == []
    assert result.output.count(note) == 2  # one line per check in the printed table


def test_an_int8_variant_is_judged_against_its_fp32_sources_baseline(store, tmp_path):
    # The variant's version points at the optimize run, which logs no baseline: drift was always skipped.
    from sentiment_flow.int8 import optimize

    variant = optimize(store["model_uri"])
    labelled_input(tmp_path / "in.csv", n=ENOUGH)
    result = CliRunner().invoke(cli, ["score", variant.model_uri, "in.csv", "out.csv", "--experiment-name", "int8"])
    assert result.exit_code == 0, result.output
    (run,) = scoring_runs_in("int8")
    assert run.data.params["model_run_id"] == variant.run_id != store["run_id"]  # the run that logged the model
    assert run.data.tags["drift"] == "computed" and run.data.tags["drift_baseline_run_id"] == store["run_id"]
    assert run.data.metrics["drift_label_psi"] >= 0 and run.data.metrics["drift_token_length_psi"] >= 0


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
    labelled_input(tmp_path / "in.csv", n=ENOUGH)
    result = CliRunner().invoke(
        cli, ["score", f"models:/sentiment-english/{version}", "in.csv", "out.parquet", "--experiment-name", "nightly"]
    )
    assert result.exit_code == 0, result.output
    (run,) = scoring_runs_in("nightly")
    assert run.info.status == "FINISHED" and run.data.tags["drift"].startswith("skipped: training run ")
    assert "drift_label_psi" not in run.data.metrics and run.data.metrics["rows"] == ENOUGH
    assert scoring_runs_in() == []  # nothing in the default experiment, nor in Default
    assert all(
        "rows" not in r.data.metrics for r in mlflow.MlflowClient().search_runs(["0"])
    )  # Default: the model's run


def test_a_job_refused_on_bad_input_ends_its_run_failed(store, tmp_path):
    pd.DataFrame({"review": ["nice"]}).to_csv(tmp_path / "in.csv", index=False)
    result = CliRunner().invoke(cli, ["score", store["model_uri"], "in.csv", "out.csv", "--experiment-name", "refused"])
    assert result.exit_code == 2 and "has no text column 'text'" in result.output
    (run,) = scoring_runs_in("refused")
    assert run.info.status == "FAILED"


@pytest.mark.parametrize("experiment", ["project-unnamed", "project-named"])
def test_under_mlflow_run_the_job_records_into_that_run_not_a_second_one(store, tmp_path, monkeypatch, experiment):
    labelled_input(tmp_path / "in.csv", n=ENOUGH)
    client = mlflow.MlflowClient()
    project_run = client.create_run(client.create_experiment(experiment))
    client.log_param(project_run.info.run_id, "engine", "local")  # as `mlflow run` logs its parameters
    monkeypatch.setenv("MLFLOW_RUN_ID", project_run.info.run_id)
    named = ["--experiment-name", experiment] if experiment.endswith("-named") else []  # the run's own: accepted
    result = CliRunner().invoke(cli, ["score", store["model_uri"], "in.csv", "out.csv", *named])
    assert result.exit_code == 0, result.output
    (run,) = scoring_runs_in(experiment)
    assert run.info.run_id == project_run.info.run_id and run.info.status == "FINISHED"
    assert run.data.metrics["rows"] == ENOUGH and "drift_label_psi" in run.data.metrics


def test_under_mlflow_run_another_experiment_name_is_refused_not_ignored(store, tmp_path, monkeypatch):
    # It was ignored: the job scored into the run's experiment (Default, under a plain `mlflow run`) silently.
    labelled_input(tmp_path / "in.csv", n=5)
    client = mlflow.MlflowClient()
    project_run = client.create_run("0")  # where `mlflow run` puts it when not told an experiment
    monkeypatch.setenv("MLFLOW_RUN_ID", project_run.info.run_id)
    result = CliRunner().invoke(cli, ["score", store["model_uri"], "in.csv", "out.csv", "--experiment-name", "mine"])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "Error: `mlflow run` created this job's run in experiment 'Default', not 'mine', and a run cannot move "
        "between experiments; name the experiment to mlflow run itself: mlflow run . -e score --experiment-name mine "
        "... (or MLFLOW_EXPERIMENT_NAME=mine), without -P experiment_name."
    )
    assert client.get_run(project_run.info.run_id).info.status == "FAILED"
    assert "rows" not in client.get_run(project_run.info.run_id).data.metrics and not (tmp_path / "out.csv").exists()
    assert mlflow.get_experiment_by_name("mine") is None


def mlflow_run_score(cwd, model_uri: str, *args: str) -> subprocess.CompletedProcess:
    """`mlflow run . -e score` of `model_uri` on cwd/in.csv, started in `cwd` as a user would."""
    command = [
        "mlflow",
        "run",
        str(REPO_ROOT),
        "-e",
        "score",
        "--env-manager",
        "local",
        "-P",
        f"model_uri={model_uri}",
        "-P",
        "input=in.csv",
        "-P",
        "output=out.csv",
        "-P",
        "overwrite=true",
        *args,
    ]
    return subprocess.run(
        command, cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.slow
def test_mlflow_run_score_lands_in_the_experiment_mlflow_run_was_given_and_refuses_another(store, tmp_path):
    labelled_input(tmp_path / "in.csv", n=5)
    # As the README writes it: the experiment is given to `mlflow run`, which creates the run there.
    given = mlflow_run_score(tmp_path, store["model_uri"], "--experiment-name", "given-to-mlflow-run")
    assert given.returncode == 0, given.stderr[-3000:]
    (run,) = scoring_runs_in("given-to-mlflow-run")
    assert run.info.status == "FINISHED" and run.data.metrics["rows"] == 5
    # As the issue ran it: only the parameter. `mlflow run` had created the run in Default; it was scored there.
    refused = mlflow_run_score(tmp_path, store["model_uri"], "-P", "experiment_name=my-scoring")
    assert refused.returncode == 1
    assert "Error: `mlflow run` created this job's run in experiment 'Default', not 'my-scoring'" in refused.stderr
    assert "mlflow run . -e score --experiment-name my-scoring" in refused.stderr
    (run,) = mlflow.MlflowClient().search_runs(["0"], "params.experiment_name = 'my-scoring'")
    assert run.info.status == "FAILED" and "rows" not in run.data.metrics
    assert mlflow.get_experiment_by_name("my-scoring") is None


@pytest.mark.slow
def test_jobs_starting_at_once_on_a_new_sqlite_store_all_open_it(tmp_path):
    # MLflow creates and migrates the tables when a process first opens a store; without the lock in
    # tracking.check_store, two of these failed with `duplicate column name: step` and a traceback.
    command = [sys.executable, "-c", "from sentiment_flow import store; store.check_store()"]
    env = {**subprocess_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/new.db"}
    procs = [subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors = [proc.communicate(timeout=300)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 4, "\n".join(errors)


@pytest.mark.slow
@requires_shared_data()
def test_the_english_test_split_scored_against_its_training_baseline_reads_stable(tmp_path):
    """Real data and MiniLM: the baseline built by the function training calls, the test file scored by
    `score_csv` (the head is untrained: drift in token lengths does not depend on it)."""
    from sentiment_flow.data import load_data, tokenize
    from sentiment_flow.training import tracking
    from sentiment_flow.training.model import load_tokenizer_and_model

    tokenizer, model = load_tokenizer_and_model("minilm")
    encoded = tokenize(load_data(str(SHARED_DATA), "english"), tokenizer, TrainConfig.max_length)
    reference = scoring_runs.baseline(encoded)
    with mlflow.start_run() as run:
        tracking.log_model(model, tokenizer, None, TrainConfig.max_length)
    test_csv = SHARED_DATA / "english" / "test.csv"
    model_uri = f"runs:/{run.info.run_id}/{tracking.MODEL_ARTIFACT}"
    summary = score_csv(model_uri, test_csv, tmp_path / "out.csv", SCORED_SPLIT, progress=False)
    assert summary.rows == sum(reference["token_length_counts"]) >= scoring_runs.MIN_DRIFT_ROWS
    actual = scoring_runs.length_bins(summary.token_length_counts)
    assert scoring_runs.psi(scoring_runs.length_bins(reference["token_length_counts"]), actual) < 0.1  # "stable"
    # Why the baseline is the test split's: the train split's texts, counted the same way, are longer (PSI 0.25).
    train_lengths = np.bincount([len(ids) for ids in encoded["train"]["input_ids"]])
    assert scoring_runs.psi(scoring_runs.length_bins(train_lengths), actual) > 0.25
