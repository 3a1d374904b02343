"""SIGKILL, which allows no clean-up, mid-epoch and while registering: nothing it leaves behind is promotable."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from conftest import subprocess_env

pytestmark = pytest.mark.slow

# `sentiment-flow` whose process dies by SIGKILL the moment MLflow has created the model version: the one
# instant at which a version exists before its training finished (it is registered last).
KILLED_WHILE_REGISTERING = """
import os, signal, sys
import mlflow
from sentiment_flow import cli

register_model = mlflow.register_model

def register_then_die(*args, **kwargs):
    register_model(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)

mlflow.register_model = register_then_die
sys.argv[0] = "sentiment-flow"
cli.main()
"""


def train_command(tiny_model_dir: Path, tiny_data_dir: Path, epochs: int) -> list[str]:
    return [
        "train",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(tiny_data_dir),
        "--epochs",
        str(epochs),
        "--learning-rate",
        "5e-3",
        "--max-length",
        "32",
    ]


def sentiment_flow(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sentiment_flow", *args],
        cwd=cwd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_sigkill_while_registering_leaves_a_version_that_promote_refuses_even_when_forced(
    tiny_model_dir, tiny_data_dir, tmp_path
):
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_WHILE_REGISTERING, *train_command(tiny_model_dir, tiny_data_dir, 1)],
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]

    client = mlflow.MlflowClient()
    (version,) = client.search_model_versions("name = 'sentiment-english'")
    assert client.get_run(version.run_id).info.status == "RUNNING"  # nobody was left to end it
    for extra in (["--dry-run"], ["--force", "--reason", "a half-registered version"]):
        refused = sentiment_flow(
            "promote", "sentiment-english", "--version", "1", "--alias", "champion", *extra, cwd=tmp_path
        )
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "ready" in refused.stdout and "RUNNING" in refused.stdout
    assert client.get_registered_model("sentiment-english").aliases == {}


def test_sigkill_mid_epoch_registers_nothing(tiny_model_dir, tiny_data_dir, tmp_path):
    temp = tmp_path / "tmp"  # where the training's checkpoint folder goes
    temp.mkdir()
    client = mlflow.MlflowClient()
    client.search_experiments()  # create the schema now: two processes migrating one new sqlite file race
    log = tmp_path / "train.log"
    with log.open("w") as out:
        training = subprocess.Popen(
            [sys.executable, "-m", "sentiment_flow", *train_command(tiny_model_dir, tiny_data_dir, 500)],
            cwd=tmp_path,
            env=subprocess_env(TMPDIR=str(temp)),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 180
        # Training is about to start once the run is tracked and the checkpoint folder exists.
        while (
            not (runs := client.search_runs(["0"]))
            or "wandb.run_id" not in runs[0].data.tags
            or not list(temp.glob("sentiment_flow-*"))
        ):
            assert time.monotonic() < deadline and training.poll() is None, log.read_text()[-3000:]
            time.sleep(1)
        time.sleep(3)  # into the training loop
        os.kill(training.pid, signal.SIGKILL)
        assert training.wait(timeout=30) == -signal.SIGKILL
    finally:
        training.kill()

    assert client.search_registered_models() == []
    assert client.get_run(runs[0].info.run_id).info.status == "RUNNING"  # as the README says: no clean-up
