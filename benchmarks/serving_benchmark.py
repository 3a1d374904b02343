"""`sentiment-flow serve` (cross-request batching) against `mlflow models serve` and the batch scorer, fp32 and int8.

For each model, in one run on the same texts (the English test split): the batch scorer (`load_scorer` +
`predict_texts`, batches of 32, in a process of its own) as the ceiling, and the model alone on one call of 1, 8,
32 and 128 random texts (what one batch of each arm gives at most, before any request is parsed); then both
servers started (loopback, one process each, `--env-manager local` for MLflow's), each arm run against one and then
the other so that a change in the machine's load hits both: 1-text requests from 1, 8 and 32 concurrent clients,
and 64-text requests from 8 clients. Each arm runs for --seconds after a warm-up; rows/s is over all clients, p50/p99 are per request. The
clients are threads of this process with one keep-alive connection each: they share the machine's cores with the
server, as the batch scorer does not. With --sweep, `sentiment-flow serve` of the int8 model is also run at several
--max-batch / --max-wait-ms (1-text requests from 32 clients, 64-text from 8): how the defaults were chosen.

Models: registered versions in --store (an MLflow sqlite store folder, read only: the benchmark copies its
database) named by --fp32 and --int8 (models:/NAME/VERSION).

Writes benchmarks/results/serving.md, .json and .png. Run from the repo root, e.g.:

    python benchmarks/serving_benchmark.py --store STORE --fp32 models:/bench-int8/1 --int8 models:/bench-int8-int8/2
"""

from __future__ import annotations

import datetime
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import click
import numpy as np
import pandas as pd

from sentiment_flow.config import ServeConfig

