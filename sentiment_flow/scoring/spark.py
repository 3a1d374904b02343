"""The Spark engine of `score`: the same registered model over data too big for one machine.

The model is copied to every executor once (`SparkContext.addFile`) and loaded once per Python worker
process; `mapInPandas` hands each worker Arrow batches of `chunk_size` rows, scored by the local scorer's
own `predict_texts` (scorer.py) (batches by token count; benchmarks/results/spark.md compares it with
`mlflow.pyfunc.spark_udf`). The output is written to a hidden folder beside OUTPUT and renamed on success.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from sentiment_flow import metrics
from sentiment_flow.config import LABELS, SPARK_MASTER, ScoreConfig
from sentiment_flow.data import label_id
from sentiment_flow.errors import UserError
from sentiment_flow.scoring import Scorer, ScoreSummary, load_scorer, predict_texts, spark_stats, token_lengths
from sentiment_flow.scoring.inputs import check_columns
from sentiment_flow.scoring.runs import known_vocabulary
from sentiment_flow.scoring.scorer import PROBABILITIES, output_columns
from sentiment_flow.scoring.spark_files import (
    CSV_WRITE_OPTIONS,
    WRITTEN_LINES,
    Output,
    absolute,
    check_local_csv,
    first_line,
    literal,
    read,
)
from sentiment_flow.scoring.spark_session import session

# Texts whose token lengths the driver counts for the drift check: a sample, not the whole (remote) input.
LENGTH_SAMPLE = 20_000

_SCORERS: dict[str, Scorer] = {}  # per Python worker process: the model, loaded by its first batch


def check_java() -> None:
    """Refuse in one line where Spark could not start its JVM: JAVA_HOME wrong, or no `java` on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and not os.access(Path(home, "bin", "java"), os.X_OK):
        raise UserError(
            f"JAVA_HOME is {home!r}, which has no bin/java; point it at a Java 17 or 21 installation (or unset "
            "it to use the java on PATH), or score with --engine local."
        )
    if not home and not shutil.which("java"):
        raise UserError(
            "The Spark engine needs Java (17 or 21) and none was found: install it (e.g. apt-get install "
            "openjdk-17-jre-headless) or set JAVA_HOME, or score with --engine local."
        )


def score_spark(
    model_uri: str,
    input_path: str,
    output_path: str,
    config: ScoreConfig = ScoreConfig(),
    *,
    probabilities: bool = False,
    overwrite: bool = False,
    master: str = SPARK_MASTER,
) -> ScoreSummary:
    """Score every row of `input_path` (CSV or Parquet, a file or a folder of part files, any path Spark
    reads) into the folder `output_path`: Parquet, or CSV if its name ends in .csv. Row order is Spark's."""
    check_java()
    if output_path.rstrip("/") == input_path.rstrip("/"):
        raise UserError("The output path is the input; write the scores to a new folder.")
    with tempfile.TemporaryDirectory(prefix="sentiment_flow-model-") as model_dir, session(master, config) as spark:
        out = Output(spark, output_path)
        if out.exists() and not overwrite:
            raise UserError(f"Output {output_path!r} exists; pass --overwrite to replace it.")
        frame = read(spark, absolute(input_path), check_local_csv(spark, input_path, config))
        check_columns(frame.columns, input_path, config, probabilities)
        scorer = load_scorer(model_uri, dst_path=model_dir)
        known = known_vocabulary(model_uri, scorer.model_version)
        spark.sparkContext.addFile(model_dir, recursive=True)  # its random name is unique in the session
        model = str(Path(model_dir).name / Path(scorer.path).relative_to(model_dir))

        start = time.perf_counter()
        with out.partial() as partial:
            from pyspark import StorageLevel

            # Kept, so `monitor`'s sums read the rows the job wrote instead of running the model again.
            scored = _scored(spark, frame, model, scorer.model_version, config, probabilities, known)
            scored.persist(StorageLevel.MEMORY_AND_DISK)
            try:
                _write(scored.drop(*spark_stats.hidden_columns(probabilities, known)), partial, output_path)
                seconds = time.perf_counter() - start
                written = read(spark, literal(partial), WRITTEN_LINES, like=output_path)
                summary = _summarise(written, frame.columns, scorer, config)
                probability_names = [
                    (config.output_prefix if probabilities else spark_stats.HIDDEN) + name for name in PROBABILITIES
                ]
                label_name = config.output_prefix + "label"
                summary |= spark_stats.aggregate(scored, probability_names, label_name, known is not None)
            finally:
                scored.unpersist()
            out.publish(partial, overwrite)
    return ScoreSummary(output=Path(output_path), model_version=scorer.model_version, seconds=seconds, **summary)


