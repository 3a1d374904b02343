"""Spark engine throughput: the local scorer against `score --engine spark` on local[1] and local[2], on the same
registered model and the same real texts; and the engine's choice, mapInPandas over `predict_texts` against
`mlflow.pyfunc.spark_udf(env_manager="local")`.

Each arm runs as its own process (JVM and Python workers started, model loaded, input read, output written:
as a user would run it). The input is the train/valid/test CSVs of every language under --data, concatenated
and repeated to --rows rows (written to a temporary folder, never into the repo).

Writes benchmarks/results/spark.md and .json. Run from the repo root:

    python benchmarks/spark_benchmark.py --data ../shared/data/multilingual-sentiments
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import click
import pandas as pd
from scoring_benchmark import RESULTS, measure, register_model

# The alternative engine, as MLflow documents it: the pyfunc as a Spark UDF, predicting whole Arrow batches.
SPARK_UDF = """
import sys, warnings
warnings.filterwarnings("ignore", category=FutureWarning)
import mlflow
from pyspark.sql import SparkSession
model_uri, source, target, master = sys.argv[1:5]
spark = SparkSession.builder.master(master).config("spark.ui.showConsoleProgress", "false").getOrCreate()
predict = mlflow.pyfunc.spark_udf(spark, model_uri, env_manager="local", result_type="label string, score double")
frame = spark.read.options(header=True, multiLine=True, quote='"', escape='"').csv(source)
frame = frame.repartition(spark.sparkContext.defaultParallelism)
frame.withColumn("prediction", predict("text")).select("*", "prediction.*").drop("prediction").write.parquet(target)
"""


def real_rows(data: Path, rows: int, path: Path) -> dict:
    """Every language's splits concatenated, repeated to `rows` rows, with a row id to compare engines by."""
    files = sorted(data.glob("*/*.csv"))
    frame = pd.concat([pd.read_csv(f, keep_default_na=False, dtype=str) for f in files], ignore_index=True)
    repeats = -(-rows // len(frame))
    frame = pd.concat([frame] * repeats, ignore_index=True)[:rows]
    frame = frame.rename(columns={"label": "gold"})  # "label" is what scoring writes
    frame.insert(0, "row", range(rows))
    frame.to_csv(path, index=False)
    return {"files": len(files), "distinct_rows": len(frame.drop_duplicates("text")), "repeats": repeats}


def labels(path: Path) -> pd.DataFrame:
    read = pd.read_parquet if path.is_dir() else pd.read_csv
    return read(path)[["row", "label", "score"]].astype({"row": int}).set_index("row").sort_index()  # Spark's CSV: text


def write_results(payload: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "spark.json").write_text(json.dumps(payload, indent=2) + "\n")
    machine = payload["machine"]
    quiet = (
        "nothing else ran on the machine"
        if machine["load_average_1m_at_start"] < 1
        else "the machine was shared while this ran: see the load; rerun on a quiet machine for clean numbers"
    )
    table = "\n".join(
        f"| {a['arm']} | {a['rows']:,} | {a['seconds']:.1f} | {a['rows_per_second']:.1f} | {a['peak_rss_mib']:,.0f} "
        f"| {a['labels_equal_to_local']:.2%} | {a['max_score_difference']:.1e} |"
        for a in payload["arms"] + payload["choice"]
    )
    (RESULTS / "spark.md").write_text(
        f"""# Batch scoring on Spark: throughput

Written by `benchmarks/spark_benchmark.py` on {machine["date"]}; do not edit by hand.

Model `{payload["model"]}`: the packaged all-MiniLM-L6-v2 with a freshly initialised classification head (throughput
does not depend on the head's values), logged as a transformers-flavor model with max_length {payload["max_length"]}.
Input: the {payload["input"]["files"]} train/valid/test CSVs of `{payload["data"]}` (8 languages) concatenated
({payload["input"]["distinct_rows"]:,} distinct texts) and repeated {payload["input"]["repeats"]}x to {payload["rows"]:,} rows.
{machine["cores"]} cores, no GPU, torch {machine["torch"]}, pyspark {machine["pyspark"]}, Java {machine["java"]}.
1-minute load average at start {machine["load_average_1m_at_start"]:.2f}, at end {machine["load_average_1m_at_end"]:.2f}
({quiet}).
Each arm is a separate process timed from start to exit: JVM, Python workers, model loading and I/O included.
Spark runs one single-threaded Python worker per core it is given (PySpark sets OMP_NUM_THREADS to the
executor's cores, 1 in local mode): local[1] scores on one core, local[2] on two.

| arm | rows | seconds | rows / s | peak RSS (MiB) | labels equal to local scorer | max score difference |
|---|---|---|---|---|---|---|
{table}

**Scaling local[2] / local[1]: {payload["scaling_local2_vs_local1"]:.2f}x** (goal ≥ 1.7x).
**Spark local[2] vs the local scorer: {payload["spark_local2_vs_local"]:.2f}x** the local scorer's rows/s
(the local scorer uses both cores through torch's threads; Spark's overhead is the JVM, the workers and the
extra pass that counts labels and hashes rows for the scoring run).

**Engine choice** (the last two rows, {payload["choice_rows"]:,} rows on local[2]): mapInPandas over
`predict_texts` {payload["choice_speedup"]:.2f}x the rows/s of `mlflow.pyfunc.spark_udf(env_manager="local")`.
`predict_texts` sorts each Arrow batch by token count before batching (little padding), and is the function the
local scorer runs, so both engines share one code path for results.
"""
    )


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", default="../shared/data/multilingual-sentiments", show_default=True, help="Data folder.")
@click.option("--model", default="minilm", show_default=True, help="Model (default: the packaged MiniLM).")
@click.option("--rows", default=50_000, show_default=True, help="Rows the local scorer and the Spark arms score.")
@click.option("--choice-rows", default=5_000, show_default=True, help="Rows of the mapInPandas vs spark_udf arms.")
def main(data: str, model: str, rows: int, choice_rows: int) -> None:
    """Score the same rows locally and on Spark local[1] and local[2]; compare with spark_udf; write the table."""
    import subprocess

    import pyspark
    import torch

    from sentiment_flow.config import TrainConfig

    shown = Path(data)
    if not list(shown.resolve().glob("*/*.csv")):
        raise click.ClickException(f"{shown} has no <lang>/*.csv files; pass --data <folder of the dataset>.")
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "HF_HUB_OFFLINE": "1",
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db",
            "PYSPARK_PYTHON": sys.executable,
        }
        input_info = real_rows(shown.resolve(), rows, tmp / "in.csv")
        real_rows(shown.resolve(), choice_rows, tmp / "choice.csv")
        os.chdir(tmp)  # MLflow's artifacts and Spark's scratch files stay in the temporary folder
        model_uri = register_model(model, env)
        score = [sys.executable, "-m", "sentiment_flow", "score", model_uri]
        arms = {
            "local scorer": ([*score, "in.csv", "local.csv"], "local.csv", rows),
            "spark local[1]": (
                [*score, "in.csv", "spark1.parquet", "--engine", "spark", "--spark-master", "local[1]"],
                "spark1.parquet",
                rows,
            ),
            "spark local[2]": (
                [*score, "in.csv", "spark2.parquet", "--engine", "spark", "--spark-master", "local[2]"],
                "spark2.parquet",
                rows,
            ),
            "choice: local scorer": ([*score, "choice.csv", "choice-local.csv"], "choice-local.csv", choice_rows),
            "choice: mapInPandas, local[2]": (
                [*score, "choice.csv", "choice-map.parquet", "--engine", "spark", "--spark-master", "local[2]"],
                "choice-map.parquet",
                choice_rows,
            ),
            "choice: spark_udf, local[2]": (
                [sys.executable, "-c", SPARK_UDF, model_uri, "choice.csv", "choice-udf.parquet", "local[2]"],
                "choice-udf.parquet",
                choice_rows,
            ),
        }
        results = []
        for arm, (command, output, n) in arms.items():
            click.echo(f"== {arm} ({n:,} rows)", err=True)
            results.append({"arm": arm, "rows": n, **measure(command, env)})
            results[-1]["rows_per_second"] = n / results[-1]["seconds"]
            click.echo(json.dumps(results[-1]), err=True)
        reference = {rows: labels(tmp / "local.csv"), choice_rows: labels(tmp / "choice-local.csv")}
        for result, (command, output, n) in zip(results, arms.values()):
            got = labels(tmp / output)
            result["labels_equal_to_local"] = float((got["label"] == reference[n]["label"]).mean())
            result["max_score_difference"] = float((got["score"] - reference[n]["score"]).abs().max())
        java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.split('"')[1]
    main_arms, choice = results[:3], results[4:]
    payload = {
        "model": model,
        "model_uri": model_uri,
        "max_length": TrainConfig.max_length,
        "data": str(shown),
        "rows": rows,
        "choice_rows": choice_rows,
        "input": input_info,
        "machine": {
            "date": datetime.date.today().isoformat(),
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "pyspark": pyspark.__version__,
            "java": java,
            "load_average_1m_at_start": load_at_start,
            "load_average_1m_at_end": os.getloadavg()[0],
        },
        "arms": main_arms,
        "choice": [results[3], *choice],
        "scaling_local2_vs_local1": main_arms[2]["rows_per_second"] / main_arms[1]["rows_per_second"],
        "spark_local2_vs_local": main_arms[2]["rows_per_second"] / main_arms[0]["rows_per_second"],
        "choice_speedup": choice[0]["rows_per_second"] / choice[1]["rows_per_second"],
    }
    write_results(payload)
    click.echo((RESULTS / "spark.md").read_text())


if __name__ == "__main__":
    main()
