"""benchmarks/gpu_check.py runs (tiny sizes, on this CPU) and its numbers and rendering hold together."""

from __future__ import annotations

import itertools
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
    command = [
        sys.executable,
        str(SCRIPT),
        "--smoke",
        "--data",
        str(tiny_data_dir),
        "--model",
        str(tiny_model_dir),
        "--out",
        str(out),
    ]
    subprocess.run(command, env=env, check=True, capture_output=True)
    payload = json.loads((out / "gpu.json").read_text())

    arms = {(a["padding"], a["batch_size"]): a for a in payload["throughput"]}
    assert set(arms) == {(p, b) for p in ("dynamic", "global") for b in (4, 8)}
    for (_padding, batch_size), arm in arms.items():
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


@pytest.fixture
def gpu_check(monkeypatch):
    """benchmarks/gpu_check.py as a module, with CUDA's device questions answered as an H100's."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (9, 0))
    monkeypatch.delenv("SENTIMENT_FLOW_TORCH_COMPILE", raising=False)
    return module


def test_policy_arms_add_one_change_at_a_time_and_end_at_the_cuda_policy(gpu_check):
    from sentiment_flow.training.device import device_settings

    policy = device_settings("cuda", max_length=128)
    arms = gpu_check.policy_arms(policy)
    names = [name for name, _, _ in arms]
    assert names == [name for name, _ in gpu_check.POLICY_CHANGES] + [name for name, _ in gpu_check.POLICY_ALTERNATIVES]
    assert arms[0][1:] == (gpu_check.POLICY_OFF, None)
    final = arms[len(gpu_check.POLICY_CHANGES) - 1]
    assert final[1:] == (policy.training_args, policy.pad_to_multiple_of)  # the last cumulative arm is the policy
    for (_, before, _), (_, after, _) in itertools.pairwise(arms[: len(gpu_check.POLICY_CHANGES)]):
        assert sum(before[k] != after[k] for k in after) <= 3  # one change (bf16 brings fp16 and tf32 along)
    assert arms[-1][1] == policy.training_args and arms[-1][2] == 16


def test_policy_arms_refuse_a_policy_field_no_arm_measures(gpu_check):
    from sentiment_flow.training.device import DeviceSettings, device_settings

    policy = device_settings("cuda")
    grown = DeviceSettings("cuda", {**policy.training_args, "gradient_checkpointing": True}, 64)
    with pytest.raises(RuntimeError, match="gradient_checkpointing"):
        gpu_check.policy_arms(grown)


@pytest.mark.parametrize(
    "name, peak, key",
    [
        ("NVIDIA H100 80GB HBM3", 989e12, "H100"),
        ("NVIDIA H200", 989e12, "H200"),
        ("NVIDIA H200 NVL", 835e12, "H200 NVL"),
        ("NVIDIA H100 PCIe", 756e12, "H100 PCIe"),
        ("Tesla T4", None, "unknown"),
    ],
)
def test_bf16_peak_names_the_datasheet_entry_it_used(gpu_check, name, peak, key):
    assert gpu_check.bf16_peak(name) == (peak, key)


def test_policy_run_refuses_a_cpu_without_smoke(gpu_check):
    import click

    with pytest.raises(click.UsageError, match="--smoke"):
        gpu_check.cuda_policy(128, smoke=False)


@pytest.mark.slow
def test_policy_smoke_measures_every_change_checks_on_cpu_and_renders(tmp_path, tiny_data_dir, tiny_model_dir):
    out, results = tmp_path / "out", tmp_path / "results"
    env = subprocess_env(PYTHONPATH=str(REPO_ROOT))
    env.pop("SENTIMENT_FLOW_TORCH_COMPILE", None)
    command = [
        sys.executable,
        str(SCRIPT),
        "--policy",
        "--smoke",
        "--data",
        str(tiny_data_dir),
        "--model",
        str(tiny_model_dir),
        "--out",
        str(out),
    ]
    subprocess.run(command, env=env, check=True, capture_output=True)
    policy = json.loads((out / "gpu_policy.json").read_text())["policy"]

    arms = policy["ablation"]
    assert [(a["arm"], a["batch_size"]) for a in arms[:2]] == [
        ("baseline: fp32, dynamic padding", 4),
        ("baseline: fp32, dynamic padding", 8),
    ]
    assert len(arms) == 2 * 7 and not any("skipped" in a for a in arms)
    for arm in arms:
        settings = arm["settings"]
        k = arm["window_samples_per_second"].index(arm["samples_per_second"])  # the median window's own numbers
        assert arm["samples_per_second"] * arm["window_seconds"][k] == pytest.approx(
            arm["window_steps"] * arm["batch_size"]
        )
        assert 0 < arm["real_tokens_per_second"] <= arm["tokens_per_second"]
        width = arm["tokens_per_second"] / arm["samples_per_second"]  # the synthetic rows are all under 16 tokens
        assert width == pytest.approx(settings["pad_to_multiple_of"]) if settings["pad_to_multiple_of"] else width < 16
    final = next(a for a in arms if a["arm"] == "+ loader workers, pinned memory")["settings"]
    assert final["torch_compile"] and final["optim"] == "adamw_torch_fused" and final["bf16"]
    assert final["dataloader_num_workers"] > 0 and final["pad_to_multiple_of"] == 64

    check = policy["finetune"]
    assert check["cpu_cuda_visible"] is False and check["cpu_agreement"] == 1.0
    assert check["torch_compile"] is False and check["pad_to_multiple_of"] is None  # on this CPU: the CPU policy

    render = [
        sys.executable,
        str(SCRIPT),
        "--render",
        str(REPO_ROOT / "benchmarks/results/gpu.json"),
        "--render",
        str(out / "gpu_policy.json"),
        "--results",
        str(results),
    ]
    subprocess.run(render, env=env, check=True, capture_output=True)
    markdown = (results / "gpu.md").read_text()
    assert "## Per-device policy, change by change" in markdown and "| 8 | + torch.compile |" in markdown
    assert "| 64 | 150 | 2,293 |" in markdown  # the first run's tables stay
    assert "against the CPU recipe's 0.6746" in markdown and "100.00% of test labels agree" in markdown
