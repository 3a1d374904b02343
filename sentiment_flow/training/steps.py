"""train(cfg): fine-tune, evaluate, log to MLflow and W&B, register the transformers-flavor model, in named steps."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentiment_flow import metrics as M
from sentiment_flow import plots, runs, store
from sentiment_flow.config import HEADLINE_METRICS, LABELS, TrainConfig
from sentiment_flow.data import SentimentData, load_data, tokenize
from sentiment_flow.monitoring import drift, vocabulary
from sentiment_flow.training import calibration, tracking
from sentiment_flow.training.device import build_trainer, cpu_only
from sentiment_flow.training.model import check_max_length, license_note, load_tokenizer_and_model, model_source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What a training produced: the run, the registered version and its test metrics."""

    run_id: str
    model_uri: str  # models:/<name>/<version>
    registered_model_name: str
    version: str
    metrics: dict[str, float]
    wandb_run_path: str
    # What registering this model takes, as Registration.register's arguments (JSON-able): a caller that did not
    # register (Extras.register False) can register it later, from another process too.
    registration: dict[str, Any] = field(default_factory=dict)
    best_eval_f1_macro: float | None = None  # the kept epoch's validation macro-F1


@dataclass(frozen=True)
class Extras:
    """What a caller such as a tuning trial adds to a training: Trainer callbacks, run tags, a child run of the
    active MLflow run, a W&B group, and whether the model is registered (else only logged in the run)."""

    callbacks: tuple = ()
    tags: dict[str, str] = field(default_factory=dict)
    nested: bool = False
    wandb_group: str | None = None
    register: bool = True


@dataclass(frozen=True)
class Job:
    """A training's inputs, checked: the data, the model and tokenizer, the tokenized splits, and what the runs
    record about them."""

    data: SentimentData
    tokenizer: Any
    model: Any
    encoded: Any  # datasets.DatasetDict of the tokenized splits
    params: dict[str, str | int | float]
    tags: dict[str, str]
    run_name: str


def train(cfg: TrainConfig, extras: Extras | None = None) -> TrainResult | None:
    """Fine-tune cfg.model on cfg.data and register it (unless extras say not to); None on the non-main processes
    of a torchrun/accelerate job.

    Under torchrun/accelerate every process trains; only the main one tracks, logs and registers.
    """
    from accelerate import PartialState

    state = PartialState(cpu=cpu_only())  # cpu= as TrainingArguments(use_cpu=...) asks of the same shared state
    if state.is_main_process:
        store.check_store()
    job = _prepare(cfg)
    if not state.is_main_process:
        with _shared_tempdir(state) as ckpt:
            trainer = build_trainer(cfg, job.model, job.tokenizer, job.encoded, ckpt)
            trainer.train()
            calibration.calibrate(trainer, job.encoded["valid"])  # collectives, like the test below
            trainer.predict(job.encoded["test"])  # a collective: every rank takes part in the test
        return None

    extras = extras or Extras()
    # One MLflow run and one W&B run record everything; the version is deleted again if they fail to close.
    with (
        runs.registration(cfg.registry_name) as registered,
        tracking.tracked_run(
            job.params, job.run_name, {**job.tags, **extras.tags}, extras.nested, extras.wandb_group
        ) as run,
        _shared_tempdir(state) as ckpt,
    ):
        tracking.log_datasets(job.data.splits, job.data.split_sources)
        _log_eda(job.encoded, cfg.max_length)
        splits = job.data.splits  # what `monitor` reads the out-of-vocabulary rates against
        tracking.log_dict(vocabulary.baseline(splits["train"]["text"], splits["test"]["text"]), vocabulary.ARTIFACT)
        callbacks = [tracking.metrics_callback(), *extras.callbacks]
        trainer = build_trainer(cfg, job.model, job.tokenizer, job.encoded, ckpt, callbacks=callbacks)
        trainer.train()
        # Before the test and the logged model: both see the calibrated head.
        temperature = calibration.calibrate(trainer, job.encoded["valid"])
        test_metrics = _test(trainer, job, temperature)
        info = _log_model(cfg, trainer.model, job.tokenizer)
        registration = {
            "model_uri": info.model_uri,
            "tags": _version_tags(cfg, job, run, test_metrics),
            "description": _description(cfg, job.data, test_metrics),
            "model_description": _model_description(cfg),
        }
        # Registered last, with what an ML ops reviewer needs: a version exists only once everything above
        # succeeded. `promote` refuses a version whose run did not end FINISHED.
        if extras.register:
            registered.register(**registration)
    return TrainResult(
        run_id=run.mlflow_run_id,
        model_uri=registered.model_uri if extras.register else "",
        registered_model_name=cfg.registry_name,
        version=str(registered.version or ""),
        metrics=test_metrics,
        wandb_run_path=run.wandb_run_path,
        registration=registration,
        best_eval_f1_macro=trainer.state.best_metric,
    )


