"""End to end: `mlflow run . --env-manager local` in a subprocess, as a user runs it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml

from conftest import REPO_ROOT
from wandb_offline import read_offline_run

pytestmark = pytest.mark.slow


def mlflow_run_command(*args: str) -> list[str]:
    bin_dir = str(Path(sys.executable).parent)
    return [f"{bin_dir}/mlflow", "run", str(REPO_ROOT), "--env-manager", "local", "--experiment-name", "e2e", *args]


def mlflow_run_env(**extra: str) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)  # `mlflow run` starts `python` from PATH
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **extra}


def mlflow_run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        mlflow_run_command(*args), cwd=cwd, env=mlflow_run_env(), capture_output=True, text=True, timeout=600
    )


def test_mlflow_run_trains_tracks_and_registers_one_model(tiny_model_dir, tiny_data_dir, tmp_path):
    proc = mlflow_run(
        "-P",
        f"model={tiny_model_dir}",
        "-P",
        f"data={tiny_data_dir}",
        "-P",
        "learning_rate=5e-3",
        "-P",
        "max_length=32",
        "-P",
        "registered_model_name=e2e-english",
        cwd=tmp_path,
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


def test_sigterm_to_mlflow_run_stops_the_training_child_and_registers_nothing(tiny_model_dir, tiny_data_dir, tmp_path):
    import psutil

    temp = tmp_path / "tmp"  # where the training's checkpoint folder goes
    temp.mkdir()
    command = mlflow_run_command(
        "-P",
        f"model={tiny_model_dir}",
        "-P",
        f"data={tiny_data_dir}",
        "-P",
        "epochs=500",
        "-P",
        "max_length=32",
        "-P",
        "registered_model_name=killed",
    )
    client = mlflow.MlflowClient()
    client.search_experiments()  # create the schema now: two processes migrating one new sqlite file race
    log = tmp_path / "mlflow-run.log"
    with open(log, "w") as out:
        parent = subprocess.Popen(
            command, cwd=tmp_path, env=mlflow_run_env(TMPDIR=str(temp)), stdout=out, stderr=subprocess.STDOUT
        )
    children = []
    try:
        deadline = time.monotonic() + 180
        run = None
        # Training is about to start once the run is tracked and the checkpoint folder exists.
        while run is None or "wandb.run_id" not in run.data.tags or not list(temp.glob("sentiment_flow-*")):
            assert time.monotonic() < deadline and parent.poll() is None, log.read_text()[-3000:]
            time.sleep(1)
            experiment = client.get_experiment_by_name("e2e")
            runs = client.search_runs([experiment.experiment_id]) if experiment else []
            run = runs[0] if runs else None
        time.sleep(3)  # into the training loop
        children = psutil.Process(parent.pid).children(recursive=True)
        assert children

        parent.send_signal(signal.SIGTERM)  # the `mlflow run` process only, as `kill PID` does
        parent.wait(timeout=30)
        _, alive = psutil.wait_procs(children, timeout=60)
        assert not alive, "the training outlived `mlflow run`"
    finally:
        parent.kill()
        for child in children:
            if child.is_running():
                child.kill()

    assert client.get_run(run.info.run_id).info.status == "KILLED"
    assert client.search_registered_models() == []
    assert list(temp.glob("sentiment_flow-*")) == []
    (wandb_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    assert read_offline_run(wandb_dir)["exit_code"] not in (None, 0)  # finished, and marked failed
