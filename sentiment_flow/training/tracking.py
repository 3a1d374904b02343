"""What a training records: one MLflow run (started by runs.run) and one W&B run beside it, metrics and plots in
both, and the model as MLflow's transformers flavor."""

from __future__ import annotations

import logging
import netrc
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow

from sentiment_flow import runs
from sentiment_flow.config import CANARY_TEXTS, INPUT_COLUMN, MODEL_ARTIFACT

log = logging.getLogger(__name__)

WANDB_PROJECT = "sentiment-flow"
# The logged model's model_config beside max_length: serve as trained, truncating a long text to max_length
# instead of overflowing the position embeddings. MLflow logs a model_config as run params, so training
# declares it among its own params too: both trackers carry it, and the run has no param training did not set.
SERVING_CONFIG = {"truncation": True}


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
def tracked_run(
    params: dict[str, str | int | float],
    run_name: str,
    tags: dict[str, str],
    nested: bool = False,
    wandb_group: str | None = None,
) -> Iterator[TrackedRun]:
    """Start (or, under `mlflow run`, resume) the MLflow run and a W&B run that point at each other; `nested`: the
    MLflow run is a child of the active one, `wandb_group`: the W&B run's group.

    Both get the same params: MLflow stores them as text, W&B keeps numbers as numbers. An exception inside
    marks both runs failed, runs.Stopped neither; a SIGTERM or Ctrl-C ends the MLflow run KILLED (runs.run).
    """
    import wandb

    with runs.run(run_name, params=params, tags=tags, nested=nested) as run:
        run_id = run.info.run_id
        mode = wandb_mode()
        wb = wandb.init(
            project=os.environ.get("WANDB_PROJECT", WANDB_PROJECT),
            name=run.info.run_name,
            job_type="train",
            group=wandb_group,
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
            yield TrackedRun(mlflow_run_id=run_id, wandb_run_path=path, wandb_mode=mode)
            exit_code = 0
        except runs.Stopped:
            exit_code = 0
            raise
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
        # Not committed: the image joins the current step, and the Trainer's next log (at its own global step)
        # commits it. A committed log advanced W&B's step, and the Trainer's first loss point, at a smaller step,
        # was dropped.
        wandb.run.log({f"plots/{filename.rsplit('.', 1)[0]}": wandb.Image(figure)}, commit=False)


def log_text(text: str, path: str) -> None:
    mlflow.log_text(text, path)


def log_dict(data: dict, path: str) -> None:
    mlflow.log_dict(data, path)


def log_model(
    model,
    tokenizer,
    registered_model_name: str | None,
    max_length: int | None = None,
    extra_requirements: tuple[str, ...] = (),
    batch_size: int | None = None,
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
            **SERVING_CONFIG,
            **({"batch_size": batch_size} if batch_size else {}),
            **({"max_length": max_length} if max_length else {}),
        },
        input_example=pd.DataFrame({INPUT_COLUMN: list(CANARY_TEXTS[:3])}),  # the short ones
        pip_requirements=runs.pip_requirements(extra_requirements),
        registered_model_name=registered_model_name,
    )


def replace_license(info, text: str) -> None:
    """Overwrite the LICENSE.txt MLflow wrote into a logged model: for a model that is no Hub repository it
    points at https://huggingface.co/<local path>."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "LICENSE.txt")
        path.write_text(text, encoding="utf-8")
        mlflow.MlflowClient().log_model_artifact(info.model_id, str(path))
