"""`monitor` over 100 scoring runs: how long one monitoring pass takes on this machine (target: under a minute).

A sqlite store in a temporary folder holds one registered version (its training run with the baseline artifacts
training logs) and RUNS scoring runs of it, each recorded by `scoring.runs.record` from synthetic calibrated
probabilities of ROWS rows (no model is loaded: scoring's own time is not what is measured). Then
`monitoring.monitor` reads them all, checks each and all together, and records its run and report; the wall time
of that call, the median of REPEATS, is the result.

    python benchmarks/monitor_benchmark.py            # writes benchmarks/results/monitor.{json,md}
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RUNS = 100
ROWS = 1000
REPEATS = 3
RESULTS = Path(__file__).parent / "results"
NAME = "sentiment-benchmark"


def synthetic(rows: int, rng) -> tuple[np.ndarray, np.ndarray]:
    logits = rng.normal(0, 2.0, size=(rows, 3))
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), np.clip(rng.poisson(20, rows), 3, 128)


def setup(root: Path) -> None:
    import mlflow

    from sentiment_flow.config import LABELS
    from sentiment_flow.monitoring import drift, vocabulary
    from sentiment_flow.monitoring import probabilities as P
    from sentiment_flow.scoring import runs
    from sentiment_flow.scoring.scorer import ScoreSummary

    rng = np.random.default_rng(0)
    probs, lengths = synthetic(870, rng)
    with mlflow.start_run() as training:
        mlflow.log_metric("test_f1_macro", 0.6)
        baseline = {
            "labels": list(LABELS),
            "test_label_counts": [290] * 3,
            "token_length_counts": np.bincount(lengths).tolist(),
        }
        mlflow.log_dict(baseline, drift.BASELINE_ARTIFACT)
        mlflow.log_dict(P.to_json(P.of(probs)), P.ARTIFACT)
        mlflow.log_dict({"words": [], "bigrams": [], "test_counts": [200, 1000, 700, 900]}, vocabulary.ARTIFACT)
    client = mlflow.MlflowClient()
    client.create_registered_model(NAME)
    mv = client.create_model_version(NAME, f"runs:/{training.info.run_id}/model", training.info.run_id)
    client.set_registered_model_alias(NAME, "champion", mv.version)
    (root / "in.csv").write_text("text\nx\n")
    for _ in range(RUNS):
        probs, lengths = synthetic(ROWS, rng)
        predicted = probs.argmax(axis=1)
        summary = ScoreSummary(
            output=root / "out.csv",
            model_version=f"{NAME}/{mv.version}",
            rows=ROWS,
            blank=0,
            seconds=1.0,
            label_counts={label: int((predicted == i).sum()) for i, label in enumerate(LABELS)},
            token_length_counts=np.bincount(lengths),
            input_hash="0" * 64,
            probability_stats=P.of(probs),
            vocabulary_counts=np.array([ROWS, 5 * ROWS, 3 * ROWS, 4 * ROWS]),
        )
        with runs.scoring_run("", "score-in.csv"):
            runs.record(summary, f"models:/{NAME}@champion", str(root / "in.csv"), {"engine": "local"})


def main() -> None:
    import mlflow

    from sentiment_flow.monitoring import monitor

    with tempfile.TemporaryDirectory(prefix="monitor-benchmark-") as folder:
        root = Path(folder)
        os.chdir(root)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root}/mlflow.db"
        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
        start = time.perf_counter()
        setup(root)
        setup_seconds = time.perf_counter() - start
        seconds = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            result = monitor(NAME)
            seconds.append(time.perf_counter() - start)
            assert len(result.scoring_runs) == RUNS, len(result.scoring_runs)
    found = {
        "scoring_runs": RUNS,
        "rows_per_run": ROWS,
        "monitor_seconds": seconds,
        "median_seconds": statistics.median(seconds),
        "setup_seconds": setup_seconds,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "monitor.json").write_text(json.dumps(found, indent=2) + "\n")
    (RESULTS / "monitor.md").write_text(
        f"# monitor over {RUNS} scoring runs\n\n"
        f"`python benchmarks/monitor_benchmark.py` on a {os.cpu_count()}-core CPU, sqlite store: {RUNS} scoring runs "
        f"of {ROWS:,} synthetic rows each (recorded by `scoring.runs.record`, {setup_seconds:.0f} s to create), then "
        f"`monitor` {REPEATS} times: median **{statistics.median(seconds):.1f} s** "
        f"({', '.join(f'{s:.1f}' for s in seconds)} s), against a target of 60 s.\n"
    )
    print(json.dumps(found, indent=2))


if __name__ == "__main__":
    main()
