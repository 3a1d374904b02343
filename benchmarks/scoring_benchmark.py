"""Batch scoring speed and memory: this project's scorer against `mlflow models predict` and a plain
`pyfunc.predict` over the whole DataFrame, on the same registered model and the same real texts.

Each arm runs as its own process (model loading and CSV I/O included, as a user would run it); its
peak RSS is the largest resident size of the process and its children, sampled every 0.1 s. The
scorer also runs at a small and a large size to show that its memory does not grow with the file.

Writes benchmarks/results/scoring.md, .json and .png. Run from the repo root:

    python benchmarks/scoring_benchmark.py --data ../shared/data/multilingual-sentiments
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import pandas as pd
import psutil

RESULTS = Path(__file__).resolve().parent / "results"
MODEL_NAME = "bench-scoring"

PLAIN_PYFUNC = """
import sys, mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
frame = pd.read_csv(sys.argv[2], keep_default_na=False)
model.predict(frame[["text"]]).to_csv(sys.argv[3], index=False)
"""


def measure(command: list[str], env: dict[str, str]) -> dict:
    """Wall seconds and peak RSS (MiB, process tree) of one command; fails loudly if it fails."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:  # a child ended between listing and reading
            pass
        time.sleep(0.1)
    seconds = time.perf_counter() - start
    stderr = proc.stderr.read()
    if proc.returncode != 0:
        raise click.ClickException(f"{' '.join(command[:4])} ... failed ({proc.returncode}):\n{stderr[-3000:]}")
    return {"seconds": seconds, "peak_rss_mib": peak / 2**20}


def measure_arms(commands: dict[str, list[str]], rows: int, env: dict[str, str]) -> list[dict]:
    """`measure` of each named command, one after another, each scoring `rows` rows; with rows/s."""
    arms = []
    for arm, command in commands.items():
        click.echo(f"== {arm} ({rows:,} rows)", err=True)
        arms.append({"arm": arm, "rows": rows, **measure(command, env)})
        arms[-1]["rows_per_second"] = rows / arms[-1]["seconds"]
        click.echo(json.dumps(arms[-1]), err=True)
    return arms


def labels_of(arm: str, path: Path) -> list[str]:
    if arm == "mlflow models predict":
        return [row["label"] for row in json.loads(path.read_text())["predictions"]]
    return list(pd.read_csv(path, keep_default_na=False)["label"])


def register_model(model: str, env: dict[str, str]) -> str:
    """Log `model` (untrained head: speed does not depend on the weights' values) and register it."""
    code = f"""
import mlflow
from sentiment_flow.training import tracking
from sentiment_flow.config import TrainConfig
from sentiment_flow.training.model import load_tokenizer_and_model
tokenizer, model = load_tokenizer_and_model({model!r})
with mlflow.start_run():
    info = tracking.log_model(model, tokenizer, {MODEL_NAME!r}, max_length=TrainConfig.max_length)
print(info.registered_model_version)
"""
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return f"models:/{MODEL_NAME}/{out.stdout.strip().splitlines()[-1]}"


