"""The one module that touches MLflow runs and Weights & Biases: one training = one MLflow run + one W&B run."""

from __future__ import annotations

import logging
import netrc
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from urllib.parse import urlsplit

import mlflow
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from sqlalchemy.engine import make_url

from sentiment_flow.config import CANARY_TEXTS
from sentiment_flow.errors import (
    SERVER_FAILED,
    UserError,
    one_line,
    redact_uri,
    server_failed,
)

log = logging.getLogger(__name__)

WANDB_PROJECT = "sentiment-flow"
MODEL_ARTIFACT = "model"
INPUT_COLUMN = "text"  # the signature's one input column: what serving payloads name
# The logged model's model_config beside max_length: serve as trained, truncating a long text to max_length
# instead of overflowing the position embeddings. MLflow logs a model_config as run params, so training
# declares it among its own params too: both trackers carry it, and the run has no param training did not set.
SERVING_CONFIG = {"truncation": True}
# The README's store: explicit, because MLflow's own default depends on its version and on whether ./mlruns exists.
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# MLflow retries an unreachable server for about 4 minutes (7 retries, backoff factor 2, 120 s timeout)
# before it fails with a traceback. These fail within seconds; a user may set any of them higher.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


@dataclass(frozen=True)
class TrackedRun:
    """Handles of the two runs that record one training."""

    mlflow_run_id: str
    wandb_run_path: str
    wandb_mode: str


def wandb_mode() -> str:
    """WANDB_MODE if set, else online when an API key is configured, else offline (sync later)."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (FileNotFoundError, netrc.NetrcParseError):
        pass
    return "offline"


def configure_store() -> None:
    """The tracking URI (sqlite:///mlflow.db unless MLFLOW_TRACKING_URI is set) and quick-failing HTTP defaults."""
    os.environ.setdefault("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


def redacted_uri(uri: str | None = None) -> str:
    """The tracking URI (or `uri`) with any password replaced by ***: safe to print."""
    return redact_uri(uri or mlflow.get_tracking_uri())


def store_error(exc: MlflowException) -> UserError:
    """A one-line UserError for an MLflow store failure, with credentials redacted from the URI and the message."""
    uri = mlflow.get_tracking_uri()
    message = one_line(exc)
    status = next((code for text, code in SERVER_FAILED.items() if text in message), None)
    if message.startswith("API request to") and status:
        return UserError(server_failed(redacted_uri(uri), status))
    if message.startswith("API request to"):  # the transport failed: requests' text repeats the URL
        return UserError(
            f"Cannot reach the MLflow tracking server at {redacted_uri(uri)}. Start it, or point "
            "MLFLOW_TRACKING_URI at a reachable one (MLFLOW_HTTP_REQUEST_MAX_RETRIES and "
            "MLFLOW_HTTP_REQUEST_TIMEOUT wait longer)."
        )
    secret = urlsplit(uri).password
    if secret:
        message = message.replace(secret, "***")
    return UserError(f"The MLflow store at {redacted_uri(uri)} failed: {message}.")


def check_store() -> None:
    """One cheap request to the tracking store, so an unreachable server fails before minutes of work.

    A local sqlite store is opened under an exclusive lock on its folder: MLflow creates and migrates the tables
    when a process first opens the store, and two jobs starting at once on a new store both did, the second
    failing with a traceback (`duplicate column name: step`). The lock makes the second wait for the first.
    """
    uri = mlflow.get_tracking_uri()
    database = make_url(uri).database if uri.startswith("sqlite:") else None
    if not database or database == ":memory:" or not Path(database).resolve().parent.is_dir():
        mlflow.MlflowClient().search_experiments(max_results=1)
        return
    import fcntl

    folder = os.open(Path(database).resolve().parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        mlflow.MlflowClient().search_experiments(max_results=1)
    finally:
        os.close(folder)  # releases the lock


def end_project_run(status: str) -> None:
    """End the run `mlflow run` started for this process (MLFLOW_RUN_ID) with `status` if it is still running.

    `mlflow run` marks it FAILED itself, but not when it was killed too: then nobody else ends it.
    """
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    client = mlflow.MlflowClient()
    try:
        if client.get_run(run_id).info.status == RunStatus.to_string(RunStatus.RUNNING):
            client.set_terminated(run_id, status)
    except mlflow.exceptions.MlflowException as exc:  # the store itself may be what failed: report that instead
        log.debug("could not end run %s %s: %s", run_id, status, exc)


@contextmanager
def killed_when_stopped() -> Iterator[None]:
    """Inside `mlflow.start_run()`: a SIGTERM or Ctrl-C (SystemExit, KeyboardInterrupt) ends the active run KILLED,
    where MLflow's context manager would record FAILED; other exceptions are left to it."""
    try:
        yield
    except (SystemExit, KeyboardInterrupt):
        mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
        raise


@contextmanager
def tracked_run(params: dict[str, str | int | float], run_name: str, tags: dict[str, str]) -> Iterator[TrackedRun]:
    """Start (or, under `mlflow run`, resume) the MLflow run and a W&B run that point at each other.

    Both get the same params: MLflow stores them as text, W&B keeps numbers as numbers. An exception inside
    marks both runs failed; MLflow's context manager records FAILED. A SIGTERM or Ctrl-C (SystemExit,
    KeyboardInterrupt) ends the MLflow run KILLED instead.
    """
    import wandb

    with mlflow.start_run(run_name=run_name) as run:
        run_id = run.info.run_id
        # `mlflow run` already logged the MLproject parameters as typed (e.g. "1e-4"); MLflow refuses
        # to change a param, so only the ones it did not log are added.
        logged = mlflow.get_run(run_id).data.params
        mlflow.log_params({k: v for k, v in params.items() if k not in logged})
        mlflow.set_tags(tags)
        mode = wandb_mode()
        wb = wandb.init(
            project=os.environ.get("WANDB_PROJECT", WANDB_PROJECT),
            name=run.info.run_name,
            job_type="train",
            mode=mode,  # type: ignore[arg-type]  # WANDB_MODE as the user set it: wandb checks it
            config={**params, "mlflow_run_id": run_id, "mlflow_experiment_id": run.info.experiment_id},
            tags=[tags.get("lang", "")],
        )
        # A disabled W&B run still has a made-up id and path ("dummy/..."): record that it is disabled instead.
        path = "disabled" if mode == "disabled" else wb.path
        mlflow.set_tags({"wandb.run_path": path, "wandb.mode": mode})
        if mode != "disabled":
            mlflow.set_tag("wandb.run_id", wb.id)
        if wb.url:
            mlflow.set_tag("wandb.url", wb.url)
        exit_code = 1
        try:
            with killed_when_stopped():
                yield TrackedRun(mlflow_run_id=run_id, wandb_run_path=path, wandb_mode=mode)
            exit_code = 0
        finally:
            wb.finish(exit_code=exit_code)
    if mode == "offline":
        log.info("W&B run saved offline in %s; upload it with: wandb sync %s", wb.dir, os.path.dirname(wb.dir))


def metrics_callback():
    """A Trainer callback that logs the Trainer's logs (loss, learning_rate, eval_f1_macro, ...) to the MLflow and
    the W&B run, under the same names and steps.

    transformers' own MLflowCallback and WandbCallback are off (report_to="none"): the first logs ~150
    TrainingArguments as params (clashing with the MLproject's, which MLflow refuses to change) and starts
    runs of its own; the second dumps the same ~167 keys into the W&B config and renames every metric
    (eval_f1_macro becomes eval/f1_macro). Built on call: importing transformers' trainer imports torch, which
    scoring an int8 variant does not need (about 2 s of every such job).
    """
    from transformers import TrainerCallback

    class MetricsCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            import wandb

            if state.is_world_process_zero and logs:
                numeric = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float))}
                mlflow.log_metrics(numeric, step=state.global_step)
                if wandb.run is not None:
                    wandb.run.log(numeric, step=state.global_step)

    return MetricsCallback()