RESULTS = Path(__file__).resolve().parent / "results"
ARMS = [(1, 1), (1, 8), (1, 32), (64, 8)]  # (texts per request, concurrent clients)
ONE_THREAD = "sentiment-flow --torch-threads 1"
SERVERS = ("mlflow", "sentiment-flow", ONE_THREAD)
DEFAULTS = ServeConfig()
# --max-batch / --max-wait-ms tried beside ServeConfig's defaults
SWEEP = [(128, 0.0), (128, 5.0), (128, 50.0), (16, 20.0), (32, 20.0), (64, 20.0)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command: list[str], port: int, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
            return server
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                stop(server)
                raise click.ClickException(f"{command[:3]} did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)


def stop(server: subprocess.Popen) -> None:
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)


def load(port: int, texts: list[str], size: int, clients: int, seconds: float) -> dict:
    """Rows/s and latency percentiles of `clients` threads posting `size`-text requests for `seconds`."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures = [0] * clients
    barrier, deadline = threading.Barrier(clients + 1), [0.0]

    def client(i: int) -> None:
        rng = np.random.default_rng(i)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        barrier.wait()
        while time.perf_counter() < deadline[0]:
            body = json.dumps({"inputs": [texts[j] for j in rng.integers(0, len(texts), size)]})
            began = time.perf_counter()
            connection.request("POST", "/invocations", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            answer = response.read()
            if response.status != 200 or len(json.loads(answer)["predictions"]) != size:
                failures[i] += 1  # counted, and left out of rows/s and the latencies
                continue
            latencies[i].append(time.perf_counter() - began)
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    deadline[0] = time.perf_counter() + seconds
    began = time.perf_counter()
    barrier.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    every = np.concatenate([np.asarray(lat) for lat in latencies]) * 1000
    return {
        "texts_per_request": size,
        "clients": clients,
        "requests": int(every.size),
        "failed": int(sum(failures)),  # answered other than 200 with one prediction per text
        "rows_per_second": size * every.size / elapsed,
        "p50_ms": float(np.percentile(every, 50)),
        "p99_ms": float(np.percentile(every, 99)),
    }


def measure_servers(commands: dict[str, list[str]], ports, env, folder: Path, texts, arms, seconds) -> dict:
    """Each arm against each server in turn (both running, so that a change in the machine's load hits both):
    {server: [one row per arm]}."""
    servers = {}
    try:
        for name, command in commands.items():
            servers[name] = start(command, ports[name], env, folder / f"{name}.log")
            load(ports[name], texts, 64, 2, 2.0)  # warm-up: first calls allocate and compile
        rows: dict[str, list[dict]] = {name: [] for name in commands}
        for size, clients in arms:
            for name in commands:
                rows[name].append(load(ports[name], texts, size, clients, seconds))
                click.echo(f"{name} {json.dumps(rows[name][-1])}", err=True)
        return rows
    finally:
        for server in servers.values():
            stop(server)


SCORER = """
import json, sys, time, numpy as np, pandas as pd, mlflow
from sentiment_flow.scoring import load_scorer, predict_texts
from sentiment_flow.serving.versions import batch_predict
texts = json.load(open(sys.argv[2]))
scorer = load_scorer(sys.argv[1])
predict_texts(scorer, pd.Series(texts[:256]))
best = 0.0
for _ in range(2):
    began = time.perf_counter()
    predict_texts(scorer, pd.Series(texts))
    best = max(best, len(texts) / (time.perf_counter() - began))
# The model alone on one call of N random texts, as a server's batch calls it: the most any batch of N gives.
predict = batch_predict(mlflow.pyfunc.load_model(sys.argv[1]))
rng, calls = np.random.default_rng(0), {}
for size in json.loads(sys.argv[3]):
    frames = [pd.DataFrame({"text": [texts[i] for i in rng.integers(0, len(texts), size)]}) for _ in range(max(8, 640 // size))]
    predict(frames[0])
    began = time.perf_counter()
    for frame in frames:
        predict(frame)
    calls[size] = size * len(frames) / (time.perf_counter() - began)
print(json.dumps({"batch": best, "calls": calls}))
"""
# Texts per model call in each arm when a batch holds every waiting request (up to the default --max-batch).
CALL_SIZES = sorted({min(size * clients, DEFAULTS.max_batch) for size, clients in ARMS})


def batch_scorer(uri: str, texts: list[str], env: dict[str, str], folder: Path) -> dict:
    """Rows/s of the batch scorer on `texts` (the faster of two passes after a warm-up) and of the model alone on
    calls of CALL_SIZES random texts, in a process of its own like each server."""
    path = folder / "texts.json"
    path.write_text(json.dumps(texts))
    command = [sys.executable, "-c", SCORER, uri, str(path), json.dumps(CALL_SIZES)]
    output = subprocess.run(command, env=env, capture_output=True, text=True)
    if output.returncode:
        raise click.ClickException(f"the batch scorer failed:\n{output.stderr[-3000:]}")
    found = json.loads(output.stdout.strip().splitlines()[-1])
    return {"batch_scorer_rows_per_second": found["batch"], "model_alone_rows_per_second": found["calls"]}


@click.command()
@click.option("--store", required=True, type=click.Path(exists=True, file_okay=False), help="Store folder.")
@click.option("--fp32", "fp32_uri", required=True, help="models:/NAME/VERSION of the fp32 model.")
@click.option("--int8", "int8_uri", required=True, help="models:/NAME/VERSION of the int8 variant.")
@click.option("--model-label", default="the packaged MiniLM fine-tuned on English", help="What the models are.")
@click.option("--data", default="../shared/data/multilingual-sentiments", help="Folder with english/test.csv.")
@click.option("--seconds", default=8.0, help="Seconds per arm.")
@click.option("--sweep", is_flag=True, help="Also run sentiment-flow serve of int8 at other batch settings.")
def main(store, fp32_uri, int8_uri, model_label, data, seconds, sweep) -> None:
    texts = pd.read_csv(Path(data) / "english" / "test.csv")["text"].astype(str).tolist()
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(Path(store) / "mlflow.db", Path(tmp) / "mlflow.db")  # the store itself stays untouched
        uri = f"sqlite:///{tmp}/mlflow.db"
        os.environ["MLFLOW_TRACKING_URI"] = uri
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        load_start = os.getloadavg()[0]
        highest = [load_start]
        sampling = threading.Event()
        threading.Thread(target=sample_load, args=(highest, sampling), daemon=True).start()
        payload: dict = {"models": {}, "sweep": []}
        for model, model_uri in {"fp32": fp32_uri, "int8": int8_uri}.items():
            (Path(tmp) / model).mkdir()
            result = {"uri": model_uri, **batch_scorer(model_uri, texts, env, Path(tmp))}
            click.echo(f"{model} batch scorer {result['batch_scorer_rows_per_second']:.1f} rows/s", err=True)
            ports = {"mlflow": free_port(), "sentiment-flow": free_port()}
            commands = {
                "mlflow": ["mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local"],
                "sentiment-flow": [sys.executable, "-m", "sentiment_flow", "serve", model_uri],
            }
            commands["mlflow"] += ["-p", str(ports["mlflow"])]
            commands["sentiment-flow"] += ["--port", str(ports["sentiment-flow"])]
            if model == "fp32":  # PyTorch on one thread: what --torch-threads 1 does for a host shared with busy jobs
                ports[ONE_THREAD] = free_port()
                commands[ONE_THREAD] = [
                    *commands["sentiment-flow"][:-1],
                    str(ports[ONE_THREAD]),
                    "--torch-threads",
                    "1",
                ]
            result |= measure_servers(commands, ports, env, Path(tmp) / model, texts, ARMS, seconds)
            payload["models"][model] = result
        if sweep:
            for max_batch, max_wait in SWEEP:
                port = free_port()
                command = [sys.executable, "-m", "sentiment_flow", "serve", int8_uri, "--port", str(port)]
                command += ["--max-batch", str(max_batch), "--max-wait-ms", str(max_wait)]
                arms = [(1, 32), (64, 8)]
                rows = measure_servers({"sweep": command}, {"sweep": port}, env, Path(tmp), texts, arms, seconds)
                payload["sweep"].append({"max_batch": max_batch, "max_wait_ms": max_wait, "arms": rows["sweep"]})
        sampling.set()
        payload["machine"] = {
            "date": datetime.date.today().isoformat(),
            "cores": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "load_average_1m_at_start": load_start,
            "load_average_1m_at_end": os.getloadavg()[0],
            "load_average_1m_highest": max(highest),
        }
        payload |= {"model_label": model_label, "seconds_per_arm": seconds, "texts": len(texts)}
        payload["defaults"] = {"max_batch": DEFAULTS.max_batch, "max_wait_ms": DEFAULTS.max_wait_ms}
    write_results(payload)


def sample_load(highest: list[float], done: threading.Event) -> None:
    """Append the 1-minute load average to `highest` every 5 s until `done`: other jobs show as peaks."""
    while not done.wait(5.0):
        highest.append(os.getloadavg()[0])


def write_results(payload: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serving.json").write_text(json.dumps(payload, indent=2) + "\n")
    machine = payload["machine"]
    lines = []
    for model, result in payload["models"].items():
        ceiling = result["batch_scorer_rows_per_second"]
        lines.append(
            f"| {model} | batch scorer (`predict_texts`, batches of 32) | - | - | {ceiling:.1f} | 100% | - | - |"
        )
        for size, rows in result["model_alone_rows_per_second"].items():
            lines.append(
                f"| {model} | model alone, {size} random text{'' if size == '1' else 's'} per call | {size} | - | {rows:.1f} | {rows / ceiling:.0%} | - | - |"
            )
        for server in [server for server in SERVERS if server in result]:
            name = {"mlflow": "`mlflow models serve`", "sentiment-flow": "`sentiment-flow serve`"}.get(
                server, "`sentiment-flow serve --torch-threads 1`"
            )
            for arm in result[server]:
                lines.append(
                    f"| {model} | {name} | {arm['texts_per_request']} | {arm['clients']} | {arm['rows_per_second']:.1f} "
                    f"| {arm['rows_per_second'] / ceiling:.0%} | {arm['p50_ms']:.0f} | {arm['p99_ms']:.0f} |"
                )
    goals = []
    for model, result in payload["models"].items():
        arm = next(a for a in result["sentiment-flow"] if (a["texts_per_request"], a["clients"]) == (1, 32))
        mlflow_arm = next(a for a in result["mlflow"] if (a["texts_per_request"], a["clients"]) == (1, 32))
        share = arm["rows_per_second"] / result["batch_scorer_rows_per_second"]
        alone = result["model_alone_rows_per_second"]["32"] / result["batch_scorer_rows_per_second"]
        goals.append(
            f"- {model}: 1-text requests from 32 clients at {share:.0%} of the batch scorer's rows/s (goal >= 60%: "
            f"{'met' if share >= 0.6 else 'not met'}), p99 {arm['p99_ms']:.0f} ms"
            + (f" (goal <= 150 ms: {'met' if arm['p99_ms'] <= 150 else 'not met'})" if model == "int8" else "")
            + f"; `mlflow models serve` {mlflow_arm['rows_per_second'] / result['batch_scorer_rows_per_second']:.0%}, "
            f"p99 {mlflow_arm['p99_ms']:.0f} ms. The model alone on calls of 32 random texts (the batch 32 "
            f"clients make at best, before any request is parsed or answered): {alone:.0%}."
        )
    # The benchmark's own server and client threads keep the load near the cores' count; twice that is other jobs.
    shared = (
        "**the machine was shared with other jobs**, so every number here is noisy and low; compare rows within one "
        "run only."
        if machine["load_average_1m_highest"] > 2 * machine["cores"]
        else "no other job ran."
    )
    failed = sum(a["failed"] for r in payload["models"].values() for s in SERVERS if s in r for a in r[s])
    defaults = payload["defaults"]
    sweep = "\n".join(
        f"| {row['max_batch']} | {row['max_wait_ms']:g} | "
        + " | ".join(f"{a['rows_per_second']:.1f} | {a['p99_ms']:.0f}" for a in row["arms"])
        + " |"
        for row in payload["sweep"]
    )
    sweep_section = (
        f"""
## Batch settings (`sentiment-flow serve` of int8; the default {defaults["max_batch"]} texts / {defaults["max_wait_ms"]:g} ms is in the table above)

| --max-batch | --max-wait-ms | 1 text x 32 clients rows/s | p99 ms | 64 texts x 8 clients rows/s | p99 ms |
|---|---|---|---|---|---|
{sweep}
"""
        if payload["sweep"]
        else ""
    )
    (RESULTS / "serving.md").write_text(
        f"""# Serving: `sentiment-flow serve` vs `mlflow models serve` vs the batch scorer

Written by `benchmarks/serving_benchmark.py` on {machine["date"]}; do not edit by hand.

Models: {payload["model_label"]}: fp32 `{payload["models"]["fp32"]["uri"]}`, int8 `{payload["models"]["int8"]["uri"]}`.
Texts: the English test split ({payload["texts"]} texts, drawn at random per request). Each arm runs
{payload["seconds_per_arm"]:g} s after a warm-up; clients are threads of the benchmark with one keep-alive connection
each, on the same {machine["cores"]} cores as the server. 1-minute load average {machine["load_average_1m_at_start"]:.1f}
at start, {machine["load_average_1m_highest"]:.1f} at its highest, {machine["load_average_1m_at_end"]:.1f} at end: {shared}
Failed requests in all arms: {failed}.

| model | server | texts / request | clients | rows / s | of batch scorer | p50 ms | p99 ms |
|---|---|---|---|---|---|---|---|
{chr(10).join(lines)}

{chr(10).join(goals)}
{sweep_section}
![rows/s per arm](serving.png)
"""
    )
    plot(payload)


def plot(payload: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(payload["models"]), figsize=(11, 4), sharey=False)
    for ax, (model, result) in zip(np.atleast_1d(axes), payload["models"].items()):
        labels = [f"{a['texts_per_request']}x{a['clients']}" for a in result["mlflow"]]
        x = np.arange(len(labels))
        shown = [server for server in SERVERS if server in result]
        for i, server in enumerate(shown):
            width = 0.8 / len(shown)
            rows = [a["rows_per_second"] for a in result[server]]
            ax.bar(
                x + (i - (len(shown) - 1) / 2) * width, rows, width, label=server.replace("sentiment-flow", "sf serve")
            )
        ax.axhline(result["batch_scorer_rows_per_second"], color="black", linestyle="--", label="batch scorer")
        ax.set_xticks(x, labels)
        ax.set_xlabel("texts per request x clients")
        ax.set_ylabel("rows / s")
        ax.set_title(model)
        ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(RESULTS / "serving.png", dpi=100)


if __name__ == "__main__":
    main()
