"""`sentiment-flow tune` as processes: two machines on one study share its trials, and a search stopped by Ctrl-C
ends that trial's run KILLED and its own FINISHED, then continues from there when run again."""

import json
import signal
import subprocess
import sys
import time

import mlflow
import pytest

from sentiment_flow.tuning.settings import STATE_TAG, STUDY_TAG, TRIAL_TAG

from conftest import subprocess_env
from test_search import children

pytestmark = pytest.mark.slow

SPACE = {"learning_rate": {"low": 1e-3, "high": 1e-2, "log": True}, "epochs": [2]}
# A tiny trial of 2 epochs takes about a second on a quiet machine: too short to interrupt on purpose.
LONG_TRIALS = {**SPACE, "epochs": [30]}


def tune_command(tiny_model_dir, tiny_data_dir, study: str, trials: int, space: dict = SPACE) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sentiment_flow",
        "tune",
        *("--model", str(tiny_model_dir), "--data", str(tiny_data_dir), "--max-length", "32"),
        *("--search-space", json.dumps(space), "--pruner", "none", "--registered-model-name", study),
        *("--study", study, "--trials", str(trials)),
    ]


def load(tmp_path, study: str):
    import optuna

    return optuna.load_study(study_name=study, storage=f"sqlite:///{tmp_path / 'optuna.db'}")


def parents(client, study: str) -> list:
    experiments = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(experiments, f"tags.`{STUDY_TAG}` = '{study}'")
    return [run for run in found if "mlflow.parentRunId" not in run.data.tags]


def test_two_processes_on_one_study_share_its_trials_without_duplicates(tiny_model_dir, tiny_data_dir, tmp_path):
    command = tune_command(tiny_model_dir, tiny_data_dir, "shared", trials=3)
    procs = [
        subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=900)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]

    study = load(tmp_path, "shared")
    client = mlflow.MlflowClient()
    two = parents(client, "shared")
    assert len(two) == 2 and {run.info.status for run in two} == {"FINISHED"}
    by_parent = [children(client, run.info.run_id) for run in two]
    numbers = [n for trials in by_parent for n in trials]
    assert sorted(numbers) == [t.number for t in study.trials]  # each trial ran once, in one of the two
    assert all(by_parent), "both processes ran trials"
    # One more than asked at most: a machine starts its last trial while the other finishes the third.
    assert 3 <= len(study.trials) <= 4 and {t.state.name for t in study.trials} == {"COMPLETE"}
    learning_rates = [t.params["learning_rate"] for t in study.trials]
    assert len(set(learning_rates)) == len(learning_rates)  # no two machines proposed the same trial
    versions = client.search_model_versions("name = 'shared'")
    assert str(study.best_trial.number) in {v.tags[TRIAL_TAG] for v in versions}
    assert len({v.tags[TRIAL_TAG] for v in versions}) == len(versions)  # no trial registered twice


def test_ctrl_c_kills_the_trial_finishes_the_search_and_a_rerun_continues_it(tiny_model_dir, tiny_data_dir, tmp_path):
    command = tune_command(tiny_model_dir, tiny_data_dir, "resumed", trials=3, space=LONG_TRIALS)
    first = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 600
    client = mlflow.MlflowClient()
    while True:  # stop it inside its second trial, once that trial's run exists
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()[0][-3000:]
        # optuna.db appears after the process made the MLflow store: reading that one then creates nothing.
        if (tmp_path / "optuna.db").exists():
            experiments = [e.experiment_id for e in client.search_experiments()]
            if client.search_runs(experiments, f"tags.`{TRIAL_TAG}` = '1'"):
                break
        time.sleep(0.2)
    first.send_signal(signal.SIGINT)
    output = first.communicate(timeout=300)[0]
    assert first.returncode == 130, output[-3000:]
    assert "sentiment-flow promote resumed --version 1 --alias champion --dry-run" in output

    (parent,) = parents(client, "resumed")
    assert parent.info.status == "FINISHED"
    trials = children(client, parent.info.run_id)
    assert trials[0].info.status == "FINISHED" and trials[0].data.tags[STATE_TAG] == "COMPLETE"
    assert trials[1].info.status == "KILLED"
    assert [t.state.name for t in load(tmp_path, "resumed").trials] == ["COMPLETE", "FAIL"]
    (version,) = client.search_model_versions("name = 'resumed'")
    assert version.tags[TRIAL_TAG] == "0"

    rerun = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    study = load(tmp_path, "resumed")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    second = next(run for run in parents(client, "resumed") if run.info.run_id != parent.info.run_id)
    assert sorted(children(client, second.info.run_id)) == [2, 3]  # the count went on from where it stopped