def _prepare(cfg: TrainConfig) -> Job:
    """Load and check every input: each problem surfaces here, before a run is started or a step is taken."""
    from transformers import set_seed

    data = load_data(cfg.data, cfg.lang, cfg.max_train_samples, cfg.seed)
    set_seed(cfg.seed)  # before the model: the new classification head is randomly initialised
    tokenizer, model = load_tokenizer_and_model(cfg.model_name)
    check_max_length(cfg.model_name, tokenizer, model, cfg.max_length)
    encoded = tokenize(data, tokenizer, cfg.max_length)
    params = {
        **cfg.to_params(),
        "resolved_model": model_source(cfg.model_name),
        "resolved_learning_rate": cfg.lr,
        "resolved_registered_model_name": cfg.registry_name,
        "data_source": data.source,
        "data_hash": data.content_hash,
        **{f"{split}_rows": len(frame) for split, frame in data.splits.items()},
        **tracking.SERVING_CONFIG,
    }
    tags = {"lang": cfg.lang, "base_model": cfg.model_name, "data_hash": data.content_hash}
    return Job(data, tokenizer, model, encoded, params, tags, run_name=f"{cfg.lang}-{Path(cfg.model_name).name}")


def _test(trainer, job: Job, temperature: float) -> dict[str, float]:
    """Test once, on the best epoch's calibrated weights; returns the test_* metrics (calibration's too), logged
    with their plots and report."""
    # group_by_length orders evaluation batches by length too: take the labels from the same prediction output,
    # never from the dataset's original order.
    prediction = trainer.predict(job.encoded["test"])
    y_true, y_pred = prediction.label_ids, prediction.predictions.argmax(axis=-1)
    test_metrics = tracking.log_test_evaluation(y_true, y_pred, job.data.split_sources["test"])
    tracking.log_figure(plots.confusion_matrix(y_true, y_pred), "confusion_matrix.png")
    tracking.log_text(M.report(y_true, y_pred), "classification_report.txt")
    return {**test_metrics, **calibration.log_test_calibration(prediction.predictions, y_true, temperature)}


def _log_model(cfg: TrainConfig, model, tokenizer):
    """The model as MLflow's transformers flavor in the active run, readable by every user of a shared store."""
    extra = ("fugashi", "unidic-lite") if cfg.lang == "japanese" else ()
    info = tracking.log_model(model, tokenizer, None, cfg.max_length, extra, batch_size=cfg.batch_size)
    if note := license_note(cfg.model_name):
        tracking.replace_license(info, note)
    runs.share_model_files(info)
    return info


def _version_tags(cfg: TrainConfig, job: Job, run, test_metrics: dict[str, float]) -> dict[str, str]:
    return {
        **job.tags,
        "data_source": job.data.source,
        "max_length": str(cfg.max_length),
        "git_commit": runs.git_commit(),
        "mlflow_run_id": run.mlflow_run_id,
        "wandb_run_path": run.wandb_run_path,
        **{k: f"{test_metrics[k]:.4f}" for k in HEADLINE_METRICS},
    }


@contextmanager
def _shared_tempdir(state) -> Iterator[str]:
    """A checkpoint folder made by the main process and known to all: every rank reloads the best epoch from it."""
    from accelerate.utils import broadcast_object_list

    path: list = [tempfile.mkdtemp(prefix="sentiment_flow-") if state.is_main_process else None]
    if state.num_processes > 1:
        broadcast_object_list(path)
    try:
        yield path[0]
    finally:
        state.wait_for_everyone()
        if state.is_main_process:
            shutil.rmtree(path[0], ignore_errors=True)


def _log_eda(encoded, max_length: int) -> None:
    labels = {split: encoded[split]["labels"] for split in encoded}
    tracking.log_figure(plots.label_distribution(labels), "label_distribution.png")
    lengths = [len(ids) for ids in encoded["train"]["input_ids"]]
    tracking.log_figure(plots.length_by_label(lengths, labels["train"], max_length), "text_length_by_label.png")
    # What every scoring run of this model measures its drift against.
    tracking.log_dict(drift.baseline(encoded), drift.BASELINE_ARTIFACT)


def _model_description(cfg: TrainConfig) -> str:
    return (
        f"Sentiment classifier ({'/'.join(LABELS)}) for {cfg.lang} text, one version per `sentiment-flow train` "
        f"run; each version's description and tags say what it was trained from and how it tested. Serving and "
        f"batch scoring read models:/{cfg.registry_name}@champion; see `sentiment-flow status {cfg.registry_name}`."
    )


def _description(cfg: TrainConfig, data, test_metrics: dict[str, float]) -> str:
    return (
        f"Sentiment classifier ({'/'.join(LABELS)}) for {cfg.lang} text, fine-tuned from {cfg.model_name} "
        f"on {data.source} ({len(data.splits['train'])} training rows, data sha256 {data.content_hash[:12]}) "
        f"for {cfg.epochs} epoch(s) at learning rate {cfg.lr:g}, batch size {cfg.batch_size}, max_length "
        f"{cfg.max_length}; the epoch with the best validation macro-F1 was kept. On the held-out test split "
        f"({len(data.splits['test'])} rows) it scores macro-F1 {test_metrics['test_f1_macro']:.3f} and accuracy "
        f"{test_metrics['test_accuracy']:.3f}. Input: a string column; output: label and score."
    )
