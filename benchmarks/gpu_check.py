"""GPU check: this project's training path on CUDA, measured (samples/s, tokens/s, MFU) and verified.

1. Throughput: a randomly initialised distilbert-base-uncased-sized model (`DistilBertConfig()`) trained
   through `build_trainer` / `training_arguments` on the English training texts repeated to >= 20,000
   rows, at several batch sizes, with this project's dynamic padding + group_by_length and with the
   reference notebook's global padding.
2. Correctness: the packaged MiniLM fine-tuned with the project's defaults (2 epochs, lr 1e-4, bf16 on
   CUDA); test macro-F1, then saved, reloaded in a process that sees no GPU and asked for the same labels.
3. With `--full`: the whole `train()` (MLflow sqlite store, W&B offline), then the registered version
   loaded with `mlflow.pyfunc.load_model` in a process that sees no GPU.

With `--policy` (what run_gpu_check.sh runs by default), parts 1-2 for the per-device policy instead: each change
of `train.device_settings("cuda")` (64-token buckets, fused AdamW, bf16, torch.compile, loader workers) added one
at a time at batch 64 and 256, the median of 3 timed windows each (samples/s, real tokens/s, MFU against the
card's named dense bf16 peak), then the packaged MiniLM fine-tuned with the policy at the CPU recipe's batch 16
and checked on CPU; `--budget-s` skips the last arms rather than overrun a device call.

Measure (on the GPU machine; benchmarks/run_gpu_check.sh does this), then render here:

    python benchmarks/gpu_check.py --policy --data DATA --model MINILM_DIR --out OUT  # OUT/gpu_policy.json
    python benchmarks/gpu_check.py --data DATA --model MINILM_DIR --out OUT     # writes OUT/gpu.json
    python benchmarks/gpu_check.py --full --data DATA --model MINILM_DIR --out OUT  # OUT/gpu_full.json
    python benchmarks/gpu_check.py --diagnose --data DATA --model MINILM_DIR --out OUT  # OUT/gpu_diagnose.json
    python benchmarks/gpu_check.py --render OUT/gpu.json --render OUT/gpu_full.json --render OUT/gpu_diagnose.json
    python benchmarks/gpu_check.py --render results/gpu.json --render OUT/gpu_policy.json --render OUT/gpu_full.json

`--diagnose` runs only throughput arms, the same one twice in one process, to tell one-time costs from per-step ones.
`--smoke` runs every part with tiny sizes, so the script is known to work on a CPU (`--policy --smoke` fakes CUDA's
answers to get the CUDA policy and compiles through dynamo's kernel-free eager backend).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

RESULTS = Path(__file__).resolve().parent / "results"
# Dense bf16 peaks from NVIDIA's datasheets (no sparsity; the datasheets print twice these "with sparsity"),
# FLOP/s. H100 SXM and H200 SXM share the GH100 die and its 989 TFLOP/s; the PCIe/NVL boards run lower clocks.
BF16_PEAKS = {
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H200 NVL": 835e12,
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
}


def bf16_peak(device_name: str) -> tuple[float | None, str]:
    """(dense bf16 peak FLOP/s, the name it was looked up by) for a CUDA device name; None if unknown."""
    for key, peak in BF16_PEAKS.items():  # most specific first
        if key in device_name:
            return peak, key
    return None, "unknown"


def machine() -> dict:
    import torch
    import transformers

    cuda = torch.cuda.is_available()
    return {
        "date": time.strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name() if cuda else "CPU",
        "capability": ".".join(map(str, torch.cuda.get_device_capability())) if cuda else None,
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }


def matmul_tflops() -> float | None:
    """bf16 8192^3 matrix products on random data, TFLOP/s (mean of 10 after 3 warm-ups): the measured ceiling."""
    import torch

    if not torch.cuda.is_available():
        return None
    n = 8192
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2 * n**3 * 10 / (start.elapsed_time(end) / 1e3) / 1e12


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def step_meter(warmup: int, max_seconds: float):
    """A callback that times the steps after `warmup` (GPU synchronised at both ends) and ends training after max_seconds."""
    from transformers import TrainerCallback

    class StepMeter(TrainerCallback):
        def __init__(self):
            self.warmup, self.max_seconds = warmup, max_seconds
            self.padded_tokens = self.real_tokens = self.samples = 0
            self.steps, self.seconds = 0, 0.0

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == self.warmup:
                synchronize()
                self._start = time.perf_counter()
            elif state.global_step > self.warmup:
                if state.global_step >= state.max_steps or time.perf_counter() - self._start > self.max_seconds:
                    synchronize()
                    self.seconds = time.perf_counter() - self._start
                    self.steps = state.global_step - self.warmup
                    control.should_training_stop = True

        def count(self, trainer):
            """Wrap trainer.training_step to count the tokens of the timed steps' batches (still on the CPU there)."""
            step = trainer.training_step

            def counted(model, inputs, *args, **kwargs):
                if trainer.state.global_step >= self.warmup:
                    self.padded_tokens += inputs["input_ids"].numel()
                    self.real_tokens += int(inputs["attention_mask"].sum())
                    self.samples += len(inputs["input_ids"])
                return step(model, inputs, *args, **kwargs)

            trainer.training_step = counted

    return StepMeter()


def loader_samples_per_second(trainer, batches: int) -> float:
    """How fast the Trainer's own loader (workers, sampler, collator) yields batches with no model behind it."""
    loader = iter(trainer.get_train_dataloader())
    next(loader)  # workers started
    start, samples = time.perf_counter(), 0
    for batch in itertools.islice(loader, batches):
        samples += len(batch["input_ids"])
    return samples / (time.perf_counter() - start)


