"""The int8 variant is self-contained: it loads and predicts in a fresh virtualenv holding only the packages of its
own requirements.txt (from the package index), as a serving host that builds the model's environment does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from sentiment_flow.config import INPUT_COLUMN
from sentiment_flow.int8 import optimize
from sentiment_flow.training import train

from conftest import isolate, subprocess_env
from test_train import tiny_config

pytestmark = pytest.mark.slow  # a training, an optimize and a virtualenv installed from the package index

TEXTS = ["the food was great today", "it is okay", "this is awful", ""]
INDEX = "https://pypi.org/simple/"

# Run by the fresh virtualenv's python: neither torch nor this project may be there, and loading and predicting
# the variant must not need them.
LOAD_AND_PREDICT = """
import importlib.util, json, sys
import mlflow, pandas as pd
missing = [name for name in ("torch", "sentiment_flow") if importlib.util.find_spec(name) is None]
model = mlflow.pyfunc.load_model(sys.argv[1])
answer = model.predict(pd.DataFrame({"text": json.loads(sys.argv[2])}))
print(json.dumps({"missing": missing, "labels": answer["label"].tolist(), "scores": answer["score"].tolist()}))
"""


@pytest.fixture(scope="module")
def int8_model_dir(tiny_model_dir, tiny_data_dir, tmp_path_factory) -> Path:
    """The registered int8 variant of a freshly trained tiny model, downloaded as a local model folder."""
    root = tmp_path_factory.mktemp("int8-packaging")
    with pytest.MonkeyPatch.context() as mp:
        isolate(mp, root)
        variant = optimize(train(tiny_config(tiny_model_dir, tiny_data_dir)).model_uri)
        return Path(mlflow.artifacts.download_artifacts(variant.model_uri, dst_path=str(root / "model")))


def index_reachable() -> bool:
    try:
        with urllib.request.urlopen(INDEX, timeout=10):
            return True
    except OSError:
        return False


def fresh_virtualenv(folder: Path, requirements: Path) -> Path:
    """A virtualenv in `folder` with exactly `requirements` installed from the package index; returns its python.

    uv where it is installed (beside this python, or on PATH), else venv and pip; both keep their download cache
    across runs."""
    env = subprocess_env()
    uv = shutil.which("uv", path=env["PATH"])
    python = folder / "bin" / "python"
    if uv:
        steps = [
            [uv, "venv", "--quiet", "--python", sys.executable, str(folder)],
            [uv, "pip", "install", "--quiet", "--python", str(python), "-r", str(requirements)],
        ]
    else:
        steps = [
            [sys.executable, "-m", "venv", str(folder)],
            [str(python), "-m", "pip", "install", "--quiet", "-r", str(requirements)],
        ]
    for step in steps:
        done = subprocess.run(step, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{step[:3]} failed:\n{done.stderr[-3000:]}"
    return python


def test_the_variants_requirements_name_only_public_packages_and_no_torch(int8_model_dir):
    pins = (int8_model_dir / "requirements.txt").read_text().split()
    names = {pin.partition("==")[0].lower() for pin in pins}
    assert names == {"mlflow", "transformers", "tokenizers", "onnxruntime", "numpy", "pandas"}
    assert all("==" in pin for pin in pins), pins  # pinned as the fp32 model's requirements are


def test_the_variant_loads_and_predicts_in_a_virtualenv_with_only_its_own_requirements(int8_model_dir, tmp_path):
    if not index_reachable():
        pytest.skip(f"{INDEX} is unreachable: the virtualenv cannot be installed")
    python = fresh_virtualenv(tmp_path / "venv", int8_model_dir / "requirements.txt")
    # Nothing of this environment leaks in: no PYTHONPATH (this checkout), no VIRTUAL_ENV, no user site.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PYTHONNOUSERSITE="1", HF_HUB_OFFLINE="1", PATH=f"{python.parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(
        [str(python), "-c", LOAD_AND_PREDICT, str(int8_model_dir), json.dumps(TEXTS)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["missing"] == ["torch", "sentiment_flow"]

    expected = mlflow.pyfunc.load_model(str(int8_model_dir)).predict(pd.DataFrame({INPUT_COLUMN: TEXTS}))
    assert answer["labels"] == expected["label"].tolist()
    assert answer["scores"] == pytest.approx(expected["score"].tolist(), abs=1e-5)
