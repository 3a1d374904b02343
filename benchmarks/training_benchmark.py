"""Training speed: the reference notebook's global padding against this project's pipeline.

Both arms fine-tune the same model on the same rows with the same epochs, learning rate, batch size
and seed; they differ only in how batches are padded and ordered:

- reference: every text padded to the longest text of the dataset, random batches, fixed-size collation;
- sentiment_flow: texts left unpadded, batches of similar length (group_by_length), padded per batch.

Writes benchmarks/results/training.md, .json and .png. Run from the repo root:

    python benchmarks/training_benchmark.py --data ../shared/data/multilingual-sentiments
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch
from transformers import TrainerCallback, default_data_collator, set_seed

from sentiment_flow.config import TrainConfig
from sentiment_flow.data import load_data, tokenize
from sentiment_flow.metrics import classification_metrics
from sentiment_flow.training.device import build_trainer
from sentiment_flow.training.model import load_tokenizer_and_model

RESULTS = Path(__file__).resolve().parent / "results"


class EpochTimer(TrainerCallback):
    """Wall seconds of each epoch's training steps, evaluation and checkpointing excluded."""

    def __init__(self):
        self.seconds: list[float] = []

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_epoch_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._start)


def globally_padded(data, tokenizer, max_length: int):
    """The reference notebook's encoding: one map over each split with padding=True pads to the split's longest text."""
    encoded = tokenize(data, tokenizer, max_length)
    longest = max(len(ids) for split in encoded.values() for ids in split["input_ids"])

    def pad(batch):
        return tokenizer.pad(batch, padding="max_length", max_length=longest)

    return encoded.map(pad, batched=True, desc="Padding to the global maximum"), longest


def tokens_per_epoch(trainer) -> tuple[int, int]:
    """(tokens the model sees in one epoch including padding, real tokens) from the Trainer's own loader."""
    total = real = 0
    for batch in trainer.get_train_dataloader():
        total += batch["input_ids"].numel()
        real += int(batch["attention_mask"].sum())
    return total, real


def run_arm(arm: str, cfg: TrainConfig, data) -> dict:
    set_seed(cfg.seed)
    tokenizer, model = load_tokenizer_and_model(cfg.model_name)
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as out:
        if arm == "reference":
            encoded, longest = globally_padded(data, tokenizer, cfg.max_length)
            trainer = build_trainer(
                cfg,
                model,
                tokenizer,
                encoded,
                out,
                callbacks=[timer],
                collator=default_data_collator,
                train_sampling_strategy="random",
                report_to="none",
            )
        else:
            encoded, longest = tokenize(data, tokenizer, cfg.max_length), None
            trainer = build_trainer(cfg, model, tokenizer, encoded, out, callbacks=[timer], report_to="none")
        padded, real = tokens_per_epoch(trainer)
        trainer.train()
        prediction = trainer.predict(encoded["test"])
    scores = classification_metrics(prediction.label_ids, prediction.predictions.argmax(axis=-1))
    return {
        "arm": arm,
        "epoch_seconds": timer.seconds,
        "seconds_per_epoch": float(np.mean(timer.seconds)),
        "samples_per_second": len(encoded["train"]) / float(np.mean(timer.seconds)),
        "tokens_per_epoch": padded,
        "real_tokens_per_epoch": real,
        "global_pad_length": longest,
        "test_f1_macro": scores["f1_macro"],
        "test_accuracy": scores["accuracy"],
    }


def write_results(results: list[dict], cfg: TrainConfig, data_dir: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    ref, ours = results
    speedup = ref["seconds_per_epoch"] / ours["seconds_per_epoch"]
    machine = {
        "date": datetime.date.today().isoformat(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU",
        "load_average_1m_at_end": os.getloadavg()[0],
    }
    payload = {"config": cfg.to_params(), "data": data_dir, "machine": machine, "speedup": speedup, "arms": results}
    (RESULTS / "training.json").write_text(json.dumps(payload, indent=2) + "\n")

    rows = "\n".join(
        f"| {r['arm']} | {r['seconds_per_epoch']:.1f} ({', '.join(f'{s:.1f}' for s in r['epoch_seconds'])}) "
        f"| {r['samples_per_second']:.1f} | {r['tokens_per_epoch']:,} ({r['real_tokens_per_epoch'] / r['tokens_per_epoch']:.0%} real) "
        f"| {r['test_f1_macro']:.4f} | {r['test_accuracy']:.4f} |"
        for r in results
    )
    (RESULTS / "training.md").write_text(
        f"""# Training speed: global padding vs dynamic padding + length grouping

Written by `benchmarks/training_benchmark.py` on {machine["date"]}; do not edit by hand.

Model `{cfg.model_name}`, data `{data_dir}` ({cfg.lang}), {cfg.epochs} epochs, learning rate {cfg.lr:g},
batch size {cfg.batch_size}, max_length {cfg.max_length}, seed {cfg.seed}. Device: {machine["device"]},
{machine["cores"]} cores, torch {machine["torch"]} with {machine["torch_threads"]} threads; 1-minute load
average when the run ended: {machine["load_average_1m_at_end"]:.2f}.

Seconds per epoch count training steps only (the Trainer's per-epoch evaluation and checkpoint excluded).

| arm | s / epoch (each epoch) | train samples / s | tokens / epoch incl. padding | test macro-F1 | test accuracy |
|---|---|---|---|---|---|
{rows}

**Speed-up: {speedup:.2f}x** (reference s/epoch ÷ sentiment_flow s/epoch); macro-F1
{ours["test_f1_macro"] - ref["test_f1_macro"]:+.4f} for sentiment_flow. The reference pads every text to
{ref["global_pad_length"]} tokens, the longest in the dataset.

![seconds per epoch](training.png)
"""
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.barh([r["arm"] for r in results], [r["seconds_per_epoch"] for r in results], color=["tab:gray", "tab:blue"])
    for i, r in enumerate(results):
        ax.text(r["seconds_per_epoch"], i, f" {r['seconds_per_epoch']:.1f}s  F1 {r['test_f1_macro']:.3f}", va="center")
    ax.set_xlabel("seconds per training epoch (lower is better)")
    ax.set_xlim(0, max(r["seconds_per_epoch"] for r in results) * 1.45)
    ax.set_title(f"{cfg.model_name} on {cfg.lang}: {speedup:.2f}x faster")
    fig.tight_layout()
    fig.savefig(RESULTS / "training.png", dpi=120)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", default="../shared/data/multilingual-sentiments", show_default=True, help="Data folder.")
@click.option("--lang", default="english", show_default=True)
@click.option("--model", default="minilm", show_default=True, help="Model (default: the packaged MiniLM).")
@click.option("--epochs", default=TrainConfig.epochs, show_default=True)
@click.option("--max-train-samples", default=0, show_default=True, help="0 = all rows; smaller for a smoke run.")
def main(data: str, lang: str, model: str, epochs: int, max_train_samples: int) -> None:
    """Train the same model twice (reference padding, then this project's) and write the comparison."""
    cfg = TrainConfig(lang=lang, model=model, data=data, epochs=epochs, max_train_samples=max_train_samples)
    rows = load_data(cfg.data, cfg.lang, cfg.max_train_samples, cfg.seed)
    results = []
    for arm in ("reference", "sentiment_flow"):
        click.echo(f"== {arm}", err=True)
        results.append(run_arm(arm, cfg, rows))
        click.echo(json.dumps(results[-1]), err=True)
    write_results(results, cfg, data)
    click.echo((RESULTS / "training.md").read_text())


if __name__ == "__main__":
    main()
