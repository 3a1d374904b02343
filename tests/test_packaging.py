"""Packaging: the wheel ships every subpackage."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO_ROOT

# What a wheel build reads from the checkout; copying only these keeps a stale build/ folder (which setuptools
# reuses) and the developer's venv, store and runs out of the build.
BUILD_INPUTS = ["pyproject.toml", "README.md", "LICENSE", "sentiment_flow"]


def build_wheel(source: Path, out: Path) -> Path:
    """Build the project in `source` into `out` with pip (no dependencies); returns the wheel's path."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)],
        check=True, capture_output=True, text=True,
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

