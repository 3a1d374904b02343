"""The one module that touches MLflow runs and Weights & Biases: one training = one MLflow run + one W&B run."""

from __future__ import annotations

import logging
import netrc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import mlflow
from transformers import TrainerCallback

log = logging.getLogger(__name__)

WANDB_PROJECT = "sentiment-flow"
MODEL_ARTIFACT = "model"
INPUT_COLUMN = "text"  # the signature's one input column: what serving payloads name


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


@contextmanager
def tracked_run(params: dict[str, str], run_name: str, tags: dict[str, str]) -> Iterator[TrackedRun]:
    """Start (or, under `mlflow run`, resume) the MLflow run and a W&B run that point at each other.

    An exception inside marks both runs failed; MLflow's context manager records FAILED.
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
            mode=mode,
            config={**params, "mlflow_run_id": run_id, "mlflow_experiment_id": run.info.experiment_id},
            tags=[tags.get("lang", "")],
        )
        mlflow.set_tags({"wandb.run_id": wb.id, "wandb.run_path": wb.path, "wandb.mode": mode})
        if wb.url:
            mlflow.set_tag("wandb.url", wb.url)
        exit_code = 1
        try:
            yield TrackedRun(mlflow_run_id=run_id, wandb_run_path=wb.path, wandb_mode=mode)
            exit_code = 0
        finally:
            wb.finish(exit_code=exit_code)
    if mode == "offline":
        log.info("W&B run saved offline in %s; upload it with: wandb sync %s", wb.dir, os.path.dirname(wb.dir))


@contextmanager
def ending_project_run() -> Iterator[None]:
    """Under `mlflow run` (MLFLOW_RUN_ID set), end its run FINISHED, FAILED, or KILLED (an interrupt) with the block.

    `mlflow run` marks the run itself only while it lives: killed by SIGTERM, it leaves the run RUNNING.
    A SIGTERM handler that exits (as `sentiment-flow score`'s does) ends it KILLED, as Ctrl-C does (though
    after Ctrl-C `mlflow run` 3.x overwrites KILLED with FAILED: its is_terminated check compares a status
    name with status numbers).
    """
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        yield
        return
    status = "FAILED"
    try:
        yield
        status = "FINISHED"
    except (KeyboardInterrupt, SystemExit):
        status = "KILLED"
        raise
    finally:
        mlflow.MlflowClient().set_terminated(run_id, status)


class MlflowMetricsCallback(TrainerCallback):
    """Forwards the Trainer's logs to the active MLflow run as step metrics.

    transformers' own MLflowCallback also logs ~150 TrainingArguments as params (clashing with the
    MLproject's, which MLflow refuses to change) and starts/ends runs of its own; we own the run.
    """

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            numeric = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float))}
            mlflow.log_metrics(numeric, step=state.global_step)


def log_metrics(metrics: dict[str, float]) -> None:
    """Final metrics to the MLflow run and the W&B run summary."""
    import wandb

    mlflow.log_metrics(metrics)
    if wandb.run is not None:
        wandb.run.summary.update(metrics)


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
    extra_requirements: tuple[str, ...] = (),
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
        # Serve as trained: truncate to the training max_length (or the tokenizer's limit), so a long
        # text is classified from its start instead of overflowing the position embeddings.
        model_config={"truncation": True, **({"max_length": max_length} if max_length else {})},
        input_example=pd.DataFrame(
            {INPUT_COLUMN: ["What a great day!", "The meeting is at noon.", "This is the worst service ever."]}
        ),
        pip_requirements=pip_requirements(extra_requirements),
        registered_model_name=registered_model_name,
    )


def describe_version(name: str, version: str, tags: dict[str, str], description: str) -> None:
    """Tags and a description on a registered model version."""
    client = mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.update_model_version(name, version, description=description)
