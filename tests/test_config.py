import dataclasses
import hashlib
import re

import mlflow
import pytest
import yaml
from click.testing import CliRunner

from sentiment_flow.cli import cli
from sentiment_flow.config import MODEL_NAME_MAX_LENGTH, TrainConfig
from sentiment_flow.errors import UserError

from conftest import REPO_ROOT


def mlproject_params(entry_point: str) -> dict:
    return yaml.safe_load((REPO_ROOT / "MLproject").read_text())["entry_points"][entry_point]["parameters"]


def test_mlproject_main_parameters_are_exactly_the_config_fields_with_the_same_defaults():
    params = mlproject_params("main")
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    assert set(params) == set(fields)
    for name, default in fields.items():
        assert type(default)(params[name]["default"]) == default, name


def test_mlproject_main_command_passes_every_parameter():
    command = yaml.safe_load((REPO_ROOT / "MLproject").read_text())["entry_points"]["main"]["command"]
    for f in dataclasses.fields(TrainConfig):
        assert f"--{f.name.replace('_', '-')} {{{f.name}}}" in command


def test_cli_train_defaults_are_the_config_defaults():
    train = cli.commands["train"]
    defaults = {p.name: p.default for p in train.params if p.name != "help"}
    assert defaults == {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def test_auto_model_is_chosen_per_language():
    assert TrainConfig(lang="english").model_name == "distilbert-base-uncased"
    assert TrainConfig(lang="japanese").model_name == "tohoku-nlp/bert-base-japanese-v3"
    assert TrainConfig(lang="german").model_name == "distilbert-base-multilingual-cased"
    assert TrainConfig(model="some/model").model_name == "some/model"


def test_auto_learning_rate_depends_on_the_model():
    assert TrainConfig().lr == 2e-5
    assert TrainConfig(model="minilm").lr == 1e-4
    assert TrainConfig(model="minilm", learning_rate="3e-5").lr == 3e-5


def test_registered_model_name_defaults_to_sentiment_lang():
    assert TrainConfig(lang="french").registry_name == "sentiment-french"
    assert TrainConfig(registered_model_name="mine").registry_name == "mine"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lang": "klingon"}, "Unknown lang 'klingon'. Use one of: english"),
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"learning_rate": "fast"}, "learning_rate must be 'auto' or a number"),
        ({"learning_rate": "2"}, "learning_rate must be 'auto' or a number"),
        ({"max_train_samples": -1}, "max_train_samples must be 0"),
        ({"registered_model_name": "a/b"}, "registered_model_name 'a/b' is not a valid MLflow model name"),
        ({"registered_model_name": " "}, "registered_model_name ' ' is not a valid MLflow model name"),
        ({"registered_model_name": "..models"}, "is not a valid MLflow model name: use a name that is not '.'"),
        # sqlite stores it; PostgreSQL refused it only when registering, after the whole training.
        (
            {"registered_model_name": "m" * 300},
            f"registered_model_name '{'m' * 57}...' is not a valid MLflow model name: use at most 256 characters "
            "(MLflow's SQL stores hold no more), not 300, e.g. sentiment-english.",
        ),
    ],
)
def test_bad_config_values_are_refused_with_the_fix(kwargs, message):
    with pytest.raises(UserError, match=re.escape(message)):
        TrainConfig(**kwargs)


def test_a_registered_model_name_of_256_characters_is_accepted():
    assert TrainConfig(registered_model_name="m" * 256).registry_name == "m" * 256


def test_the_name_limit_is_the_length_of_mlflows_registered_models_name_column():
    from mlflow.store.model_registry.dbmodels.models import SqlRegisteredModel

    assert SqlRegisteredModel.__table__.c.name.type.length == MODEL_NAME_MAX_LENGTH


def test_cli_prints_a_user_error_without_traceback_and_exits_2():
    result = CliRunner().invoke(cli, ["train", "--lang", "klingon"])
    assert result.exit_code == 2
    assert "Unknown lang 'klingon'" in result.output
    assert "Traceback" not in result.output


