"""End to end: `mlflow run . --env-manager local` in a subprocess, as a user runs it."""

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from wandb_offline import read_offline_run

from conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def mlflow_run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    bin_dir = str(Path(sys.executable).parent)  # `mlflow run` starts `python` from PATH
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [f"{bin_dir}/mlflow", "run", str(REPO_ROOT), "--env-manager", "local", "--experiment-name", "e2e", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )


def test_mlflow_run_trains_tracks_and_registers_one_model(tiny_model_dir, tiny_data_dir, tmp_path):
    proc = mlflow_run(
        "-P", f"model={tiny_model_dir}", "-P", f"data={tiny_data_dir}", "-P", "learning_rate=5e-3",
        "-P", "max_length=32", "-P", "registered_model_name=e2e-english", cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("e2e")
    (run,) = client.search_runs([experiment.experiment_id])  # exactly one run: no stray Trainer runs
    assert run.info.status == "FINISHED"
    assert run.data.params["learning_rate"] == "5e-3"  # as typed, logged by `mlflow run`
    assert run.data.params["resolved_learning_rate"] == "0.005"
    for key in ("test_accuracy", "test_f1_macro", "test_f1_weighted", "test_f1_neutral", "eval_f1_macro"):
        assert key in run.data.metrics

    (version,) = client.search_model_versions("name='e2e-english'")
    assert version.run_id == run.info.run_id
    path = mlflow.artifacts.download_artifacts(f"models:/e2e-english/{version.version}", dst_path=str(tmp_path / "m"))
    assert "transformers" in yaml.safe_load(Path(path, "MLmodel").read_text())["flavors"]

    (wandb_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    wandb_run = read_offline_run(wandb_dir)
    assert run.data.tags["wandb.run_id"] == wandb_run["run_id"]
    assert wandb_run["config"]["mlflow_run_id"] == run.info.run_id
    for key in ("test_accuracy", "test_f1_macro", "test_f1_weighted"):
        assert wandb_run["summary"][key] == pytest.approx(run.data.metrics[key])


def test_mlflow_run_with_bad_data_fails_the_run_with_a_clear_message(tiny_model_dir, tmp_path):
    proc = mlflow_run("-P", f"model={tiny_model_dir}", "-P", "data=./no-such-folder", cwd=tmp_path)
    assert proc.returncode != 0
    assert "Data directory './no-such-folder' does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
    runs = mlflow.search_runs(experiment_names=["e2e"])
    assert list(runs["status"]) == ["FAILED"]
    assert mlflow.MlflowClient().search_registered_models() == []