def repeated_texts(test_csv: Path, rows: int, path: Path) -> None:
    texts = pd.read_csv(test_csv, keep_default_na=False)["text"]
    repeats = -(-rows // len(texts))
    pd.DataFrame({"text": pd.concat([texts] * repeats, ignore_index=True)[:rows]}).to_csv(path, index=False)


def write_results(payload: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scoring.json").write_text(json.dumps(payload, indent=2) + "\n")
    arms, sizes, machine = payload["arms"], payload["scorer_sizes"], payload["machine"]
    rows = "\n".join(
        f"| {a['arm']} | {a['rows']:,} | {a['seconds']:.1f} | {a['rows_per_second']:.1f} | {a['peak_rss_mib']:,.0f} "
        f"| {a['agreement_with_pyfunc']:.2%} |"
        for a in arms
    )
    size_rows = "\n".join(f"| {s['rows']:,} | {s['seconds']:.1f} | {s['peak_rss_mib']:,.0f} |" for s in sizes)
    small, large = sizes[0], sizes[-1]
    (RESULTS / "scoring.md").write_text(
        f"""# Batch scoring: speed and memory

Written by `benchmarks/scoring_benchmark.py` on {machine["date"]}; do not edit by hand.

Model `{payload["model"]}` (logged as a transformers-flavor model, max_length {payload["max_length"]}),
texts of `{payload["test_csv"]}` repeated to the row counts below. {machine["cores"]} cores, no GPU,
torch {machine["torch"]}; 1-minute load average when the run ended: {machine["load_average_1m_at_end"]:.2f}.
Each arm is a separate process, timed from start to exit (model loading and CSV I/O included); peak RSS
is the largest resident size of the process tree.

| arm | rows | seconds | rows / s | peak RSS (MiB) | labels equal to plain pyfunc |
|---|---|---|---|---|---|
{rows}

**Scorer vs `mlflow models predict`: {payload["speedup_vs_mlflow_predict"]:.2f}x** rows/s
(target ≥ 1.5x); vs plain `pyfunc.predict`: {payload["speedup_vs_pyfunc"]:.2f}x.

Scorer memory at two sizes (chunks of {payload["chunk_size"]:,} rows):

| rows | seconds | peak RSS (MiB) |
|---|---|---|
{size_rows}

**Peak RSS {large["rows"]:,} vs {small["rows"]:,} rows: {payload["rss_change"]:+.1%}** (target within ±20%).

![rows per second](scoring.png)
"""
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (speed, memory) = plt.subplots(1, 2, figsize=(10, 3))
    names = [a["arm"] for a in arms]
    speed.barh(names, [a["rows_per_second"] for a in arms], color=["tab:blue", "tab:gray", "tab:gray"])
    speed.set_xlabel("rows / s (higher is better)")
    memory.barh(names, [a["peak_rss_mib"] for a in arms], color=["tab:blue", "tab:gray", "tab:gray"])
    memory.set_xlabel("peak RSS, MiB (lower is better)")
    memory.set_yticks([])
    fig.suptitle(f"Scoring {arms[0]['rows']:,} rows with {payload['model']}")
    fig.tight_layout()
    fig.savefig(RESULTS / "scoring.png", dpi=120)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", default="../shared/data/multilingual-sentiments", show_default=True, help="Data folder.")
@click.option("--lang", default="english", show_default=True)
@click.option("--model", default="minilm", show_default=True, help="Model (default: the packaged MiniLM).")
@click.option("--rows", default=100_000, show_default=True, help="Rows every arm scores.")
@click.option("--small", default=10_000, show_default=True, help="The scorer's small size for the memory check.")
@click.option("--chunk-size", default=2048, show_default=True, help="The scorer's --chunk-size.")
def main(data: str, lang: str, model: str, rows: int, small: int, chunk_size: int) -> None:
    """Score the same texts three ways and at two sizes; write the table."""
    import torch

    from sentiment_flow.config import TrainConfig

    shown = Path(data) / lang / "test.csv"
    test_csv = shown.resolve()  # the run works in a temporary folder
    if not test_csv.is_file():
        raise click.ClickException(f"{shown} does not exist; pass --data <folder with {lang}/test.csv>.")
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "HF_HUB_OFFLINE": "1",
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db",
        }
        os.chdir(tmp)  # MLflow's artifacts and any stray files stay in the temporary folder
        model_uri = register_model(model, env)
        for n in (rows, small):
            repeated_texts(test_csv, n, tmp / f"in-{n}.csv")
        inp = str(tmp / f"in-{rows}.csv")
        score = [sys.executable, "-m", "sentiment_flow", "score", model_uri]
        commands = {
            "sentiment_flow score": [*score, inp, str(tmp / "scorer.csv"), "--chunk-size", str(chunk_size)],
            "mlflow models predict": [
                str(bin_dir / "mlflow"),
                "models",
                "predict",
                "-m",
                model_uri,
                "-i",
                inp,
                "-o",
                str(tmp / "predict.json"),
                "-t",
                "csv",
                "--env-manager",
                "local",
            ],
            "plain pyfunc.predict": [sys.executable, "-c", PLAIN_PYFUNC, model_uri, inp, str(tmp / "pyfunc.csv")],
        }
        outputs = {
            "sentiment_flow score": "scorer.csv",
            "mlflow models predict": "predict.json",
            "plain pyfunc.predict": "pyfunc.csv",
        }
        arms = measure_arms(commands, rows, env)
        reference = labels_of("plain pyfunc.predict", tmp / outputs["plain pyfunc.predict"])
        for arm in arms:
            labels = labels_of(arm["arm"], tmp / outputs[arm["arm"]])
            arm["agreement_with_pyfunc"] = sum(a == b for a, b in zip(labels, reference)) / len(reference)

        click.echo(f"== sentiment_flow score ({small:,} rows)", err=True)
        small_run = measure(
            [*score, str(tmp / f"in-{small}.csv"), str(tmp / "small.csv"), "--chunk-size", str(chunk_size)], env
        )
    sizes = [{"rows": small, **small_run}, {"rows": rows, **{k: arms[0][k] for k in ("seconds", "peak_rss_mib")}}]
    ours, predict, plain = arms
    payload = {
        "model": model,
        "model_uri": model_uri,
        "max_length": TrainConfig.max_length,
        "test_csv": str(shown),
        "chunk_size": chunk_size,
        "machine": {
            "date": datetime.date.today().isoformat(),
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "load_average_1m_at_end": os.getloadavg()[0],
        },
        "arms": arms,
        "scorer_sizes": sizes,
        "speedup_vs_mlflow_predict": ours["rows_per_second"] / predict["rows_per_second"],
        "speedup_vs_pyfunc": ours["rows_per_second"] / plain["rows_per_second"],
        "rss_change": sizes[1]["peak_rss_mib"] / sizes[0]["peak_rss_mib"] - 1,
    }
    write_results(payload)
    click.echo((RESULTS / "scoring.md").read_text())


if __name__ == "__main__":
    main()