def throughput(
    data, tokenizer, model_config, arms_to_run, rows: int, warmup: int, steps: int, seconds: float
) -> list[dict]:
    """One timed arm per (padding, batch size), in the order given: samples/s, tokens/s, MFU, peak memory.

    padding: "dynamic" (the project's collator), "dynamic8" (the same, pad_to_multiple_of=8) or "global".
    """
    import pandas as pd
    import torch
    from training_benchmark import globally_padded
    from transformers import (
        AutoModelForSequenceClassification,
        DataCollatorWithPadding,
        default_data_collator,
        set_seed,
    )

    from sentiment_flow.config import TrainConfig
    from sentiment_flow.data import tokenize
    from sentiment_flow.training.device import build_trainer

    train = data.splits["train"]
    repeated = pd.concat([train] * math.ceil(rows / len(train)), ignore_index=True)
    data = dataclasses.replace(data, splits={**data.splits, "train": repeated})
    cfg = TrainConfig(data="-", model="-")  # the project's defaults; batch size set per arm below
    encodings = {"dynamic": tokenize(data, tokenizer, cfg.max_length)}
    encodings["dynamic8"] = encodings["dynamic"]
    collators = {
        "dynamic": None,
        "dynamic8": DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8),
        "global": default_data_collator,
    }
    encodings["global"], longest = globally_padded(data, tokenizer, cfg.max_length)
    peak, peak_name = bf16_peak(torch.cuda.get_device_name() if torch.cuda.is_available() else "")
    arms = []
    for padding, batch_size in arms_to_run:
        set_seed(cfg.seed)
        model = AutoModelForSequenceClassification.from_config(model_config)
        params = sum(p.numel() for p in model.parameters())
        meter = step_meter(warmup, seconds)
        overrides = dict(
            max_steps=warmup + steps,
            eval_strategy="no",
            save_strategy="no",
            load_best_model_at_end=False,
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
        )
        if padding == "global":  # the reference notebook: fixed-length rows, random batches
            overrides["train_sampling_strategy"] = "random"
        with tempfile.TemporaryDirectory() as out:
            trainer = build_trainer(
                dataclasses.replace(cfg, batch_size=batch_size),
                model,
                tokenizer,
                encodings[padding],
                out,
                callbacks=[meter],
                collator=collators[padding],
                **overrides,
            )
            loader_rate = loader_samples_per_second(trainer, steps)
            meter.count(trainer)
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            trainer.train()
            args = trainer.args
        flops = 6 * params * meter.real_tokens / meter.seconds
        arms.append(
            {
                "padding": padding,
                "batch_size": batch_size,
                "steps": meter.steps,
                "seconds": meter.seconds,
                "samples_per_second": meter.samples / meter.seconds,
                "loader_samples_per_second": loader_rate,
                "tokens_per_second": meter.padded_tokens / meter.seconds,
                "real_tokens_per_second": meter.real_tokens / meter.seconds,
                "real_token_fraction": meter.real_tokens / meter.padded_tokens,
                "mfu": flops / peak if peak else None,
                "model_tflops": flops / 1e12,
                "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
                "params": params,
                "bf16": args.bf16,
                "fp16": args.fp16,
                "tf32": args.tf32,
                "dataloader_num_workers": args.dataloader_num_workers,
                "dataloader_pin_memory": args.dataloader_pin_memory,
                "model_dtype": str(trainer.model.dtype),
                "model_device": str(trainer.model.device),
            }
        )
        print(json.dumps(arms[-1]), flush=True)
        del trainer, model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return [
        {**arm, "rows": len(repeated), "global_pad_length": longest, "peak_name": peak_name, "peak_flops": peak}
        for arm in arms
    ]


# Part 1 of `--policy`: the CUDA policy (train.device_settings) built up one change at a time, each arm adding
# the TrainingArguments fields named here to the previous arm's; the last arm is the policy itself.
POLICY_CHANGES = (
    ("baseline: fp32, dynamic padding", ()),
    ("+ length buckets", ("pad_to_multiple_of",)),
    ("+ fused AdamW", ("optim",)),
    ("+ bf16 autocast, TF32", ("bf16", "fp16", "tf32")),
    ("+ torch.compile", ("torch_compile",)),
    ("+ loader workers, pinned memory", ("dataloader_num_workers", "dataloader_pin_memory")),
)
# After the cumulative arms: the whole policy with another bucket. On the English texts (~30 tokens, longest 78)
# 64-token buckets are about half padding, which MFU on real tokens pays for; 16 keeps shapes few (8 at
# max_length 128, and dynamo turns a changing length dynamic after its first recompile).
POLICY_ALTERNATIVES = (("whole policy, 16-token buckets", 16),)
# Everything off: the baseline arm's TrainingArguments.
POLICY_OFF = {
    "bf16": False,
    "fp16": False,
    "tf32": None,
    "torch_compile": False,
    "optim": "adamw_torch",
    "dataloader_num_workers": 0,
    "dataloader_pin_memory": False,
}


def policy_arms(policy) -> list[tuple[str, dict, int | None]]:
    """(name, TrainingArguments fields, pad_to_multiple_of) per arm of POLICY_CHANGES, cumulative, then POLICY_ALTERNATIVES."""
    named = {key for _, keys in POLICY_CHANGES for key in keys} - {"pad_to_multiple_of"}
    if named != set(policy.training_args):  # a field the policy gained must be measured too
        raise RuntimeError(f"POLICY_CHANGES names {sorted(named)}, device_settings sets {sorted(policy.training_args)}")
    args, multiple, arms = dict(POLICY_OFF), None, []
    for name, keys in POLICY_CHANGES:
        for key in keys:
            if key == "pad_to_multiple_of":
                multiple = policy.pad_to_multiple_of
            else:
                args[key] = policy.training_args[key]
        arms.append((name, dict(args), multiple))
    return arms + [(name, dict(args), bucket) for name, bucket in POLICY_ALTERNATIVES]


