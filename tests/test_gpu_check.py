"""benchmarks/gpu_check.py runs (tiny sizes, on this CPU) and its numbers and rendering hold together."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, subprocess_env

SCRIPT = REPO_ROOT / "benchmarks" / "gpu_check.py"


@pytest.mark.slow
def test_gpu_check_smoke_measures_trains_reloads_on_cpu_and_renders(tmp_path, tiny_data_dir, tiny_model_dir):
    out, results = tmp_path / "out", tmp_path / "results"
    env = subprocess_env(PYTHONPATH=str(REPO_ROOT))
    command = [sys.executable, str(SCRIPT), "--smoke", "--data", str(tiny_data_dir), "--model", str(tiny_model_dir), "--out", str(out)]
    subprocess.run(command, env=env, check=True, capture_output=True)
    payload = json.loads((out / "gpu.json").read_text())

    arms = {(a["padding"], a["batch_size"]): a for a in payload["throughput"]}
    assert set(arms) == {(p, b) for p in ("dynamic", "global") for b in (4, 8)}
    for (padding, batch_size), arm in arms.items():
        # Exactly the timed steps' batches were counted, each a full batch.
        assert arm["steps"] == 3
        assert arm["samples_per_second"] * arm["seconds"] == pytest.approx(3 * batch_size)
        assert 0 < arm["real_tokens_per_second"] <= arm["tokens_per_second"]
        assert arm["model_device"] == "cpu" and arm["bf16"] is False  # no mixed precision without CUDA
    # Per-batch padding of length-grouped batches wastes less than padding to the longest text.
    for batch_size in (4, 8):
        assert arms["dynamic", batch_size]["real_token_fraction"] > arms["global", batch_size]["real_token_fraction"]

    check = payload["finetune"][0]
    assert check["cpu_cuda_visible"] is False and check["cpu_model_device"] == "cpu"
    assert check["cpu_agreement"] == 1.0  # fp32 on both sides here: the reloaded model is the trained one
    assert check["cpu_f1_macro"] == pytest.approx(check["gpu_ordered_f1_macro"])

    render = [sys.executable, str(SCRIPT), "--render", str(out / "gpu.json"), "--results", str(results)]
    subprocess.run(render, env=env, check=True, capture_output=True)
    markdown = (results / "gpu.md").read_text()
    assert "| dynamic | 8 | 3 |" in markdown and "| global | 4 | 3 |" in markdown
    assert "100.00%\nagree" in markdown
    assert (results / "gpu.png").stat().st_size > 0