def _scored(spark, frame, model: str, model_version: str, config: ScoreConfig, probabilities: bool, known):
    """`frame` plus the prediction columns and spark_stats' hidden ones, computed by mapInPandas on every core
    Spark was given."""
    from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

    hidden = spark_stats.hidden_columns(probabilities, known)
    names = [*output_columns(config.output_prefix, probabilities), *hidden]
    kinds = [StringType(), DoubleType(), StringType(), *[DoubleType()] * len(PROBABILITIES)]
    kinds += [LongType()] * (len(names) - len(kinds))  # the word counts
    schema = StructType([*frame.schema.fields, *(StructField(n, k) for n, k in zip(names, kinds))])
    # A single CSV file read with multiLine is one partition: spread it so every core scores.
    parallelism = spark.sparkContext.defaultParallelism
    if frame.rdd.getNumPartitions() < parallelism:
        frame = frame.repartition(parallelism)
    score = functools.partial(
        _score_batches,
        model=model,
        model_version=model_version,
        text_column=config.text_column,
        batch_size=config.batch_size,
        names=names,
        probabilities=probabilities,
        known=known,
    )
    return frame.mapInPandas(score, schema)


def _score_batches(
    batches: Iterator[pd.DataFrame],
    model: str,
    model_version: str,
    text_column: str,
    batch_size: int,
    names: list[str],
    probabilities: bool,
    known: dict | None,
) -> Iterator[pd.DataFrame]:
    """Runs in each Python worker: the model is loaded by the first batch and kept for the next tasks."""
    from pyspark import SparkFiles

    if model not in _SCORERS:
        _SCORERS.clear()  # a reused worker drops the previous job's model
        folder, _, inside = model.partition("/")
        _SCORERS[model] = load_scorer(str(Path(SparkFiles.get(folder), inside)))
    scorer = _SCORERS[model]
    for batch in batches:
        predicted = predict_texts(scorer, batch[text_column], batch_size)
        predicted["model_version"] = model_version
        # The probabilities always (hidden when OUTPUT has none): `monitor`'s stats are summed from them.
        predicted = predicted[output_columns(probabilities=True)]
        if known is not None:
            predicted = pd.concat([predicted, spark_stats.per_row_words(batch[text_column], known)], axis=1)
        yield pd.concat([batch, predicted.set_axis(names, axis=1)], axis=1)


def _write(scored, partial: str, output_path: str) -> None:
    """Run the job: Parquet into `partial`, or CSV (with a header) if OUTPUT's name ends in .csv."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    try:
        if ".csv" in Path(urlsplit(output_path).path).suffixes:
            scored.write.options(**CSV_WRITE_OPTIONS).csv(partial)
        else:
            scored.write.parquet(partial)
    except (Py4JJavaError, PySparkException) as exc:  # a row Spark cannot read surfaces here, when the job runs
        raise UserError(f"Spark could not score into {output_path!r}: {first_line(exc)}.") from None


def _summarise(out, input_columns: list[str], scorer, config: ScoreConfig) -> dict:
    """Counts, gold-label metrics, token lengths and a row hash of the written output: one aggregation."""
    from pyspark.sql import functions as F

    columns = [F.col(f"`{name}`") for name in input_columns]  # quoted: a name may hold a dot
    label, text = F.col(f"`{config.output_prefix}label`"), F.col(f"`{config.text_column}`")
    gold = F.col(f"`{config.label_column}`") if config.label_column else F.lit(None)
    groups = (
        out.groupBy(label.alias("label"), gold.cast("string").alias("gold"))
        .agg(
            F.count("*").alias("rows"),
            F.sum((F.regexp_replace(F.coalesce(text, F.lit("")), r"^\s+|\s+$", "") == "").cast("long")).alias("blank"),
            # Order-independent: a sum of row hashes names the rows, whatever the partitioning.
            F.sum(F.xxhash64(*columns).cast("decimal(38,0)")).alias("hash"),
        )
        .collect()
    )
    rows = sum(g["rows"] for g in groups)
    counts = dict.fromkeys(LABELS, 0)
    confusion = np.zeros((len(LABELS), len(LABELS)), dtype=np.int64)
    for g in groups:
        counts[g["label"]] += g["rows"]
        if (gold_id := label_id(g["gold"])) is not None:
            confusion[gold_id, LABELS.index(g["label"])] += g["rows"]
    scores = metrics.from_confusion(confusion)  # empty without gold labels
    content = f"{rows}:{sum(int(g['hash']) for g in groups)}:{','.join(input_columns)}"
    texts = out.select(text).sample(fraction=min(1.0, LENGTH_SAMPLE / max(rows, 1)), seed=0).toPandas().iloc[:, 0]
    return dict(
        rows=rows,
        blank=sum(g["blank"] for g in groups),
        label_counts=counts,
        labelled=int(confusion.sum()),
        accuracy=scores.get("accuracy"),
        f1_macro=scores.get("f1_macro"),
        token_length_counts=np.bincount(token_lengths(scorer, texts)),
        input_hash=hashlib.sha256(content.encode()).hexdigest(),
        input_sample=out.select(*columns).limit(5).toPandas(),
    )
