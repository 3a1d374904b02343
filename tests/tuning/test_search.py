"""A tiny-model search end to end, in this process: one parent run, a child run per trial in the state Optuna
gave the trial, the best trial (by validation macro-F1 only) registered as one version, the search's plots."""

import json

import mlflow
import pytest

from sentiment_flow.config import TuneConfig
from sentiment_flow.tuning import tune
from sentiment_flow.tuning.search import open_search
from sentiment_flow.tuning.settings import PARAM_TAG_PREFIX, STATE_TAG, STUDY_TAG, TRIAL_TAG

from test_train import tiny_config
from wandb_offline import read_offline_run

pytestmark = pytest.mark.slow

GOOD, BAD = 5e-3, 1e-7  # the tiny model learns its data at 5e-3 within an epoch, and stays at chance at 1e-7
SPACE = {"learning_rate": [GOOD, BAD, 4e-3], "epochs": [2]}


def children(client, parent_id: str) -> dict[int, mlflow.entities.Run]:
    experiments = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(experiments, f"tags.mlflow.parentRunId = '{parent_id}'")
    return {int(run.data.tags[TRIAL_TAG]): run for run in found}


def test_a_pruned_study_leaves_one_parent_a_child_per_trial_and_registers_the_best(
    tiny_model_dir, tiny_data_dir, tmp_path
):
    base = tiny_config(tiny_model_dir, tiny_data_dir, registered_model_name="tuned")
    cfg = TuneConfig(trials=4, study="s4", search_space=json.dumps(SPACE), pruner="median")
    study, _, _ = open_search(base, cfg)
    # Fixed proposals, so the pruning is known: the median pruner waits for one finished trial (4 // 4), then
    # stops a trial whose first epoch is below the median of the finished ones at that epoch.
    for lr in (GOOD, BAD, GOOD, BAD):
        study.enqueue_trial({"learning_rate": lr, "epochs": 2})

    result = tune(base, cfg)

    client = mlflow.MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    all_runs = client.search_runs(experiments)
    assert len(all_runs) == 5
    parent = client.get_run(result.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[STUDY_TAG] == "s4"
    assert "mlflow.parentRunId" not in parent.data.tags
    trials = children(client, result.run_id)
    assert sorted(trials) == [0, 1, 2, 3]
    states = {n: trials[n].data.tags[STATE_TAG] for n in trials}
    assert states == {0: "COMPLETE", 1: "PRUNED", 2: "COMPLETE", 3: "PRUNED"}
    assert {run.info.status for run in trials.values()} == {"FINISHED"}
    assert {t.number: t.state.name for t in study.get_trials()} == states
    # Each child has its params and one validation macro-F1 per epoch it trained.
    assert trials[1].data.params["learning_rate"] == str(BAD)
    assert len(client.get_metric_history(trials[0].info.run_id, "eval_f1_macro")) == 2
    assert len(client.get_metric_history(trials[1].info.run_id, "eval_f1_macro")) == 1
    assert "test_f1_macro" not in trials[1].data.metrics  # a pruned trial stops before its test

    assert result.counts == {"COMPLETE": 2, "PRUNED": 2}
    assert result.best_trial == 0  # trials 0 and 2 train identically (same values, same seed): the first wins
    (version,) = client.search_model_versions("name = 'tuned'")
    assert str(version.version) == result.version == "1"
    assert version.run_id == trials[0].info.run_id
    assert version.tags[STUDY_TAG] == "s4" and version.tags[TRIAL_TAG] == "0"
    assert version.tags[f"{PARAM_TAG_PREFIX}learning_rate"] == str(GOOD)
    assert float(version.tags["validation_f1_macro"]) == pytest.approx(study.best_value, abs=1e-4)
    assert "study s4" in version.description
    assert "champion" not in client.get_registered_model("tuned").aliases  # a candidate, not a champion

    # Each trial is a W&B run in the study's group; a pruned one ends as cleanly as its MLflow run.
    wandb_runs = {r["config"]["mlflow_run_id"]: r for r in map(read_offline_run, tmp_path.glob("wandb/offline-run-*"))}
    assert set(wandb_runs) == {run.info.run_id for run in trials.values()}
    assert {r["group"] for r in wandb_runs.values()} == {"s4"}
    assert {r["exit_code"] for r in wandb_runs.values()} == {0}

    artifacts = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert {"plots/optimization_history.png", "plots/param_importances.png"} <= artifacts
    assert parent.data.metrics["best_validation_f1_macro"] == pytest.approx(study.best_value)


def test_selection_never_reads_test_metrics(tiny_model_dir, tiny_data_dir, monkeypatch):
    # Test metrics inverted: the trial with the best validation macro-F1 gets the worst test macro-F1. Picking by
    # test metrics would register the trial trained at chance.
    from sentiment_flow.training import tracking

    real = tracking.log_test_evaluation

    def inverted(y_true, y_pred, source):
        return {key: 1.0 - value for key, value in real(y_true, y_pred, source).items()}

    monkeypatch.setattr(tracking, "log_test_evaluation", inverted)
    base = tiny_config(tiny_model_dir, tiny_data_dir, registered_model_name="picked")
    cfg = TuneConfig(trials=2, study="by-validation", search_space=json.dumps(SPACE), pruner="none")
    study, _, _ = open_search(base, cfg)
    for lr in (BAD, GOOD):
        study.enqueue_trial({"learning_rate": lr, "epochs": 2})

    result = tune(base, cfg)

    by_test = max(study.trials, key=lambda t: t.user_attrs["test_metrics"]["test_f1_macro"]).number
    assert (result.best_trial, by_test) == (1, 0)
    version = mlflow.MlflowClient().get_model_version("picked", result.version)
    assert version.tags[TRIAL_TAG] == "1"


def test_mlflow_run_tune_is_the_parent_run_of_its_trials(tiny_model_dir, tiny_data_dir, tmp_path):
    from test_mlproject import mlflow_run

    space = json.dumps({"learning_rate": [GOOD, 4e-3], "epochs": [1]})
    proc = mlflow_run(
        "-e",
        "tune",
        *("-P", f"model={tiny_model_dir}", "-P", f"data={tiny_data_dir}", "-P", "max_length=32"),
        *("-P", "trials=2", "-P", "pruner=none", "-P", f"search_space={space}", "-P", "registered_model_name=e2e"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sentiment-flow promote e2e --version 1 --alias champion --dry-run" in proc.stdout

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("e2e").experiment_id
    (parent,) = [run for run in client.search_runs([experiment]) if "mlflow.parentRunId" not in run.data.tags]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["study"] == "auto" and parent.data.params["resolved_study"] == "tune-e2e"
    trials = children(client, parent.info.run_id)
    assert sorted(trials) == [0, 1] and {run.data.tags[STATE_TAG] for run in trials.values()} == {"COMPLETE"}
    (version,) = client.search_model_versions("name = 'e2e'")
    assert version.run_id in {run.info.run_id for run in trials.values()}
