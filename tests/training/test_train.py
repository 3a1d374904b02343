import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from sentiment_flow.config import TrainConfig
from sentiment_flow.errors import UserError
from sentiment_flow.training import train

from conftest import free_port, isolate, subprocess_env
from wandb_offline import read_offline_run

HEADLINE = ("test_accuracy", "test_f1_macro", "test_f1_weighted")


def tiny_config(tiny_model_dir, tiny_data_dir, **overrides) -> TrainConfig:
    settings = {"epochs": 2, "learning_rate": "5e-3", "batch_size": 16, "max_length": 32, **overrides}
    return TrainConfig(model=str(tiny_model_dir), data=str(tiny_data_dir), **settings)


@pytest.fixture(scope="module")
def trained_module(tiny_model_dir, tiny_data_dir, tmp_path_factory):
    """One tiny training shared by the assertions below (it takes a few seconds)."""
    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        uri = isolate(mp, root)
        result = train(tiny_config(tiny_model_dir, tiny_data_dir))
        client = mlflow.MlflowClient(uri)
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        version = client.get_model_version(result.registered_model_name, result.version)
        (wandb_dir,) = (root / "wandb").glob("offline-run-*")
        wandb_run = read_offline_run(wandb_dir)
    return {"uri": uri, "result": result, "runs": runs, "version": version, "client": client, "wandb": wandb_run}