def log_metrics(metrics: dict[str, float]) -> None:
    """Final metrics to the MLflow run and the W&B run summary."""
    import wandb

    mlflow.log_metrics(metrics)
    if wandb.run is not None:
        wandb.run.summary.update(metrics)


def log_datasets(splits: dict, sources: dict[str, str]) -> None:
    """Each split as an mlflow.data dataset input of the active run (digest, source, context train/validation/test):
    `promote` reads the test one back to evaluate a candidate and the champion on the same rows."""
    from sentiment_flow.evaluation import CONTEXTS, dataset, log_input

    for split, frame in splits.items():
        log_input(dataset(frame, sources[split], split), context=CONTEXTS[split])


def log_test_evaluation(y_true, y_pred, source: str) -> dict[str, float]:
    """The test predictions evaluated by `mlflow.models.evaluate` (its metrics, per-class table and confusion
    matrix in the run); returns them as test_<name>, also logged to both runs."""
    import pandas as pd
    from mlflow.data.pandas_dataset import from_pandas  # mlflow.data.from_pandas, its attribute set at run time

    from sentiment_flow.evaluation import PREDICTION, TARGET, evaluate

    rows = pd.DataFrame({TARGET: y_true, PREDICTION: y_pred})
    data = from_pandas(rows, source=source, targets=TARGET, predictions=PREDICTION, name="test-predictions")
    metrics = {f"test_{key}": value for key, value in evaluate(data, prefix="test_").items()}
    log_metrics(metrics)
    return metrics


