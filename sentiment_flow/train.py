"""train(cfg): fine-tune, evaluate, log to MLflow and W&B, register the transformers-flavor model."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from sentiment_flow import metrics as M
from sentiment_flow import plots, scoring_runs, tracking
from sentiment_flow.config import HEADLINE_METRICS, LABELS, TrainConfig
from sentiment_flow.data import load_data, tokenize
from sentiment_flow.errors import UserError
from sentiment_flow.model import check_max_length, license_note, load_tokenizer_and_model, model_source

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


def cpu_only() -> bool:
    """True where neither CUDA nor Apple's MPS is available."""
    import torch

    return not torch.cuda.is_available() and not torch.backends.mps.is_available()


# Set to 0 or 1 to turn torch.compile off or on whatever the device (default: on for CUDA only; on a CPU its
# gain is unmeasured here, its compile time is paid on every run, and the CPU recipe was measured without it).
COMPILE_ENV = "SENTIMENT_FLOW_TORCH_COMPILE"
# On CUDA, batches are padded to a multiple of this many tokens: few distinct shapes, so torch.compile
# recompiles rarely and each shape's one-time kernel setup is paid a few times, not once per length
# (benchmarks/results/gpu.md: a new length cost ~4x on first sight, H200).
GPU_PAD_BUCKET = 64


@dataclass(frozen=True)
class DeviceSettings:
    """How training runs on one kind of device: TrainingArguments fields and the collator's padding."""

    device: str  # "cuda", "mps" or "cpu"
    training_args: dict  # TrainingArguments fields
    pad_to_multiple_of: int | None  # None: each batch padded to its longest row


