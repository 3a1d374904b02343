"""Hyperparameter search against the default recipe: does `tune`'s best trial test better than `train`'s defaults?

Both arms train `minilm` on the same English rows in their own sqlite store: the default recipe once
(`sentiment_flow.training.train`), and a study (`sentiment_flow.tuning.tune`) of --trials trials within
--timeout-minutes. The study chooses its best trial by validation macro-F1; both arms' test macro-F1 is reported.
Writes benchmarks/results/tuning.md, tuning.json and the study's plots (tuning_optimization_history.png,
tuning_param_importances.png). Run from the repo root:

    python benchmarks/tuning_benchmark.py --data ../shared/data/multilingual-sentiments --trials 8 --timeout-minutes 25

On a busy 2-core machine, --max-train-samples 600 keeps both arms within the hour.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import click
import mlflow

from sentiment_flow.config import TrainConfig, TuneConfig
from sentiment_flow.training import train
from sentiment_flow.tuning import tune

RESULTS = Path(__file__).resolve().parent / "results"
# Smaller than config.SEARCH_SPACE so that a CPU finishes several trials within the hour: at most 3 epochs, no
# batch of 8 (slowest per epoch), and max_length fixed at 128 (the English texts are at most 78 tokens).
BENCHMARK_SPACE = {
    "learning_rate": {"low": 3e-5, "high": 5e-4, "log": True},
    "epochs": [1, 2, 3],
    "batch_size": [16, 32],
    "weight_decay": {"low": 0.0, "high": 0.1},
    "warmup_ratio": {"low": 0.0, "high": 0.2},
    "label_smoothing": {"low": 0.0, "high": 0.2},
}


def default_arm(base: TrainConfig) -> dict:
    start = time.perf_counter()
    result = train(base)
    run = mlflow.MlflowClient().get_run(result.run_id)
    return {
        "arm": "default recipe",
        "seconds": time.perf_counter() - start,
        "test_rows": int(run.data.params["test_rows"]),
        "train_rows": int(run.data.params["train_rows"]),
        "best_validation_f1_macro": result.best_eval_f1_macro,
        "test_f1_macro": result.metrics["test_f1_macro"],
        "test_accuracy": result.metrics["test_accuracy"],
        "params": {"learning_rate": base.lr, "epochs": base.epochs, "batch_size": base.batch_size},
    }


def tuned_arm(base: TrainConfig, trials: int, timeout_minutes: float) -> tuple[dict, str]:
    start = time.perf_counter()
    cfg = TuneConfig(
        trials=trials, timeout_minutes=timeout_minutes, study="benchmark", search_space=json.dumps(BENCHMARK_SPACE)
    )
    result = tune(base, cfg)
    return {
        "arm": f"tune: best of {sum(result.counts.values())} trials",
        "seconds": time.perf_counter() - start,
        "trials": result.counts,
        "best_trial": result.best_trial,
        "best_validation_f1_macro": result.best_value,
        "test_f1_macro": result.best_test_metrics.get("test_f1_macro"),
        "test_accuracy": result.best_test_metrics.get("test_accuracy"),
        "params": result.best_params,
        "version": result.version,
    }, result.run_id


def write_results(arms: list[dict], base: TrainConfig, trials: int, timeout_minutes: float, run_id: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        plots = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="plots", dst_path=folder))
        for plot in plots.glob("*.png"):
            shutil.copy(plot, RESULTS / f"tuning_{plot.name}")
    payload = {
        "date": datetime.date.today().isoformat(),
        "model": base.model,
        "data": base.data,
        "lang": base.lang,
        "trials": trials,
        "timeout_minutes": timeout_minutes,
        "search_space": BENCHMARK_SPACE,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_average_1m_at_end": os.getloadavg()[0],
        "arms": arms,
    }
    (RESULTS / "tuning.json").write_text(json.dumps(payload, indent=2) + "\n")
    rows = "\n".join(
        f"| {a['arm']} | {a['best_validation_f1_macro']:.4f} | {a['test_f1_macro']:.4f} | {a['test_accuracy']:.4f} "
        f"| {a['seconds'] / 60:.1f} | `{json.dumps(a['params'])}` |"
        for a in arms
    )
    (RESULTS / "tuning.md").write_text(
        f"""# Hyperparameter search: best trial vs the default recipe

Written by `benchmarks/tuning_benchmark.py` on {payload["date"]}; do not edit by hand.

Model `{base.model}`, data `{base.data}` ({base.lang}; {arms[0]["train_rows"]} training rows, full validation
and test splits), seed {base.seed}. The study: at most {trials} trials
within {timeout_minutes:g} minutes (no new trial after that), TPE sampler, median pruner on each epoch's
validation macro-F1, over `{json.dumps(BENCHMARK_SPACE)}`; other values as the default recipe. Trials:
{json.dumps(arms[1]["trials"])}. The best trial is chosen by validation macro-F1; test macro-F1 is reported
for both arms and used by neither. Device: CPU, {os.cpu_count()} cores, shared with other work (1-minute load
average at the end: {payload["load_average_1m_at_end"]:.2f}), so minutes are indicative.

| arm | validation macro-F1 (kept epoch) | test macro-F1 | test accuracy | minutes | params |
|---|---|---|---|---|---|
{rows}

Test macro-F1, tuned minus default: **{arms[1]["test_f1_macro"] - arms[0]["test_f1_macro"]:+.4f}**. One seed
and one test split of {arms[0]["test_rows"]} rows: a difference of about 0.02 is within noise (`promote`'s paired
bootstrap tests it on the same rows).

![optimization history](tuning_optimization_history.png)
![parameter importances](tuning_param_importances.png)
"""
    )


@click.command()
@click.option("--data", default="../shared/data/multilingual-sentiments", show_default=True)
@click.option("--lang", default="english", show_default=True)
@click.option("--model", default="minilm", show_default=True)
@click.option("--trials", default=8, show_default=True)
@click.option("--timeout-minutes", default=25.0, show_default=True)
@click.option("--max-train-samples", default=0, show_default=True, help="Both arms train on this many rows (0 = all).")
def main(data: str, lang: str, model: str, trials: int, timeout_minutes: float, max_train_samples: int) -> None:
    store = tempfile.mkdtemp(prefix="tuning-benchmark-")
    os.environ.update(
        MLFLOW_TRACKING_URI=f"sqlite:///{store}/mlflow.db", WANDB_MODE="offline", WANDB_DIR=store, WANDB_SILENT="true"
    )
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    base = TrainConfig(
        lang=lang,
        model=model,
        data=str(Path(data).resolve()),
        max_train_samples=max_train_samples,
        registered_model_name="benchmark",
    )
    arms = [default_arm(base)]
    click.echo(json.dumps(arms[-1]), err=True)
    tuned, run_id = tuned_arm(base, trials, timeout_minutes)
    arms.append(tuned)
    click.echo(json.dumps(tuned), err=True)
    write_results(arms, base, trials, timeout_minutes, run_id)
    click.echo((RESULTS / "tuning.md").read_text())


if __name__ == "__main__":
    main()