def log_figure(figure, filename: str) -> None:
    """A matplotlib figure as an MLflow artifact (plots/<filename>) and a W&B image."""
    import wandb

    mlflow.log_figure(figure, f"plots/{filename}")
    if wandb.run is not None:
        wandb.run.log({f"plots/{filename.rsplit('.', 1)[0]}": wandb.Image(figure)})


def log_text(text: str, path: str) -> None:
    mlflow.log_text(text, path)


def log_dict(data: dict, path: str) -> None:
    mlflow.log_dict(data, path)


def pip_requirements(extra: tuple[str, ...] = ()) -> list[str]:
    """Exact pins for serving; passed explicitly because MLflow's inference tries to pin torchvision."""
    pins = []
    for package in ("mlflow", "transformers", "torch", "tokenizers", "accelerate", *extra):
        try:
            pins.append(f"{package}=={version(package).split('+')[0]}")  # drop local tags like +cpu
        except PackageNotFoundError:
            log.warning("%s is not installed; left out of the model's pip requirements", package)
    return pins


def log_model(
    model, tokenizer, registered_model_name: str | None, max_length: int | None = None,
    extra_requirements: tuple[str, ...] = (), batch_size: int | None = None,
):
    """Log a transformers-flavor text-classification model in the active run; register it when named."""
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    signature = ModelSignature(
        # Named, so a payload naming another column is refused by schema enforcement (400) and MLflow hands
        # the pipeline {"text": ...} rows. With an unnamed column it hands bare strings to its
        # text-classification input parser, which runs ast.literal_eval on each: "42" became the int 42,
        # a long unpunctuated text a MemoryError.
        inputs=Schema([ColSpec("string", INPUT_COLUMN)]),
        outputs=Schema([ColSpec("string", "label"), ColSpec("double", "score")]),
    )
    return mlflow.transformers.log_model(
        transformers_model={"model": model, "tokenizer": tokenizer},
        name=MODEL_ARTIFACT,
        task="text-classification",
        signature=signature,
        # Serve as trained: truncate to the training max_length (or the tokenizer's limit), so a long text is
        # classified from its start instead of overflowing the position embeddings; and in batches of the training
        # batch size: the pipeline's default of one text per forward pass made `mlflow models serve` and `predict`
        # several times slower (benchmarks/results/int8.md). The same batch_size as the run's param, because MLflow
        # logs a model_config as run params and a different value would be refused.
        model_config={
            **SERVING_CONFIG, **({"batch_size": batch_size} if batch_size else {}),
            **({"max_length": max_length} if max_length else {}),
        },
        input_example=pd.DataFrame({INPUT_COLUMN: list(CANARY_TEXTS[:3])}),  # the short ones
        pip_requirements=pip_requirements(extra_requirements),
        registered_model_name=registered_model_name,
    )


def share_model_files(info) -> None:
    """Make a model logged to a local artifact store readable by the group and others, like its other files.

    safetensors writes the weights 0600, and a local store keeps that mode when it copies them in (a tracking
    server writes uploads with its own umask): another user of a shared store could not load the model.
    """
    from mlflow.utils.file_utils import local_file_uri_to_path

    location = mlflow.MlflowClient().get_logged_model(info.model_id).artifact_location
    if urlsplit(location).scheme not in ("", "file"):
        return
    for path in Path(local_file_uri_to_path(location)).rglob("*"):
        path.chmod(path.stat().st_mode | (0o055 if path.is_dir() else 0o044))


def replace_license(info, text: str) -> None:
    """Overwrite the LICENSE.txt MLflow wrote into a logged model: for a model that is no Hub repository it
    points at https://huggingface.co/<local path>."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "LICENSE.txt")
        path.write_text(text, encoding="utf-8")
        mlflow.MlflowClient().log_model_artifact(info.model_id, str(path))


def register_version(
    model_uri: str, name: str, tags: dict[str, str], description: str, model_description: str
) -> str:
    """Register `model_uri` as a new version of `name`, created with its tags; returns the version.

    A new registered model gets `model_description`. If the version's description cannot be written (or the
    process is stopped meanwhile) the version is deleted.
    """
    version = str(mlflow.register_model(model_uri, name, tags=tags).version)
    client = mlflow.MlflowClient()
    try:
        if not client.get_registered_model(name).description:
            client.update_registered_model(name, description=model_description)
        client.update_model_version(name, version, description=description)
    except BaseException:
        delete_version(name, version)
        raise
    return version


def delete_version(name: str, version: str) -> None:
    """Delete a version whose training did not finish; log (never raise) if that fails too."""
    try:
        mlflow.MlflowClient().delete_model_version(name, version)
        log.warning("Deleted %s version %s: the training did not finish", name, version)
    except Exception:  # the error that stopped training is the one to raise
        log.exception("Could not delete %s version %s; its run is not FINISHED, so promote refuses it", name, version)
