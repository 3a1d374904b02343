"""torchrun data-parallel training: every process trains, only the main one tracks and registers."""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

pytestmark = pytest.mark.slow


def test_torchrun_with_two_processes_records_one_run_one_version_one_wandb_run(tiny_model_dir, tiny_data_dir, tmp_path):
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            f"{bin_dir}/torchrun",
            "--nproc-per-node",
            "2",
            "-m",
            "sentiment_flow",
            "train",
            "--model",
            str(tiny_model_dir),
            "--data",
            str(tiny_data_dir),
            "--learning-rate",
            "5e-3",
            "--max-length",
            "32",
            "--batch-size",
            "16",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert run.info.status == "FINISHED"
    assert [str(v.version) for v in mlflow.MlflowClient().search_model_versions("name='sentiment-english'")] == ["1"]
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 1
    # Data parallel: each optimizer step sees 2 x 16 rows, so an epoch has half the single-process steps.
    (final,) = mlflow.MlflowClient().get_metric_history(run.info.run_id, "train_loss")  # logged at the last step
    assert final.step == 2 * math.ceil(900 / 2 / 16)
    # The test metrics cover every test row, gathered from both processes.
    report = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/classification_report.txt")
    assert re.search(r"^\s*accuracy\s+[\d.]+\s+60$", report, re.M), report