def test_cli_error_text_keeps_its_square_brackets(tiny_data_dir):
    # rich reads "[offline]" as markup: unescaped, the hint printed `pip install -e '.'`.
    result = CliRunner().invoke(cli, ["train", "--model", "distilbert-base-uncased", "--data", str(tiny_data_dir)])
    assert result.exit_code == 2
    assert "(pip install -e '.[offline]')" in result.output


def test_cli_integer_options_take_mlprojects_integral_floats_and_refuse_fractions():
    # `mlflow run -P epochs=1` arrives as 1.0: MLproject has no integer type.
    accepted = CliRunner().invoke(cli, ["train", "--epochs", "1.0", "--batch-size", "16.0", "--lang", "klingon"])
    assert accepted.exit_code == 2 and "Unknown lang 'klingon'" in accepted.output
    refused = CliRunner().invoke(cli, ["train", "--epochs", "2.5"])
    assert refused.exit_code == 2
    assert "Error: Invalid value for '--epochs': '2.5' is not a whole number" in refused.output
    assert "Traceback" not in refused.output


def test_conda_env_installs_this_project_so_pyproject_stays_the_one_dependency_list():
    text = (REPO_ROOT / "conda.yaml").read_text()
    env = yaml.safe_load(text)
    pip_section = next(dep for dep in env["dependencies"] if isinstance(dep, dict))["pip"]
    assert pip_section == [".[offline]"]
    assert any(str(dep).startswith("python=") for dep in env["dependencies"])


def test_conda_yaml_changes_when_the_dependencies_do():
    # MLflow reuses a conda env while conda.yaml's text is unchanged; ".[offline]" alone never changes.
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    dependencies = project["dependencies"] + project["optional-dependencies"]["offline"]
    digest = hashlib.sha256("\n".join(dependencies).encode()).hexdigest()[:16]
    assert f"# pyproject dependencies sha256: {digest}\n" in (REPO_ROOT / "conda.yaml").read_text(), (
        f"pyproject.toml's dependencies changed: set conda.yaml's digest line to {digest}"
    )


def test_the_mlflow_floor_is_the_first_release_whose_default_store_is_mlflow_db():
    # `mlflow run` picks its store before this project's code runs: from MLflow 3.7 its default is the
    # sqlite:///mlflow.db the README promises (3.1 to 3.6 wrote ./mlruns). tests/test_readme.py runs it so.
    from packaging.requirements import Requirement
    from packaging.version import Version

    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    mlflow_pins = [Requirement(dep) for dep in project["dependencies"] if dep.startswith("mlflow")]
    assert [min(Version(s.version) for s in pin.specifier if s.operator == ">=") for pin in mlflow_pins] == [
        Version("3.7")
    ]


@pytest.mark.slow
def test_the_wheel_carries_the_spdx_license_and_the_license_file(tmp_path):
    # setuptools < 77 cannot build pyproject's SPDX `license` string at all (the build-system floor says 77).
    import shutil
    import subprocess
    import sys
    import zipfile

    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    shutil.copytree(
        REPO_ROOT / "sentiment_flow", tmp_path / "sentiment_flow", ignore=shutil.ignore_patterns("__pycache__")
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", "dist", "."],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("sentiment_flow-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


@pytest.mark.slow
def test_names_derived_from_a_registered_model_are_held_to_the_same_limit(register_tiny_model):
    from sentiment_flow import registry
    from sentiment_flow.int8 import optimize

    name = "m" * (MODEL_NAME_MAX_LENGTH - 2)  # sqlite stores it; NAME-int8 would be 259 characters
    register_tiny_model(name=name)
    with pytest.raises(UserError, match="use at most 256 characters .* not 259; copy 'mmm"):
        optimize(f"models:/{name}/1")
    with pytest.raises(UserError, match="use at most 256 characters .* not 257"):
        registry.copy(f"models:/{name}/1", "c" * 257)
    assert [m.name for m in mlflow.MlflowClient().search_registered_models()] == [name]