@pytest.fixture
def trained(trained_module, monkeypatch):
    """The shared training, with its store as the current tracking URI."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_module["uri"])
    mlflow.set_tracking_uri(trained_module["uri"])
    return trained_module


def test_one_training_is_exactly_one_finished_mlflow_run(trained):
    assert len(trained["runs"]) == 1
    run = trained["runs"][0]
    assert run.info.status == "FINISHED"
    assert run.info.run_id == trained["result"].run_id


def test_the_run_has_test_per_class_and_per_epoch_metrics(trained):
    run = trained["runs"][0]
    for key in HEADLINE:
        assert 0.0 <= run.data.metrics[key] <= 1.0
    for label in ("positive", "neutral", "negative"):
        for kind in ("precision", "recall", "f1"):
            assert f"test_{kind}_{label}" in run.data.metrics
    history = trained["client"].get_metric_history(run.info.run_id, "eval_f1_macro")
    assert len(history) == 2  # one evaluation per epoch
    assert len(trained["client"].get_metric_history(run.info.run_id, "loss")) >= 2


def test_the_splits_are_logged_as_datasets_whose_digest_is_their_rows(trained, tiny_data_dir):
    from sentiment_flow.data import read_split
    from sentiment_flow.evaluation import dataset

    inputs = trained["runs"][0].inputs.dataset_inputs
    contexts = {next(t.value for t in i.tags if t.key == "mlflow.data.context"): i.dataset for i in inputs}
    for split, context in {"train": "train", "valid": "validation", "test": "test"}.items():
        path = tiny_data_dir / "english" / f"{split}.csv"
        logged = contexts[context]
        assert json.loads(logged.source) == {"uri": str(path.resolve())}
        assert logged.digest == dataset(read_split(path), str(path), split).digest


def test_test_metrics_come_from_mlflow_evaluate_under_the_project_names(trained):
    run = trained["runs"][0]
    metrics = run.data.metrics
    # MLflow's own names (macro average) stand next to the names the registry and the README use.
    assert metrics["test_f1_score"] == pytest.approx(metrics["test_f1_macro"])
    assert metrics["test_accuracy_score"] == pytest.approx(metrics["test_accuracy"])
    artifacts = {a.path for a in trained["client"].list_artifacts(run.info.run_id)}
    assert {"per_class_metrics.csv", "test_confusion_matrix.png"} <= artifacts


def test_tiny_model_learns_the_synthetic_task(trained):
    # One word decides each synthetic label; a model that learned nothing scores about 1/3.
    assert trained["result"].metrics["test_f1_macro"] >= 0.6


def test_the_run_records_resolved_params_and_data_hash(trained):
    params = trained["runs"][0].data.params
    assert params["epochs"] == "2" and params["learning_rate"] == "5e-3"
    assert params["resolved_learning_rate"] == "0.005"
    assert params["resolved_registered_model_name"] == "sentiment-english"
    assert len(params["data_hash"]) == 64
    assert params["train_rows"] == "900"


def test_plots_and_report_are_artifacts(trained):
    client, run_id = trained["client"], trained["result"].run_id
    plots = {a.path for a in client.list_artifacts(run_id, "plots")}
    assert plots == {
        "plots/confusion_matrix.png",
        "plots/label_distribution.png",
        "plots/text_length_by_label.png",
        "plots/reliability_diagram.png",
    }
    report = mlflow.artifacts.load_text(f"runs:/{run_id}/classification_report.txt")
    assert "positive" in report and "macro avg" in report


def test_registered_version_is_a_transformers_flavor_model_with_signature(trained, tmp_path):
    version = trained["version"]
    path = mlflow.artifacts.download_artifacts(f"models:/{version.name}/{version.version}", dst_path=str(tmp_path))
    mlmodel = yaml.safe_load(open(f"{path}/MLmodel"))
    assert mlmodel["flavors"]["transformers"]["task"] == "text-classification"
    assert "python_function" in mlmodel["flavors"]
    assert mlmodel["signature"]["inputs"]
    requirements = open(f"{path}/requirements.txt").read()
    assert "transformers==" in requirements and "torch==" in requirements and "torchvision" not in requirements
    # The trained-with build's local tag (+cpu here) is dropped: a pin like torch==2.13.0+cpu cannot install
    # from PyPI, and the CPU/CUDA choice belongs to the serving host.
    assert "+cpu" not in requirements and "+cu" not in requirements
    config = yaml.safe_load(open(f"{path}/model/config.json"))
    assert config["id2label"] == {"0": "positive", "1": "neutral", "2": "negative"}


def test_registered_version_predicts_the_three_labels(trained):
    model = mlflow.pyfunc.load_model(trained["result"].model_uri)
    # The last text is longer than the model's 64 position embeddings: served truncated, as trained.
    texts = ["the food was great", "the day was awful", "the movie was okay", "great " * 200]
    out = model.predict(pd.DataFrame({"text": texts}))  # the signature's one column is named: a bare list is refused
    assert list(out["label"]) == ["positive", "negative", "neutral", "positive"]


def test_version_carries_lineage_tags_and_a_description(trained):
    version, run = trained["version"], trained["runs"][0]
    tags = version.tags
    assert tags["lang"] == "english"
    assert tags["data_hash"] == run.data.params["data_hash"]
    assert tags["max_length"] == "32"
    assert tags["git_commit"]
    assert tags["mlflow_run_id"] == run.info.run_id
    assert float(tags["test_f1_macro"]) == pytest.approx(run.data.metrics["test_f1_macro"], abs=1e-4)
    assert version.run_id == run.info.run_id
    assert "macro-F1" in version.description and "english" in version.description
    model = trained["client"].get_registered_model(version.name)
    assert "models:/sentiment-english@champion" in model.description


def test_logged_license_names_the_local_base_model_instead_of_a_broken_hub_link(trained, tmp_path):
    version = trained["version"]
    path = mlflow.artifacts.download_artifacts(f"models:/{version.name}/{version.version}", dst_path=str(tmp_path))
    text = Path(path, "LICENSE.txt").read_text()
    assert "huggingface.co/" not in text
    assert text.startswith(f"Fine-tuned from the local model {trained['runs'][0].data.params['model']}")


def test_logged_model_files_are_readable_by_group_and_others(trained, tmp_path):
    location = trained["client"].get_model_version_download_uri(trained["version"].name, trained["version"].version)
    logged = (
        mlflow.MlflowClient().get_logged_model(location.removeprefix("models:/"))
        if location.startswith("models:/")
        else None
    )
    root = Path((logged.artifact_location if logged else location).removeprefix("file://"))
    files = [path for path in root.rglob("*") if path.is_file()]
    assert any(path.name == "model.safetensors" for path in files)
    assert [path.name for path in files if path.stat().st_mode & 0o044 != 0o044] == []


def test_mlflow_and_wandb_runs_point_at_each_other_and_hold_the_same_metrics(trained):
    run, wb = trained["runs"][0], trained["wandb"]
    assert run.data.tags["wandb.run_id"] == wb["run_id"]
    assert run.data.tags["wandb.mode"] == "offline"
    assert wb["config"]["mlflow_run_id"] == run.info.run_id
    for key in HEADLINE:
        assert wb["summary"][key] == pytest.approx(run.data.metrics[key])
    # The Trainer's per-epoch evaluations reached W&B too, under MLflow's names.
    assert len([row for row in wb["history"] if "eval_f1_macro" in row]) == 2
    logged = {key for row in wb["history"] for key in row if not key.startswith(("_", "plots/"))}
    assert logged and logged <= set(run.data.metrics)
    # Every loss point, at MLflow's steps: the plots logged before training once advanced W&B's step past the
    # first loss step, and W&B dropped that point ("Tried to log to step 1 that is less than the current step 2").
    mlflow_steps = [m.step for m in trained["client"].get_metric_history(run.info.run_id, "loss")]
    assert sorted(row["_step"] for row in wb["history"] if "loss" in row) == sorted(mlflow_steps)
    assert wb["exit_code"] == 0


def test_calibration_is_measured_on_the_test_split_in_mlflow_and_wandb(trained):
    run, wb = trained["runs"][0], trained["wandb"]
    for key in ("test_ece", "test_ece_uncalibrated", "temperature"):
        assert wb["summary"][key] == pytest.approx(run.data.metrics[key])
    assert run.data.metrics["temperature"] > 0
    assert 0 <= run.data.metrics["test_ece"] <= 1
    # The calibrated test split's probabilities, as every scoring run keeps them: monitor's baseline.
    stats = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/probability_stats.json")
    assert sum(stats["confidence_counts"]) == int(run.data.params["test_rows"])


def test_mlflow_and_wandb_runs_carry_the_same_params_typed_in_wandb(trained):
    params, config = trained["runs"][0].data.params, trained["wandb"]["config"]
    # Training's params in both, and no TrainingArguments dump (per_device_train_batch_size, ...) in W&B.
    # Exactly the same keys: MLflow logs the model's model_config as params itself, so a model_config key
    # training did not declare (a stray `truncation`) would be in MLflow only.
    shared = set(config) - {"mlflow_run_id", "mlflow_experiment_id", "_wandb"}
    assert shared == set(params) and len(shared) == 22  # 13 config fields, 5 resolved, 3 row counts, truncation
    assert {key: str(config[key]) for key in shared} == params
    assert config["epochs"] == 2 and config["resolved_learning_rate"] == 0.005 and config["train_rows"] == 900
    assert config["truncation"] is True and params["max_length"] == "32"  # the model_config it is served with
    assert config["learning_rate"] == "5e-3"


@pytest.mark.slow  # a few seconds: a subprocess or a training
def test_disabled_wandb_is_recorded_as_disabled_not_as_a_made_up_run_path(tiny_model_dir, tiny_data_dir, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    result = train(tiny_config(tiny_model_dir, tiny_data_dir, epochs=1))
    tags = mlflow.get_run(result.run_id).data.tags
    assert result.wandb_run_path == tags["wandb.run_path"] == tags["wandb.mode"] == "disabled"
    assert "wandb.run_id" not in tags
    version = mlflow.MlflowClient().get_model_version(result.registered_model_name, result.version)
    assert version.tags["wandb_run_path"] == "disabled"


@pytest.mark.slow  # a few seconds: a subprocess or a training
def test_no_secret_reaches_params_tags_or_wandb_config(tiny_model_dir, tiny_data_dir, monkeypatch):
    secret = "sk-test-secret-value-1234567890"
    monkeypatch.setenv("WANDB_API_KEY", secret)
    monkeypatch.setenv("HF_TOKEN", secret)
    result = train(tiny_config(tiny_model_dir, tiny_data_dir, epochs=1))
    run = mlflow.get_run(result.run_id)
    assert secret not in str(run.data.params) + str(run.data.tags)
    (wandb_dir,) = (Path.cwd() / "wandb").glob("offline-run-*")
    assert secret not in str(read_offline_run(wandb_dir)["config"])


def test_bad_input_stops_before_any_run_is_created(tiny_model_dir):
    with pytest.raises(UserError, match="does not exist"):
        train(TrainConfig(model=str(tiny_model_dir), data="./missing"))
    assert mlflow.search_runs(search_all_experiments=True).empty


def test_a_crash_during_training_leaves_the_run_failed_and_registers_nothing(
    tiny_model_dir, tiny_data_dir, monkeypatch
):
    import transformers

    def explode(self, *args, **kwargs):
        raise RuntimeError("simulated out-of-memory")

    monkeypatch.setattr(transformers.Trainer, "train", explode)
    with pytest.raises(RuntimeError, match="simulated"):
        train(tiny_config(tiny_model_dir, tiny_data_dir))
    runs = mlflow.search_runs(search_all_experiments=True)
    assert list(runs["status"]) == ["FAILED"]
    assert mlflow.MlflowClient().search_registered_models() == []


def test_max_length_beyond_the_model_limit_is_refused_before_any_run(tiny_model_dir, tiny_data_dir):
    with pytest.raises(UserError, match="exceeds the 64-token limit"):
        train(tiny_config(tiny_model_dir, tiny_data_dir, max_length=100000))
    assert mlflow.search_runs(search_all_experiments=True).empty


@pytest.mark.slow  # a few seconds: a subprocess or a training
def test_a_training_stopped_while_registering_leaves_no_version_and_a_killed_run(
    tiny_model_dir, tiny_data_dir, monkeypatch
):
    # As a SIGTERM arriving between creating the version and describing it (the CLI's handler raises SystemExit).
    def stopped(self, *args, **kwargs):
        raise SystemExit(143)

    monkeypatch.setattr(mlflow.MlflowClient, "update_model_version", stopped)
    with pytest.raises(SystemExit):
        train(tiny_config(tiny_model_dir, tiny_data_dir, epochs=1))
    client = mlflow.MlflowClient()
    assert client.search_model_versions("name = 'sentiment-english'") == []
    assert list(mlflow.search_runs(search_all_experiments=True)["status"]) == ["KILLED"]


def cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sentiment_flow", *args],
        cwd=cwd,
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
@pytest.mark.parametrize("command", [["train"], ["status", "sentiment-english"]])
def test_an_unreachable_server_fails_fast_in_one_line_without_its_password(
    command, tiny_model_dir, tiny_data_dir, tmp_path
):
    uri = f"http://alice:hunter2pw@127.0.0.1:{free_port()}"  # nothing listens there
    if command == ["train"]:
        command += ["--model", str(tiny_model_dir), "--data", str(tiny_data_dir)]
    start = time.monotonic()
    proc = cli(*command, cwd=tmp_path, MLFLOW_TRACKING_URI=uri)
    assert time.monotonic() - start < 15
    assert proc.returncode == 2
    output = proc.stdout + proc.stderr
    assert "hunter2pw" not in output and "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    # The CLI moved alice and her password into MLFLOW_TRACKING_USERNAME/PASSWORD: the URI named is bare.
    assert errors == [
        f"Error: Cannot reach the MLflow tracking server at http://{uri.rpartition('@')[2]}. "
        "Start it, or point MLFLOW_TRACKING_URI at a reachable one (MLFLOW_HTTP_REQUEST_MAX_RETRIES "
        "and MLFLOW_HTTP_REQUEST_TIMEOUT wait longer)."
    ]


@pytest.mark.slow  # a few seconds: a subprocess or a training
def test_without_mlflow_tracking_uri_the_store_is_mlflow_db_even_beside_an_mlruns_folder(tmp_path, monkeypatch):
    # MLflow itself keeps using ./mlruns when it holds experiments (and MLflow 3.1 always did).
    (tmp_path / "mlruns" / "0").mkdir(parents=True)
    (tmp_path / "mlruns" / "0" / "meta.yaml").write_text("experiment_id: '0'\nname: Default\nlifecycle_stage: active\n")
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run(
        [sys.executable, "-m", "sentiment_flow", "status", "nothing"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "does not exist in sqlite:///mlflow.db" in proc.stderr
    assert (tmp_path / "mlflow.db").is_file()


SECRETS = {
    "WANDB_API_KEY": "sentinel-wandb-4f1c9a",
    "HF_TOKEN": "sentinel-hf-8d2e7b",
    "MLFLOW_TRACKING_PASSWORD": "sentinel-mlflow-3a6c5e",
}


@pytest.mark.slow
def test_no_secret_reaches_the_store_artifacts_wandb_or_logs(tiny_model_dir, tiny_data_dir, tmp_path):
    env = {**SECRETS, "WANDB_MODE": "offline"}
    inputs = tmp_path / "in.csv"
    inputs.write_text("text\nthe food was great\nthe day was awful\n")
    steps = [
        [
            "-v",
            "train",
            "--model",
            str(tiny_model_dir),
            "--data",
            str(tiny_data_dir),
            "--epochs",
            "1",
            "--learning-rate",
            "5e-3",
            "--max-length",
            "32",
        ],
        ["-v", "promote", "sentiment-english", "--version", "1", "--alias", "champion", "--min-f1-macro", "0"],
        ["-v", "copy", "models:/sentiment-english@champion", "sentiment-english-prod"],
        ["-v", "score", "models:/sentiment-english-prod/1", str(inputs), str(tmp_path / "out.csv")],
    ]
    logs = []
    for step in steps:
        proc = cli(*step, cwd=tmp_path, **env)
        logs.append(proc.stdout + proc.stderr)
        assert proc.returncode == 0, logs[-1][-3000:]
    assert (tmp_path / "mlflow.db").is_file() and list((tmp_path / "wandb").glob("offline-run-*"))

    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    for secret in SECRETS.values():
        assert not any(secret in log for log in logs)
        hits = [path for path in files if secret.encode() in path.read_bytes()]
        assert hits == []
