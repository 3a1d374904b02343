"""`sentiment-flow optimize` as a run in the store: stopped by SIGTERM it ends KILLED with nothing registered, and a
second optimize of one version is refused unless asked for with --again."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import mlflow
import pytest
from click.testing import CliRunner

from sentiment_flow.cli import cli
from sentiment_flow.training import train

from conftest import isolate, subprocess_env
from test_train import tiny_config

pytestmark = pytest.mark.slow  # a training per module, an optimize (seconds) per test

SOURCE, VARIANT = "sentiment-english", "sentiment-english-int8"

# `sentiment-flow optimize` that touches $READY once the ONNX graph is exported (inside its run) and then waits
# there for the signal: the test stops it at a known step instead of racing the export.
STOPPED_WHILE_OPTIMIZING = """
import os, sys, time
from pathlib import Path
from sentiment_flow import cli
from sentiment_flow.int8 import export as optimize

export = optimize.export_onnx

def export_then_wait(*args, **kwargs):
    export(*args, **kwargs)
    Path(os.environ["READY"]).touch()
    time.sleep(600)

optimize.export_onnx = export_then_wait
sys.argv[0] = "sentiment-flow"
cli.main()
"""


@pytest.fixture(scope="module")
def trained_store(tiny_model_dir, tiny_data_dir, tmp_path_factory):
    """The sqlite file of a store holding one tiny training (version 1 of SOURCE)."""
    root = tmp_path_factory.mktemp("optimize-runs")
    with pytest.MonkeyPatch.context() as mp:
        isolate(mp, root)
        train(tiny_config(tiny_model_dir, tiny_data_dir))
    return root / "mlflow.db"


@pytest.fixture
def store(trained_store, isolated):
    """This test's store: a copy of the trained one (its runs' artifacts stay where training wrote them)."""
    shutil.copyfile(trained_store, isolated / "mlflow.db")
    return mlflow.MlflowClient()


def variant_versions(client) -> list[str]:
    return sorted(str(v.version) for v in client.search_model_versions(f"name = '{VARIANT}'"))


def test_a_second_optimize_of_one_version_is_refused_naming_the_variant_unless_again(store):
    source_uri = f"models:/{SOURCE}/1"
    first = CliRunner().invoke(cli, ["optimize", source_uri])
    assert first.exit_code == 0, first.output
    assert variant_versions(store) == ["1"]

    second = CliRunner().invoke(cli, ["optimize", f"models:/{SOURCE}/1"])
    assert second.exit_code == 2, second.output
    message = " ".join(second.output.split())  # rich wraps the one line at the terminal's width
    assert f"{source_uri} already has an int8 variant: models:/{VARIANT}/1" in message
    assert "--again" in message and "Traceback" not in message
    assert variant_versions(store) == ["1"]
    assert (
        len(
            store.search_runs(
                [store.get_run(store.get_model_version(VARIANT, "1").run_id).info.experiment_id],
                f"attributes.run_name = '{VARIANT}-v1'",
            )
        )
        == 1
    )  # no second run was started

    again = CliRunner().invoke(cli, ["optimize", source_uri, "--again"])
    assert again.exit_code == 0, again.output
    assert variant_versions(store) == ["1", "2"]
    assert store.get_model_version(VARIANT, "2").tags["source_version"] == "1"


def test_sigterm_while_optimizing_ends_its_run_killed_and_registers_nothing(store, tmp_path):
    ready, temp = tmp_path / "exported", tmp_path / "tmp"
    temp.mkdir()
    log = tmp_path / "optimize.log"
    with log.open("w") as out:
        optimizing = subprocess.Popen(
            [sys.executable, "-c", STOPPED_WHILE_OPTIMIZING, "optimize", f"models:/{SOURCE}/1"],
            cwd=tmp_path,
            env=subprocess_env(READY=str(ready), TMPDIR=str(temp)),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 300
        while not ready.exists():
            assert time.monotonic() < deadline and optimizing.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        os.kill(optimizing.pid, signal.SIGTERM)
        assert optimizing.wait(timeout=60) == 128 + signal.SIGTERM, log.read_text()[-3000:]
    finally:
        optimizing.kill()

    (run,) = store.search_runs(
        [e.experiment_id for e in store.search_experiments()], f"attributes.run_name = '{VARIANT}-v1'"
    )
    assert run.info.status == "KILLED"
    assert variant_versions(store) == []
    assert list(temp.glob("sentiment_flow-int8-*")) == []  # the exported graphs went with the run
