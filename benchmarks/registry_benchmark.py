"""Registry latency: a sqlite file store vs the team server (`mlflow server` on PostgreSQL, artifacts proxied).

For each store, on the same model: `status` (every version, its run's metrics, the alias history),
`promote` to `challenger` with every gate (the smoke test loads the model and predicts), and
`mlflow.pyfunc.load_model("models:/NAME@champion")` as scoring starts. The server is started here by
`sentiment_flow.server.app.start` (embedded PostgreSQL, no --auth) and stopped at the end; its client talks
HTTP on loopback, so the numbers show the server's own cost, not a network's.

Writes benchmarks/results/registry.md, .json and .png. Run from the repo root:

    python benchmarks/registry_benchmark.py --model minilm
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import click

RESULTS = Path(__file__).resolve().parent / "results"
NAME = "bench-registry"
OPERATIONS = ("status", "promote (all gates)", "load model for scoring")


def timed(function, repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return seconds


def measure_store(uri: str, model: str, versions: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each operation against the store at `uri`."""
    import mlflow
    from mlflow import MlflowClient

    from sentiment_flow import registry
    from sentiment_flow.config import TrainConfig
    from sentiment_flow.training import tracking
    from sentiment_flow.training.model import load_tokenizer_and_model

    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    tokenizer, network = load_tokenizer_and_model(model)
    with mlflow.start_run():
        mlflow.log_metrics({"test_f1_macro": 0.7, "test_accuracy": 0.7})
        info = tracking.log_model(network, tokenizer, NAME, max_length=TrainConfig.max_length)
    first = str(info.registered_model_version)
    source = client.get_model_version(NAME, first).source
    candidates = []
    for _ in range(versions):  # more versions make `status` read more; each shares the logged weights
        with mlflow.start_run() as run:
            mlflow.log_metrics({"test_f1_macro": 0.8, "test_accuracy": 0.8})
        created = client.create_model_version(NAME, source, run.info.run_id, model_id=source.split("/")[-1])
        candidates.append(str(created.version))
    registry.promote(NAME, first, "champion")

    promotions = iter(candidates)
    return {
        "status": timed(lambda: registry.status(NAME), repeats),
        "promote (all gates)": timed(lambda: registry.promote(NAME, next(promotions), "challenger"), repeats),
        "load model for scoring": timed(lambda: mlflow.pyfunc.load_model(f"models:/{NAME}@champion"), repeats),
    }


def summary(seconds: list[float]) -> dict:
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds), "n": len(seconds)}


@click.command()
@click.option("--model", default="minilm", show_default=True, help="What to register: minilm, a path or a Hub id.")
@click.option("--versions", default=10, show_default=True, help="Versions of the model in each store.")
@click.option("--repeats", default=5, show_default=True, help="Calls per operation (at most --versions).")
def main(model: str, versions: int, repeats: int) -> None:
    """Time status, promote and model loading on sqlite and on the PostgreSQL team server."""
    from sentiment_flow.server import app as server

    repeats = min(repeats, versions)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # sqlite's artifacts (./mlruns) and anything else land in the temporary folder
        Path(tmp).chmod(0o711)  # as root, PostgreSQL's own user must pass through; the server opens no parent
        results["sqlite file store"] = measure_store(f"sqlite:///{tmp}/mlflow.db", model, versions, repeats)
        with server.start(Path(tmp) / "team", port=_free_port(), workers=2) as team:
            results["PostgreSQL team server"] = measure_store(team.url, model, versions, repeats)
    write_results(results, model, versions)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_results(results: dict[str, dict[str, list[float]]], model: str, versions: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    import torch

    RESULTS.mkdir(exist_ok=True)
    stores = list(results)
    table = {store: {op: summary(results[store][op]) for op in OPERATIONS} for store in stores}
    load = os.getloadavg()[0]
    document = {
        "date": datetime.date.today().isoformat(),
        "model": model,
        "versions": versions,
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "mlflow": mlflow.__version__,
        "python": platform.python_version(),
        "load_average_1min_at_end": load,
        "results": table,
        "raw_seconds": results,
    }
    (RESULTS / "registry.json").write_text(json.dumps(document, indent=2) + "\n")

    rows = "\n".join(
        f"| {op} | "
        + " | ".join(
            f"{table[s][op]['median_s']:.2f} ({table[s][op]['min_s']:.2f}-{table[s][op]['max_s']:.2f})" for s in stores
        )
        + f" | {table[stores[1]][op]['median_s'] / table[stores[0]][op]['median_s']:.2f}x |"
        for op in OPERATIONS
    )
    (RESULTS / "registry.md").write_text(f"""# Registry latency: sqlite file store vs PostgreSQL team server

Written by `benchmarks/registry_benchmark.py` on {document["date"]}; do not edit by hand.

Model `{model}` registered with {versions + 1} versions in each store; mlflow {mlflow.__version__}, torch
{torch.__version__}, {os.cpu_count()} cores, no GPU. The team server is `sentiment-flow server`'s embedded
PostgreSQL with 2 workers, no `--auth`, reached over loopback HTTP; artifacts go through its proxy.
**The machine was shared with other jobs** (1-minute load average {load:.2f} when the run ended): read the
ratios, not the absolute seconds, and expect noise.

Seconds per call, median (min-max) of {table[stores[0]]["status"]["n"]}:

| operation | {" | ".join(stores)} | server / sqlite |
|---|---|---|---|
{rows}

`promote` includes every gate; its smoke test loads the model, so it costs about one model load more than
the registry reads and writes (and the concurrency hand-shake: announce, settle, read back).

![median seconds per operation](registry.png)
""")

    figure, axis = plt.subplots(figsize=(7, 3.5))
    width = 0.38
    for i, store in enumerate(stores):
        positions = [j + (i - 0.5) * width for j in range(len(OPERATIONS))]
        axis.bar(positions, [table[store][op]["median_s"] for op in OPERATIONS], width, label=store)
    axis.set_xticks(range(len(OPERATIONS)), OPERATIONS)
    axis.set_ylabel("median seconds per call")
    axis.legend()
    figure.tight_layout()
    figure.savefig(RESULTS / "registry.png", dpi=120)
    click.echo((RESULTS / "registry.md").read_text())


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