def cuda_policy(max_length: int, smoke: bool):
    """(device_settings("cuda"), extra TrainingArguments) for this machine; on a CPU (smoke), the CUDA policy as
    far as a CPU runs it: CUDA's answers faked, no TF32, torch.compile through dynamo's kernel-free eager backend."""
    from unittest import mock

    import torch

    from sentiment_flow.training.device import device_settings

    if torch.cuda.is_available():
        return device_settings("cuda", max_length), {}
    if not smoke:
        raise click.UsageError("--policy measures the CUDA policy: run it on a GPU, or with --smoke on a CPU.")
    with (
        mock.patch.object(torch.cuda, "is_bf16_supported", return_value=True),
        mock.patch.object(torch.cuda, "get_device_capability", return_value=(9, 0)),
    ):
        policy = device_settings("cuda", max_length)
    policy.training_args["tf32"] = None  # TrainingArguments refuses TF32 without a GPU
    return policy, {"torch_compile_backend": "eager"}


def window_meter(warmup: int, window: int, windows: int):
    """A callback timing `windows` consecutive windows of `window` steps after `warmup` (GPU synchronised at
    every boundary), with the samples and tokens of each window's batches; .wrap(trainer) counts them."""
    from transformers import TrainerCallback

    class WindowMeter(TrainerCallback):
        def __init__(self):
            self.marks: list[float] = []
            self.samples = [0] * windows
            self.padded_tokens = [0] * windows
            self.real_tokens = [0] * windows
            self.graphs_at: list[int] = []

        def on_step_end(self, args, state, control, **kwargs):
            done = state.global_step - warmup
            if done >= 0 and done % window == 0 and len(self.marks) <= windows:
                synchronize()
                self.marks.append(time.perf_counter())
                self.graphs_at.append(compiled_graphs())
                if len(self.marks) == windows + 1:
                    control.should_training_stop = True

        def wrap(self, trainer):
            step = trainer.training_step

            def counted(model, inputs, *args, **kwargs):
                k = (trainer.state.global_step - warmup) // window  # the step being taken is global_step + 1
                if trainer.state.global_step >= warmup and k < windows:
                    self.samples[k] += len(inputs["input_ids"])
                    self.padded_tokens[k] += inputs["input_ids"].numel()
                    self.real_tokens[k] += int(inputs["attention_mask"].sum())
                return step(model, inputs, *args, **kwargs)

            trainer.training_step = counted

        def seconds(self) -> list[float]:
            return [b - a for a, b in zip(self.marks, self.marks[1:])]

    return WindowMeter()


def compiled_graphs() -> int:
    """Graphs dynamo has compiled in this process so far: a rise during timing means a recompile was timed."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def policy_ablation(
    data,
    tokenizer,
    model_config,
    batch_sizes,
    rows: int,
    warmup: int,
    window: int,
    windows: int,
    smoke: bool,
    deadline: float,
) -> list[dict]:
    """Each arm of policy_arms at each batch size, a fresh model through build_trainer: the median of `windows`
    timed windows (samples/s, real and padded tokens/s, MFU). Arms past `deadline` (perf_counter) are skipped."""
    import pandas as pd
    import torch
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, set_seed

    from sentiment_flow.config import TrainConfig
    from sentiment_flow.data import tokenize
    from sentiment_flow.training.device import build_trainer

    train = data.splits["train"]
    repeated = pd.concat([train] * math.ceil(rows / len(train)), ignore_index=True)
    data = dataclasses.replace(data, splits={**data.splits, "train": repeated})
    cfg = TrainConfig(data="-", model="-")
    encoded = tokenize(data, tokenizer, cfg.max_length)
    policy, extra = cuda_policy(cfg.max_length, smoke)
    peak, peak_name = bf16_peak(torch.cuda.get_device_name() if torch.cuda.is_available() else "")
    results = []
    # Change by change, each at every batch size: if the budget runs out, the last changes go, not a batch size.
    for (name, args, multiple), batch_size in itertools.product(policy_arms(policy), batch_sizes):
        if time.perf_counter() > deadline:
            results.append({"arm": name, "batch_size": batch_size, "skipped": "time budget spent"})
            continue
        set_seed(cfg.seed)
        model = AutoModelForSequenceClassification.from_config(model_config)
        params = sum(p.numel() for p in model.parameters())
        meter = window_meter(warmup, window, windows)
        overrides = dict(
            max_steps=warmup + window * windows,
            eval_strategy="no",
            save_strategy="no",
            load_best_model_at_end=False,
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
            **args,
            **(extra if args["torch_compile"] else {}),
        )
        with tempfile.TemporaryDirectory() as out:
            trainer = build_trainer(
                dataclasses.replace(cfg, batch_size=batch_size),
                model,
                tokenizer,
                encoded,
                out,
                callbacks=[meter],
                collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=multiple),
                **overrides,
            )
            meter.wrap(trainer)
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            trainer.train()
            wall = time.perf_counter() - start
        seconds = meter.seconds()
        k = seconds.index(median(seconds))  # the median window, with its own tokens
        flops = 6 * params * meter.real_tokens[k] / seconds[k]
        results.append(
            {
                "arm": name,
                "batch_size": batch_size,
                "settings": {**args, "pad_to_multiple_of": multiple},
                "windows": windows,
                "window_steps": window,
                "warmup_steps": warmup,
                "window_seconds": seconds,
                "samples_per_second": meter.samples[k] / seconds[k],
                "window_samples_per_second": [n / t for n, t in zip(meter.samples, seconds)],
                "tokens_per_second": meter.padded_tokens[k] / seconds[k],
                "real_tokens_per_second": meter.real_tokens[k] / seconds[k],
                "real_token_fraction": meter.real_tokens[k] / meter.padded_tokens[k],
                "model_tflops": flops / 1e12,
                "mfu": flops / peak if peak else None,
                "peak_name": peak_name,
                "peak_flops": peak,
                "params": params,
                "rows": len(repeated),
                "arm_wall_seconds": wall,
                "graphs_compiled_while_timed": meter.graphs_at[-1] - meter.graphs_at[0],
                "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
            }
        )
        print(json.dumps(results[-1]), flush=True)
        del trainer, model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return results


def predict_labels(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 128) -> list[int]:
    """Label ids in the order of `texts` (the Trainer's length-grouped evaluation reorders them), bf16 autocast on CUDA."""
    import torch

    model.eval()
    device = model.device
    labels = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[i : i + batch_size], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
            )
            labels += model(**batch.to(device)).logits.argmax(-1).tolist()
    return labels


