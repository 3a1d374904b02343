"""Where and how a training runs: the per-device policy (precision, compile, loader, padding) and the Trainer
built from it, the one place those choices are made."""

from __future__ import annotations

import os
from dataclasses import dataclass

from sentiment_flow import metrics as M
from sentiment_flow.config import TrainConfig
from sentiment_flow.errors import UserError


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
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a share of the steps (transformers 5 has no warmup_ratio)
        label_smoothing_factor=cfg.label_smoothing,
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


def build_trainer(
    cfg: TrainConfig, model, tokenizer, encoded, output_dir: str, callbacks=(), collator=None, **overrides
):
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