def device_type() -> str:
    """The device this process trains on: "cuda", "mps" or "cpu"."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "cpu" if cpu_only() else "mps"


def device_settings(device: str | None = None, max_length: int = 128) -> DeviceSettings:
    """The per-device training policy (this machine's device if None), the one place it is decided.

    CUDA: bf16 autocast (fp16 before Ampere), TF32, torch.compile, loader workers with pinned memory, padding
    to buckets of GPU_PAD_BUCKET tokens. CPU: fp32, no compile, no workers, dynamic padding (fewest tokens: on
    a CPU every token costs). MPS: as CPU, padded to multiples of 8. Fused AdamW everywhere.
    COMPILE_ENV overrides the compile choice.
    """
    import torch

    device = device or device_type()
    cuda = device == "cuda"
    choice = os.environ.get(COMPILE_ENV, "").strip()
    if choice not in ("", "0", "1"):
        raise UserError(f"{COMPILE_ENV}={choice!r} is not 0 or 1; unset it to compile on CUDA only.")
    compile_model = cuda if choice == "" else choice == "1"
    bf16 = cuda and torch.cuda.is_bf16_supported()
    settings = dict(
        bf16=bf16,
        fp16=cuda and not bf16,
        tf32=True if cuda and torch.cuda.get_device_capability()[0] >= 8 else None,
        torch_compile=compile_model,
        # Fused on every device: transformers' own default on torch >= 2.8, and the CPU recipe whose test macro-F1
        # (benchmarks/results/training.md) the GPU is checked against was trained with it.
        optim="adamw_torch_fused",
        dataloader_num_workers=min(4, os.cpu_count() or 1) if cuda else 0,
        dataloader_pin_memory=cuda,
    )
    # A bucket that divides max_length never pads a batch beyond it (nor past the model's position limit,
    # which check_max_length keeps >= max_length); truncation already happened at tokenization.
    buckets = (GPU_PAD_BUCKET, 8) if cuda else (8,) if device == "mps" else ()
    multiple = next((b for b in buckets if max_length % b == 0), None)
    return DeviceSettings(device=device, training_args=settings, pad_to_multiple_of=multiple)


def training_arguments(cfg: TrainConfig, output_dir: str, **overrides):
    """TrainingArguments for this machine: the project's recipe, device_settings() for the device, then overrides."""
    from transformers import TrainingArguments

    settings = dict(
        output_dir=output_dir,
        num_train_epochs=cfg.epochs,
        learning_rate=cfg.lr,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size * 2,
        weight_decay=cfg.weight_decay,
        seed=cfg.seed,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_only_model=True,  # no optimizer state: checkpoints exist only to reload the best epoch
        save_total_limit=1,
        load_best_model_at_end=True,
        metric_for_best_model="f1_macro",
        logging_strategy="steps",
        logging_steps=0.05,  # a fraction: about 20 loss points per training, whatever its length
        # Batches of similar length, padded per batch by the collator: far fewer pad tokens than
        # padding the whole dataset to its longest text (see benchmarks/).
        train_sampling_strategy="group_by_length",
        **device_settings(max_length=cfg.max_length).training_args,
        use_cpu=cpu_only(),  # on CPU-only hosts this is what lets torchrun run data-parallel (gloo)
        report_to="none",  # MLflow and W&B get the same logs through tracking.metrics_callback
    )
    return TrainingArguments(**{**settings, **overrides})


def build_trainer(cfg: TrainConfig, model, tokenizer, encoded, output_dir: str, callbacks=(), collator=None, **overrides):
    """A Trainer on encoded["train"] evaluated on encoded["valid"]; overrides replace TrainingArguments fields."""
    from transformers import DataCollatorWithPadding, Trainer

    multiple = device_settings(max_length=cfg.max_length).pad_to_multiple_of
    return Trainer(
        model=model,
        args=training_arguments(cfg, output_dir, **overrides),
        train_dataset=encoded["train"],
        eval_dataset=encoded["valid"],
        processing_class=tokenizer,
        data_collator=collator or DataCollatorWithPadding(tokenizer, pad_to_multiple_of=multiple),
        compute_metrics=M.trainer_metrics,
        callbacks=list(callbacks),
    )


def train(cfg: TrainConfig) -> TrainResult | None:
    """Fine-tune cfg.model on cfg.data and register it; None on the non-main processes of a torchrun/accelerate job."""
    from accelerate import PartialState
    from transformers import set_seed

    # Under torchrun/accelerate every process trains; only the main one tracks, logs and registers.
    # cpu= matches what TrainingArguments(use_cpu=...) asks of the same shared state.
    state = PartialState(cpu=cpu_only())

    # 1. Fail fast: every input problem surfaces here, before a run is started or a step is taken.
    if state.is_main_process:
        tracking.check_store()
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
    run_name = f"{cfg.lang}-{Path(cfg.model_name).name}"

    # 2. One MLflow run and one W&B run record everything below.
    run_context = tracking.tracked_run(params, run_name, tags) if state.is_main_process else nullcontext()
    version = None
    try:
        with run_context as run, _shared_tempdir(state) as ckpt:
            if state.is_main_process:
                tracking.log_datasets(data.splits, data.split_sources)
                _log_eda(encoded, cfg.max_length)
            trainer = build_trainer(cfg, model, tokenizer, encoded, ckpt, callbacks=[tracking.metrics_callback()])
            trainer.train()

            # 3. Test once, on the best epoch's weights.
            # group_by_length orders evaluation batches by length too: take the labels from the same
            # prediction output, never from the dataset's original order.
            prediction = trainer.predict(encoded["test"])
            if run is None:  # not the main process
                return None
            y_true, y_pred = prediction.label_ids, prediction.predictions.argmax(axis=-1)
            test_metrics = tracking.log_test_evaluation(y_true, y_pred, data.split_sources["test"])
            tracking.log_figure(plots.confusion_matrix(y_true, y_pred), "confusion_matrix.png")
            tracking.log_text(M.report(y_true, y_pred), "classification_report.txt")

            # 4. The model, as MLflow's transformers flavor.
            extra = ("fugashi", "unidic-lite") if cfg.lang == "japanese" else ()
            info = tracking.log_model(trainer.model, tokenizer, None, cfg.max_length, extra, batch_size=cfg.batch_size)
            if note := license_note(cfg.model_name):
                tracking.replace_license(info, note)
            tracking.share_model_files(info)

            # 5. Registered last, with what an ML ops reviewer needs: a version exists only once everything
            # above succeeded. `promote` refuses a version whose run did not end FINISHED.
            version_tags = {
                **tags,
                "data_source": data.source,
                "max_length": str(cfg.max_length),
                "git_commit": _git_commit(),
                "mlflow_run_id": run.mlflow_run_id,
                "wandb_run_path": run.wandb_run_path,
                **{k: f"{test_metrics[k]:.4f}" for k in HEADLINE_METRICS},
            }
            description = _description(cfg, data, test_metrics)
            version = tracking.register_version(
                info.model_uri, cfg.registry_name, version_tags, description, _model_description(cfg)
            )
    except BaseException:
        # Stopped or failed while registering or closing the runs: leave nothing promotable behind.
        if version is not None:
            tracking.delete_version(cfg.registry_name, version)
        raise

    return TrainResult(
        run_id=run.mlflow_run_id,
        model_uri=f"models:/{cfg.registry_name}/{version}",
        registered_model_name=cfg.registry_name,
        version=version,
        metrics=test_metrics,
        wandb_run_path=run.wandb_run_path,
    )


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
    # What every scoring run of this model measures its drift against (scoring_runs.py).
    tracking.log_dict(scoring_runs.baseline(encoded), scoring_runs.BASELINE_ARTIFACT)


def _git_commit() -> str:
    from mlflow.utils.git_utils import get_git_commit

    return get_git_commit(str(Path(__file__).resolve().parent)) or "unknown"


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