def cpu_process(*args: str) -> dict:
    """Run this script in a process that sees no GPU (as on a CPU-only server); its JSON answer."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"CPU process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def finetune(data, model_dir: str, batch_size: int, epochs: int, check_on_cpu: bool) -> dict:
    """The packaged MiniLM fine-tuned with the project's defaults (lr as for `--model minilm`); test metrics, timing."""
    import torch
    from transformers import set_seed

    from sentiment_flow.config import OFFLINE_MODEL, TrainConfig
    from sentiment_flow.data import tokenize
    from sentiment_flow.metrics import classification_metrics
    from sentiment_flow.training.device import build_trainer
    from sentiment_flow.training.model import load_tokenizer_and_model

    cfg = TrainConfig(
        model=model_dir,
        data="-",
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=str(TrainConfig(model=OFFLINE_MODEL).lr),
    )
    set_seed(cfg.seed)
    tokenizer, model = load_tokenizer_and_model(model_dir)
    encoded = tokenize(data, tokenizer, cfg.max_length)
    with tempfile.TemporaryDirectory() as ckpt:
        trainer = build_trainer(cfg, model, tokenizer, encoded, ckpt, report_to="none", disable_tqdm=True)
        start = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - start
        prediction = trainer.predict(encoded["test"])
    scores = classification_metrics(prediction.label_ids, prediction.predictions.argmax(-1))
    texts = data.splits["test"]["text"].tolist()
    result = {
        "batch_size": batch_size,
        "epochs": epochs,
        "learning_rate": cfg.lr,
        "train_rows": len(data.splits["train"]),
        "train_seconds": train_seconds,
        "test_f1_macro": scores["f1_macro"],
        "test_accuracy": scores["accuracy"],
        "bf16": trainer.args.bf16,
        "model_dtype": str(trainer.model.dtype),
        "model_device": str(trainer.model.device),
        "torch_compile": trainer.args.torch_compile,
        "optim": getattr(trainer.args.optim, "value", trainer.args.optim),
        "pad_to_multiple_of": trainer.data_collator.pad_to_multiple_of,
    }
    if check_on_cpu:  # save on the GPU, reload and predict where no GPU is visible
        gpu_labels = predict_labels(trainer.model, tokenizer, texts, cfg.max_length)
        with tempfile.TemporaryDirectory() as saved:
            trainer.model.save_pretrained(saved)
            tokenizer.save_pretrained(saved)
            cpu = cpu_process("--predict-on-cpu", saved, "--data", data.source)
            saved_dtype = json.loads((Path(saved) / "config.json").read_text()).get("dtype")
        gold = data.splits["test"]["label"].tolist()
        result.update(
            {
                "gpu_ordered_f1_macro": classification_metrics(gold, gpu_labels)["f1_macro"],
                "cpu_f1_macro": classification_metrics(gold, cpu["labels"])["f1_macro"],
                "cpu_agreement": sum(a == b for a, b in zip(gpu_labels, cpu["labels"])) / len(texts),
                "cpu_cuda_visible": cpu["cuda_available"],
                "cpu_model_device": cpu["device"],
                "cpu_model_dtype": cpu["dtype"],
                "saved_config_dtype": saved_dtype,
            }
        )
    print(json.dumps(result), flush=True)
    del trainer, model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def full_train(data_dir: str, model_dir: str, max_train_samples: int) -> dict:
    """train() end to end on this machine, then the registered version through pyfunc where no GPU is visible."""
    work = Path(tempfile.mkdtemp(prefix="gpu_check-"))  # store, artifacts and W&B files; not brought back
    os.environ.update(MLFLOW_TRACKING_URI=f"sqlite:///{work}/mlflow.db", WANDB_MODE="offline", WANDB_DIR=str(work))
    from sentiment_flow.config import OFFLINE_MODEL, TrainConfig
    from sentiment_flow.training import train

    cfg = TrainConfig(
        model=model_dir,
        data=data_dir,
        max_train_samples=max_train_samples,
        learning_rate=str(TrainConfig(model=OFFLINE_MODEL).lr),
    )
    start = time.perf_counter()
    result = train(cfg)
    seconds = time.perf_counter() - start
    from sentiment_flow.training.device import device_settings

    settings = device_settings(max_length=cfg.max_length)
    cpu = cpu_process("--pyfunc-on-cpu", result.model_uri, "--data", data_dir)
    return {
        "model_uri": result.model_uri,
        "train_seconds": seconds,
        "test_f1_macro": result.metrics["test_f1_macro"],
        "test_accuracy": result.metrics["test_accuracy"],
        "wandb_run_path": result.wandb_run_path,
        "wandb_offline_runs": len(list(work.glob("wandb/offline-run-*"))),
        **{f"pyfunc_{k}": v for k, v in cpu.items()},
        "device": machine()["device"],
        "settings": {**settings.training_args, "pad_to_multiple_of": settings.pad_to_multiple_of},
    }


def predict_on_cpu(model_dir: str, data_dir: str) -> dict:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from sentiment_flow.config import TrainConfig

    data = load(data_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    labels = predict_labels(model, tokenizer, data.splits["test"]["text"].tolist(), TrainConfig.max_length)
    return {
        "labels": labels,
        "cuda_available": torch.cuda.is_available(),
        "device": str(model.device),
        "dtype": str(model.dtype),
    }


def pyfunc_on_cpu(model_uri: str, data_dir: str) -> dict:
    import mlflow
    import torch

    from sentiment_flow.config import LABEL2ID
    from sentiment_flow.metrics import classification_metrics

    data = load(data_dir)
    test = data.splits["test"]
    predicted = mlflow.pyfunc.load_model(model_uri).predict(test[["text"]])
    labels = [LABEL2ID[label] for label in predicted["label"]]
    scores = classification_metrics(test["label"].tolist(), labels)
    return {
        "cuda_available": torch.cuda.is_available(),
        "rows": len(labels),
        "f1_macro": scores["f1_macro"],
        "accuracy": scores["accuracy"],
    }


def load(data_dir: str, max_train_samples: int = 0):
    from sentiment_flow.data import load_data

    return load_data(data_dir, "english", max_train_samples, seed=42)


def render(paths: tuple[str, ...], results: Path) -> Path:
    """gpu.json (the device's answers merged), gpu.md and gpu.png in `results`.

    A file may hold {"before_fix": {...}}: an earlier run of the same check, shown for comparison.
    """
    payload = {}
    for path in paths:
        payload.update(json.loads(Path(path).read_text()))
    results.mkdir(parents=True, exist_ok=True)
    (results / "gpu.json").write_text(json.dumps(payload, indent=2) + "\n")
    m, arms, ft = payload["machine"], payload["throughput"], payload.get("finetune", [])
    dynamic = {a["batch_size"]: a for a in arms if a["padding"] == "dynamic"}
    best = max(dynamic.values(), key=lambda a: a["samples_per_second"])
    base = dynamic[min(dynamic)]
    a0 = arms[0]

    def mfu(arm):
        return f"{arm['mfu']:.1%}" if arm["mfu"] is not None else "n/a"

    def mem(arm):
        return f"{arm['peak_memory_gib']:.1f}" if arm["peak_memory_gib"] is not None else "n/a"

    def loader(arm):
        return f"{arm['loader_samples_per_second']:,.0f}" if "loader_samples_per_second" in arm else "not measured"

    def throughput_table(rows):
        return (
            "| padding | batch | timed steps | samples/s | loader samples/s | tokens/s (incl. pad) | real tokens/s (share) | model TFLOP/s | MFU | peak GiB |\n|---|---|---|---|---|---|---|---|---|---|\n"
            + "\n".join(
                f"| {a['padding']} | {a['batch_size']} | {a['steps']} | {a['samples_per_second']:,.0f} | {loader(a)} "
                f"| {a['tokens_per_second']:,.0f} | {a['real_tokens_per_second']:,.0f} ({a['real_token_fraction']:.0%}) | {a['model_tflops']:.1f} | {mfu(a)} | {mem(a)} |"
                for a in rows
            )
        )

    def finetune_table(rows):
        return (
            "| batch | epochs | lr | train s (incl. per-epoch eval + checkpoint) | test macro-F1 | test accuracy |\n|---|---|---|---|---|---|\n"
            + "\n".join(
                f"| {r['batch_size']} | {r['epochs']} | {r['learning_rate']:g} | {r['train_seconds']:.1f} | {r['test_f1_macro']:.4f} | {r['test_accuracy']:.4f} |"
                for r in rows
            )
        )

    # The largest batch whose macro-F1 at the default epochs and learning rate stays within 0.01 of the smallest's.
    f1 = {r["batch_size"]: r["test_f1_macro"] for r in ft}
    keep = max((b for b in f1 if f1[b] >= f1[min(f1)] - 0.01), default=None)
    check = next((r for r in ft if "cpu_agreement" in r), None)
    glob = {a["batch_size"]: a for a in arms if a["padding"] == "global"}
    goal = min((b for b, a in dynamic.items() if a["samples_per_second"] >= 2000), default=None)
    versus = ", ".join(
        f"batch {b} {dynamic[b]['samples_per_second'] / glob[b]['samples_per_second']:.2f}x"
        for b in sorted(dynamic)
        if b in glob
    )
    slower = (
        " Global padding moves 2-3x the tokens and is still faster: with MFU this low, per-step work other"
        "\n  than arithmetic (the Trainer's, the optimizer's, new shapes) seems to set the pace, so dynamic padding's"
        "\n  fewer tokens do not turn into speed here as they do on CPU."
    )
    text = f"""# GPU check: training on CUDA, measured

Written by `benchmarks/gpu_check.py --render` from the device's JSON on {m["date"]}; do not edit by hand.

Device **{m["device"]}** (compute capability {m["capability"]}, {m["gpu_memory_gib"]} GiB), torch {m["torch"]}
(CUDA {m["cuda"]}), transformers {m["transformers"]}, Python {m["python"]}, {m["cpu_count"]} CPU cores.
Training settings the project's `training_arguments` chose there: bf16={a0["bf16"]}, fp16={a0["fp16"]},
tf32={a0["tf32"]}, {a0["dataloader_num_workers"]} loader workers, pinned memory={a0["dataloader_pin_memory"]};
the model stayed {a0["model_dtype"]} on {a0["model_device"]} (mixed precision by autocast).

## 1. Throughput: random-init `DistilBertConfig()` ({a0["params"]:,} parameters), English texts repeated to {a0["rows"]:,} rows

Each arm is a fresh model trained through `build_trainer` (the project's tokenization, collator and
`TrainingArguments`), timing up to {max(a["steps"] for a in arms)} steps after a 10-step warm-up with the GPU
synchronised at both ends. *dynamic* is the project's pipeline (unpadded rows, `group_by_length`, the
project's collator, which pads each batch to a multiple of 8 on a GPU); *global* is the reference notebook's (every row padded to the longest text,
{a0["global_pad_length"]} tokens; random batches). *loader samples/s*: the same Trainer's data loader alone.
MFU = 6 × parameters × real (non-pad) tokens/s ÷ the {a0["peak_name"]} dense bf16 peak
({(a0["peak_flops"] or 0) / 1e12:.0f} TFLOP/s, datasheet); a bf16 8192³ matrix product measured
{payload.get("matmul_tflops") or 0:.0f} TFLOP/s on this card. Parameters include the embeddings.

{throughput_table(arms)}

![samples per second](gpu.png)

## 2. Correctness: the packaged MiniLM fine-tuned on CUDA (project defaults: 2 epochs, lr 1e-4, bf16)

Test split of `english` ({ft[0]["train_rows"] if ft else 0} training rows); the CPU reference is macro-F1
0.66–0.67 (`results/training.md`: 0.675). Larger batches keep the learning rate and epochs, so they take
fewer steps.

{finetune_table(ft)}
"""
    if check:
        text += f"""
The batch-{check["batch_size"]} model was saved with `save_pretrained` on the GPU (config dtype {check["saved_config_dtype"]}),
reloaded in a process with `CUDA_VISIBLE_DEVICES=""` (CUDA visible there: {check["cpu_cuda_visible"]}; model
{check["cpu_model_dtype"]} on {check["cpu_model_device"]}) and asked for the test labels: **{check["cpu_agreement"]:.2%}
agree** with the GPU's (bf16 autocast) labels; macro-F1 {check["cpu_f1_macro"]:.4f} on CPU against
{check["gpu_ordered_f1_macro"]:.4f} on GPU.
"""
    text += f"""
## Recommendation

- Throughput: the fastest *dynamic* arm is batch {best["batch_size"]}, {best["samples_per_second"]:,.0f} samples/s
  ({best["samples_per_second"] / base["samples_per_second"]:.1f}x batch {base["batch_size"]}'s {base["samples_per_second"]:,.0f}),
  {mem(best)} GiB peak; every batch size here fits many times over in {m["gpu_memory_gib"]} GiB. The 2,000
  samples/s goal is {f"reached from batch {goal} on" if goal else "not reached by any batch size measured"}.
- Dynamic padding against global padding, samples/s: {versus}.{slower if all(dynamic[b]["samples_per_second"] < glob[b]["samples_per_second"] for b in dynamic if b in glob) else ""}
- Accuracy: at the default 2 epochs and learning rate, the largest batch whose test macro-F1 stays within
  0.01 of batch {min(f1) if f1 else "-"}'s is **{keep}**; so keep the default batch size at {keep} on a GPU too, and
  raise it (with the learning rate or epochs) only for datasets large enough that speed matters.
"""
    if "policy" in payload:
        text += policy_section(payload["policy"], dynamic, RESULTS)
    full = payload.get("full")
    if full:
        text += f"""
## 3. `train()` end to end on CUDA, pyfunc on CPU{" (" + full["note"] + ")" if full.get("note") else ""}

{"On **" + full["device"] + "** with the per-device policy (" + ", ".join(f"{k}={v}" for k, v in full["settings"].items()) + "): " if full.get("settings") else ""}`train()` with an MLflow sqlite store and W&B offline ({full["wandb_offline_runs"]} offline run written) registered
`{full["model_uri"]}` in {full["train_seconds"]:.0f} s, test macro-F1 {full["test_f1_macro"]:.4f}. `mlflow.pyfunc.load_model`
of that version in a process that sees no GPU (CUDA visible: {full["pyfunc_cuda_available"]}) predicted all
{full["pyfunc_rows"]} test rows: macro-F1 {full["pyfunc_f1_macro"]:.4f}, accuracy {full["pyfunc_accuracy"]:.4f}.
"""
    before = payload.get("before_fix")
    if before:
        text += f"""
## Before the fix: {before["note"]}

{throughput_table(before["throughput"])}

{finetune_table(before["finetune"])}
"""
    diagnose = payload.get("diagnose")
    if diagnose:
        runs = "\n".join(
            f"| {i} | {a['padding']} | {a['batch_size']} | {a['steps']} | {a['samples_per_second']:,.0f} | {a['loader_samples_per_second']:,.0f} "
            f"| {a['real_tokens_per_second']:,.0f} ({a['real_token_fraction']:.0%}) | {mfu(a)} |"
            for i, a in enumerate(diagnose, 1)
        )
        text += f"""
## Why dynamic padding was slow: arms in order, one process (`--diagnose`, before the fix)

*dynamic8* is the collator with `pad_to_multiple_of=8`. The same arm run twice in one process gets faster
the second time (#2 against #3): each new (batch, length) shape costs a one-time setup on the GPU (which
library pays it was not measured), and length-grouped batches bring a new length almost every step until
all have been seen. Padding to a multiple of 8 leaves at most 16 lengths (max_length 128).

| # | padding | batch | timed steps | samples/s | loader samples/s | real tokens/s (share) | MFU |
|---|---|---|---|---|---|---|---|
{runs}
"""
    (results / "gpu.md").write_text(text)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(dynamic)
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    width = 0.38
    for offset, (label, group, color) in enumerate(
        (("dynamic + group_by_length", dynamic, "tab:blue"), ("global padding", glob, "tab:gray"))
    ):
        xs = [i + (offset - 0.5) * width for i in range(len(sizes))]
        bars = ax.bar(
            xs, [group[s]["samples_per_second"] if s in group else 0 for s in sizes], width, label=label, color=color
        )
        for bar, s in zip(bars, sizes):
            if s in group:
                ax.annotate(
                    f"MFU {mfu(group[s])}",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
    ax.set_xticks(range(len(sizes)), [f"batch {s}" for s in sizes])
    ax.set_ylabel("training samples / s")
    ax.set_title(f"{m['device']}: DistilBERT-base-sized, bf16={a0['bf16']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(results / "gpu.png", dpi=120)
    return results / "gpu.md"


def run_policy(rows, tokenizer, config, model_dir: str, out: Path, smoke: bool, deadline: float) -> None:
    """--policy: the ablation at batch 64 and 256 (median of 3 windows), then the packaged MiniLM fine-tuned with
    the policy at the CPU recipe's batch 16, saved and checked on CPU; OUT/gpu_policy.json after each part."""
    if smoke:
        sizes = dict(batch_sizes=(4, 8), rows=200, warmup=2, window=2, windows=3)
    else:  # warm-up long enough for compile's two buckets (64, 128) to be seen before timing
        sizes = dict(batch_sizes=(64, 256), rows=20_000, warmup=20, window=20, windows=3)
    answer = {"policy": {"machine": machine(), "matmul_tflops": matmul_tflops()}}

    def write():
        (out / "gpu_policy.json").write_text(json.dumps(answer, indent=2))

    answer["policy"]["ablation"] = policy_ablation(rows, tokenizer, config, smoke=smoke, deadline=deadline, **sizes)
    write()  # part 1 kept even if part 2 fails
    small = load(rows.source, max_train_samples=48) if smoke else rows
    answer["policy"]["finetune"] = finetune(small, model_dir, 16, 1 if smoke else 2, check_on_cpu=True)
    write()
    click.echo(json.dumps(answer))


# Goals of the policy run (the GPU-efficiency issue): MFU at batch 256, speed-up at batch 64 over the first run's
# dynamic arm, and MiniLM's test macro-F1 against the CPU recipe's.
MFU_GOAL = 0.35
SPEEDUP_GOAL_64 = 2.0
F1_TOLERANCE = 0.01


def cpu_recipe_f1(results: Path) -> float:
    """The CPU recipe's MiniLM test macro-F1 (batch 16, 2 epochs), as benchmarks/training_benchmark.py measured it."""
    arms = json.loads((results / "training.json").read_text())["arms"]
    return next(a["test_f1_macro"] for a in arms if a["arm"] == "sentiment_flow")


def policy_section(policy: dict, today: dict, results: Path) -> str:
    """Markdown for a --policy run: the per-change table, the goals met or not, MiniLM with the policy on CPU."""
    m, arms = policy["machine"], policy["ablation"]
    done = [a for a in arms if "skipped" not in a]
    if not done:
        return f"\n## Per-device policy (`--policy`, {m['date']}, {m['device']})\n\nEvery arm was skipped: the time budget ran out first.\n"
    peak = next((a for a in done if a["peak_flops"]), None)

    def mfu(a):
        return f"{a['mfu']:.1%}" if a.get("mfu") is not None else "n/a"

    rows = "\n".join(
        f"| {a['batch_size']} | {a['arm']} | skipped: {a['skipped']} | | | | | | |"
        if "skipped" in a
        else f"| {a['batch_size']} | {a['arm']} | {a['samples_per_second']:,.0f} | "
        f"{' / '.join(f'{x:,.0f}' for x in a['window_samples_per_second'])} | {a['real_tokens_per_second']:,.0f} "
        f"({a['real_token_fraction']:.0%}) | {a['tokens_per_second']:,.0f} | {mfu(a)} | {a['graphs_compiled_while_timed']} "
        f"| {a['peak_memory_gib'] or 0:.1f} |"
        for a in arms
    )
    final = {a["batch_size"]: a for a in done if a["arm"] == POLICY_CHANGES[-1][0]}
    goals = []
    if 256 in final:
        met = final[256]["mfu"] is not None and final[256]["mfu"] >= MFU_GOAL
        goals.append(
            f"MFU at batch 256 with the whole policy: {mfu(final[256])} (goal {MFU_GOAL:.0%}: {'met' if met else 'not met'})"
        )
    if 64 in final and 64 in today:
        ratio = final[64]["samples_per_second"] / today[64]["samples_per_second"]
        goals.append(
            f"samples/s at batch 64: {final[64]['samples_per_second']:,.0f}, {ratio:.2f}x the first run's "
            f"{today[64]['samples_per_second']:,.0f} (goal {SPEEDUP_GOAL_64:g}x: {'met' if ratio >= SPEEDUP_GOAL_64 else 'not met'})"
        )
    ft = policy.get("finetune")
    if ft:
        reference = cpu_recipe_f1(results)
        close = abs(ft["test_f1_macro"] - reference) <= F1_TOLERANCE
        goals.append(
            f"MiniLM with the policy (compile={ft['torch_compile']}, {ft['optim']}, bf16={ft['bf16']}, padding to a "
            f"multiple of {ft['pad_to_multiple_of']}), batch {ft['batch_size']}, {ft['epochs']} epochs: test macro-F1 "
            f"{ft['test_f1_macro']:.4f} against the CPU recipe's {reference:.4f} (`results/training.json`; goal within "
            f"{F1_TOLERANCE}: {'met' if close else 'not met'})"
        )
        goals.append(
            f"saved on the GPU, reloaded where no GPU is visible (CUDA visible: {ft['cpu_cuda_visible']}): "
            f"{ft['cpu_agreement']:.2%} of test labels agree (goal: all)"
        )
    peak_text = (
        f"the {peak['peak_name']} dense bf16 peak ({peak['peak_flops'] / 1e12:.0f} TFLOP/s, datasheet)"
        if peak
        else "no known peak"
    )
    return f"""
## Per-device policy, change by change (`--policy`, {m["date"]}, {m["device"]})

Each change of `train.device_settings("cuda")` added to the previous row's, a fresh random-init
`DistilBertConfig()` per row through `build_trainer` ({done[0]["params"]:,} parameters, English texts repeated to
{done[0]["rows"]:,} rows, `group_by_length`). After {done[0]["warmup_steps"]} warm-up steps, {done[0]["windows"]} windows of
{done[0]["window_steps"]} steps are timed (GPU synchronised at each boundary); the row shows the median window
(every window's samples/s beside it). MFU = 6 × parameters × real (non-pad) tokens/s ÷ {peak_text};
a bf16 8192³ matrix product measured {policy.get("matmul_tflops") or 0:.0f} TFLOP/s on this card.
*graphs compiled while timed*: dynamo compilations inside the timed windows (0: no recompile was timed).

| batch | change (cumulative) | samples/s (median) | samples/s per window | real tokens/s (share) | tokens/s incl. pad | MFU | graphs compiled while timed | peak GiB |
|---|---|---|---|---|---|---|---|---|
{rows}

{chr(10).join(f"- {g}" for g in goals)}
"""


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", help="Data folder holding english/{train,valid,test}.csv.")
@click.option("--model", "model_dir", help="The packaged MiniLM's folder (weights and tokenizer).")
@click.option(
    "--out", type=click.Path(path_type=Path), help="Where gpu.json (or gpu_full.json) and the saved model go."
)
@click.option("--smoke", is_flag=True, help="Tiny sizes: check on a CPU that every part runs.")
@click.option("--full", is_flag=True, help="Only part 3: train() with MLflow + W&B, then pyfunc on CPU.")
@click.option(
    "--policy",
    is_flag=True,
    help="Parts 1-2 for the per-device policy: each change measured at batch 64 and 256, then MiniLM with the policy.",
)
@click.option(
    "--budget-s",
    type=float,
    default=240.0,
    show_default=True,
    help="--policy: arms not started within this many seconds are skipped.",
)
@click.option(
    "--diagnose", is_flag=True, help="Only throughput, arms in an order that separates warm-up, shape and loader costs."
)
@click.option(
    "--render", "render_paths", multiple=True, help="Render gpu.md/.json/.png from these JSON files; runs nothing."
)
@click.option(
    "--results", type=click.Path(path_type=Path), default=RESULTS, show_default=True, help="Where --render writes."
)
@click.option("--predict-on-cpu", "predict_dir", hidden=True)
@click.option("--pyfunc-on-cpu", "pyfunc_uri", hidden=True)
def main(
    data, model_dir, out, smoke, full, policy, budget_s, diagnose, render_paths, results, predict_dir, pyfunc_uri
) -> None:
    """Measure training on this machine's GPU and write JSON; or --render that JSON into results/gpu.md."""
    if render_paths:
        click.echo(render(render_paths, results).read_text())
        return
    if predict_dir or pyfunc_uri:
        answer = predict_on_cpu(predict_dir, data) if predict_dir else pyfunc_on_cpu(pyfunc_uri, data)
        click.echo(json.dumps(answer))
        return
    out.mkdir(parents=True, exist_ok=True)
    if full:
        answer = {"full": full_train(data, model_dir, max_train_samples=64 if smoke else 0)}
        (out / "gpu_full.json").write_text(json.dumps(answer, indent=2))
        click.echo(json.dumps(answer))
        return

    from transformers import AutoTokenizer, DistilBertConfig

    from sentiment_flow.config import LABEL2ID, LABELS

    rows = load(data)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    labels = dict(num_labels=len(LABELS), id2label=dict(enumerate(LABELS)), label2id=LABEL2ID)
    if smoke:
        config = DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, **labels)
        sizes = dict(
            arms_to_run=[(p, b) for p in ("dynamic", "global") for b in (4, 8)],
            rows=200,
            warmup=1,
            steps=3,
            seconds=30.0,
        )
    else:
        config = DistilBertConfig(**labels)  # distilbert-base-uncased's shape, vocabulary as MiniLM's (30,522)
        sizes = dict(
            arms_to_run=[(p, b) for p in ("dynamic", "global") for b in (16, 64, 256)],
            rows=20_000,
            warmup=10,
            steps=150,
            seconds=12.0,
        )
    if policy:
        run_policy(rows, tokenizer, config, model_dir, out, smoke, time.perf_counter() + budget_s)
        return
    if diagnose:  # the same arm twice, after another: is dynamic padding slow per step, or only at first?
        arms = [
            ("global", 16),
            ("dynamic", 16),
            ("dynamic", 16),
            ("dynamic8", 16),
            ("dynamic", 64),
            ("dynamic8", 64),
            ("dynamic8", 256),
        ]
        sizes = {
            **sizes,
            "arms_to_run": arms[:2] if smoke else arms,
            "steps": sizes["steps"] if smoke else 100,
            "seconds": 8.0,
        }
        answer = {"diagnose": throughput(rows, tokenizer, config, **sizes)}
        (out / "gpu_diagnose.json").write_text(json.dumps(answer, indent=2))
        click.echo(json.dumps(answer))
        return
    payload = {"machine": machine(), "matmul_tflops": matmul_tflops()}
    payload["throughput"] = throughput(rows, tokenizer, config, **sizes)
    (out / "gpu.json").write_text(json.dumps(payload, indent=2))  # part 1 kept even if part 2 fails
    small = load(data, max_train_samples=48) if smoke else rows
    epochs = 1 if smoke else 2
    payload["finetune"] = [finetune(small, model_dir, 16, epochs, check_on_cpu=True)]
    for batch_size in () if smoke else (64, 256):
        payload["finetune"].append(finetune(small, model_dir, batch_size, epochs, check_on_cpu=False))
    (out / "gpu.json").write_text(json.dumps(payload, indent=2))
    click.echo(json.dumps(payload))


if __name__ == "__main__":
    main()
