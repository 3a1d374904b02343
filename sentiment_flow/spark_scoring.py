"""The Spark engine of `score`: the same registered model over data too big for one machine.

The model is copied to every executor once (`SparkContext.addFile`) and loaded once per Python worker
process; `mapInPandas` hands each worker Arrow batches of `chunk_size` rows, scored by the local scorer's
own `predict_texts` (batches by token count; benchmarks/results/spark.md compares it with
`mlflow.pyfunc.spark_udf`). The output is written to a hidden folder beside OUTPUT and renamed on success.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from sentiment_flow.config import LABELS, SPARK_MASTER, ScoreConfig
from sentiment_flow.data import label_id
from sentiment_flow.errors import UserError, one_line
from sentiment_flow.scoring import (
    Scorer, ScoreSummary, _metrics, check_columns, check_csv, is_parquet, load_scorer, output_columns, predict_texts,
    token_lengths,
)

# Texts whose token lengths the driver counts for the drift check: a sample, not the whole (remote) input.
LENGTH_SAMPLE = 20_000
# RFC 4180 as the local scorer reads and writes it: a quote inside a field doubled, newlines inside quotes.
CSV_OPTIONS = {"header": True, "multiLine": True, "quote": '"', "escape": '"'}
# Spark's CSV writer strips every field's leading and trailing spaces unless told not to: keep them as read.
CSV_WRITE_OPTIONS = {
    **{k: v for k, v in CSV_OPTIONS.items() if k != "multiLine"},
    "ignoreLeadingWhiteSpace": False, "ignoreTrailingWhiteSpace": False,
}
# What Spark's writer ends lines with (its default lineSep), and so how the written output is read back.
WRITTEN_LINES = {"encoding": "utf-8", "lineSep": "\n"}
LOOPBACK = "127.0.0.1"  # where a local Spark listens (driver, block manager, web UI) unless SPARK_LOCAL_IP says
# pyspark 4 warns on import with pandas 3, which every feature used here handles.
PANDAS_WARNING = "PySpark does not yet fully support pandas"

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
    with tempfile.TemporaryDirectory(prefix="sentiment_flow-model-") as model_dir, _session(master, config) as spark:
        out = _Output(spark, output_path)
        if out.exists() and not overwrite:
            raise UserError(f"Output {output_path!r} exists; pass --overwrite to replace it.")
        frame = _read(spark, _absolute(input_path), _check_local_csv(spark, input_path, config))
        check_columns(frame.columns, input_path, config, probabilities)
        scorer = load_scorer(model_uri, dst_path=model_dir)
        spark.sparkContext.addFile(model_dir, recursive=True)  # its random name is unique in the session
        model = str(Path(model_dir).name / Path(scorer.path).relative_to(model_dir))

        start = time.perf_counter()
        with out.partial() as partial:
            _write(_scored(spark, frame, model, scorer.model_version, config, probabilities), partial, output_path)
            seconds = time.perf_counter() - start
            written = _read(spark, _literal(partial), WRITTEN_LINES, like=output_path)
            summary = _summarise(written, frame.columns, scorer, config)
            out.publish(partial, overwrite)
    return ScoreSummary(output=Path(output_path), model_version=scorer.model_version, seconds=seconds, **summary)


@contextmanager
def _session(master: str, config: ScoreConfig):
    """The active SparkSession (spark-submit's, a test's), else a new one on `master`, stopped afterwards."""
    warnings.filterwarnings("ignore", message=PANDAS_WARNING, category=FutureWarning)
    from pyspark import SparkConf, SparkContext
    from pyspark.errors import PySparkException
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    scratch = None  # Spark's scratch folder, when this process starts a local Spark
    if active is None:
        # Local workers run this interpreter (its venv), not whatever `python3` is first on PATH.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYTHONWARNINGS", f"ignore:{PANDAS_WARNING}:FutureWarning")
        # No console progress bar: it overwrites the log lines and the summary table.
        # FATAL: a failed task logs its stack trace at ERROR, and the job's failure reaches the user as one line.
        builder = (
            SparkSession.builder.appName("sentiment-flow score")
            .config("spark.ui.showConsoleProgress", "false").config("spark.log.level", "FATAL")
        )
        if "PYSPARK_GATEWAY_PORT" not in os.environ:  # under spark-submit, its --master decides
            builder = builder.master(master)
            if master.startswith("local"):
                # blockmgr-*, userFiles-* (the model's copy) and pyspark-* in a folder of this job's, removed
                # below: a SIGTERM ends the JVM before its shutdown hook would remove them from /tmp.
                scratch = tempfile.mkdtemp(prefix="sentiment_flow-spark-")
                builder = builder.config("spark.local.dir", scratch)
        try:
            with _local_jvm_environment(scratch):
                SparkContext._ensure_initialized()  # the JVM, and in it the user's Spark configuration
            # The web UI (port 4040, on every interface, no login) only where that configuration (spark-submit
            # --conf, PYSPARK_SUBMIT_ARGS, spark-defaults.conf) turns it on.
            if SparkConf().get("spark.ui.enabled") is None:
                builder = builder.config("spark.ui.enabled", "false")
            spark = builder.getOrCreate()
        except BaseException as exc:  # a SIGTERM while the JVM starts too
            _remove(scratch)
            if isinstance(exc, PySparkException):
                raise UserError(f"Spark did not start on master {master!r}: {one_line(exc)}.") from None
            raise
    else:
        spark = active
    # Arrow batches of chunk_size rows: what one predict_texts call sorts by token count and scores.
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(config.chunk_size))
    try:
        yield spark
    except (SystemExit, KeyboardInterrupt):
        # Interrupted mid-job: py4j's connection still awaits that job's answer, so stop() would hang on it.
        # End the JVM this process started instead (and with it the job); the caller's cleanup runs on.
        gateway_process = getattr(spark.sparkContext._gateway, "proc", None)
        if active is None and gateway_process is not None:
            gateway_process.kill()
            gateway_process.wait()  # gone before its scratch folder is removed
            # Forget the session, or MLflow (ending the run KILLED) asks the dead JVM for its settings. stop()
            # fails on the dead JVM's refused connection before it forgets the context, so forget that here.
            try:
                spark.stop()
            except Exception:  # noqa: BLE001, S110 - the JVM is gone
                pass
            SparkContext._active_spark_context = None
            active = spark  # stopped
        raise
    finally:
        try:
            if active is None:
                spark.stop()
        finally:
            _remove(scratch)


@contextmanager
def _local_jvm_environment(scratch: str | None):
    """For a JVM started here for a local master (`scratch` given): its java.io.tmpdir (spark-submit's own
    spark-* folder) in `scratch`, and every port it opens on loopback, not the host's address: its driver and
    block manager ports take no password, and the web UI, where the user turns it on, otherwise takes every
    interface. A SPARK_LOCAL_IP of the user's wins."""
    if scratch is None:
        yield
        return
    opts = os.environ.get("SPARK_SUBMIT_OPTS", "")  # the launcher's JVM options for spark-submit
    changes = {"SPARK_SUBMIT_OPTS": f'{opts} "-Djava.io.tmpdir={scratch}"'.strip(),
               "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", LOOPBACK)}
    saved = {name: os.environ.get(name) for name in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


def _remove(folder: str | None) -> None:
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def _read(spark, path: str, csv: dict[str, str], like: str | None = None):
    """A DataFrame of `path`, CSV (read with CSV_OPTIONS and `csv`'s) or Parquet by the name of `like` (default
    `path`) or of its part files."""
    from pyspark.errors import AnalysisException

    try:
        if _is_csv(spark, like or path):
            # Spark reads an empty unquoted field as null; the local scorer (and pandas) as "": the same rows.
            return spark.read.options(**CSV_OPTIONS, **csv, mode="FAILFAST").csv(path).na.fill("")
        return spark.read.parquet(path)
    except AnalysisException as exc:
        raise UserError(
            f"Could not read {path!r}: {_first_line(exc)}. Pass a CSV or Parquet file, or a folder of them, "
            "that exists and that you may read."
        ) from None


def _check_local_csv(spark, input_path: str, config: ScoreConfig) -> dict[str, str]:
    """Spark's CSV options for INPUT (its encoding, and its line ending if it is local), after refusing a local
    CSV that the local engine would refuse, in its words (`check_csv`): Spark's own parser would score it,
    invalid bytes replaced by U+FFFD. A remote INPUT is read as Spark reads it."""
    options = {"encoding": config.encoding}
    if not _is_local(input_path) or not _is_csv(spark, input_path):
        return options
    given = Path(urlsplit(input_path).path)
    files = sorted(p for p in given.iterdir() if _is_part(p) and ".csv" in p.suffixes) if given.is_dir() else [given]
    files = [f for f in files if f.is_file()]  # a missing INPUT: Spark names it
    for file in files:
        check_csv(file, config)
    if files:
        options["lineSep"] = _line_ending(files[0], config)
    return options


def _line_ending(path: Path, config: ScoreConfig) -> str:
    """The line ending (LF, CRLF or CR) after the header of the CSV `path`. Told none, Spark guesses one and also
    turns a CRLF inside a quoted field into LF, where the local engine keeps the field as written."""
    from pandas.io.common import get_handle

    with get_handle(path, "rb", compression="infer", is_text=False) as handles:
        head = handles.handle.read(1 << 16).decode(config.encoding, errors="replace")  # decodable: check_csv read it
    ending = re.search(r"\r\n|\r|\n", head)
    return ending.group() if ending else "\n"


def _is_part(path: Path) -> bool:
    """A data file of a folder Spark reads: Hadoop skips names starting with . or _ (_SUCCESS, .crc files)."""
    return not path.name.startswith((".", "_"))


def _is_csv(spark, path: str) -> bool:
    """CSV by the name (.csv, .csv.gz, ...), or for a local folder by its part files' names; else Parquet."""
    name = urlsplit(path).path.rstrip("/")
    if ".csv" in Path(name).suffixes:
        return True
    if is_parquet(name) or not _is_local(path) or not Path(name).is_dir():
        return False
    parts = [p for p in Path(name).iterdir() if _is_part(p)]
    return any(".csv" in p.suffixes for p in parts)


def _scored(spark, frame, model: str, model_version: str, config: ScoreConfig, probabilities: bool):
    """`frame` plus the prediction columns, computed by mapInPandas on every core Spark was given."""
    from pyspark.sql.types import DoubleType, StringType, StructField, StructType

    names = output_columns(config.output_prefix, probabilities)
    kinds = [StringType(), DoubleType(), StringType(), *[DoubleType()] * (len(names) - 3)]
    schema = StructType([*frame.schema.fields, *(StructField(n, k) for n, k in zip(names, kinds))])
    # A single CSV file read with multiLine is one partition: spread it so every core scores.
    parallelism = spark.sparkContext.defaultParallelism
    if frame.rdd.getNumPartitions() < parallelism:
        frame = frame.repartition(parallelism)
    score = functools.partial(
        _score_batches, model=model, model_version=model_version,
        text_column=config.text_column, batch_size=config.batch_size, names=names, probabilities=probabilities,
    )
    return frame.mapInPandas(score, schema)


def _score_batches(batches: Iterator[pd.DataFrame], model: str, model_version: str, text_column: str,
                   batch_size: int, names: list[str], probabilities: bool) -> Iterator[pd.DataFrame]:
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
        predicted = predicted[output_columns(probabilities=probabilities)].set_axis(names, axis=1)
        yield pd.concat([batch, predicted], axis=1)


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
        raise UserError(f"Spark could not score into {output_path!r}: {_first_line(exc)}.") from None


def _summarise(out, input_columns: list[str], scorer, config: ScoreConfig) -> dict:
    """Counts, gold-label metrics, token lengths and a row hash of the written output: one aggregation."""
    from pyspark.sql import functions as F

    columns = [F.col(f"`{name}`") for name in input_columns]  # quoted: a name may hold a dot
    label, text = F.col(f"`{config.output_prefix}label`"), F.col(f"`{config.text_column}`")
    gold = F.col(f"`{config.label_column}`") if config.label_column else F.lit(None)
    groups = out.groupBy(label.alias("label"), gold.cast("string").alias("gold")).agg(
        F.count("*").alias("rows"),
        F.sum((F.regexp_replace(F.coalesce(text, F.lit("")), r"^\s+|\s+$", "") == "").cast("long")).alias("blank"),
        # Order-independent: a sum of row hashes names the rows, whatever the partitioning.
        F.sum(F.xxhash64(*columns).cast("decimal(38,0)")).alias("hash"),
    ).collect()
    rows = sum(g["rows"] for g in groups)
    counts = dict.fromkeys(LABELS, 0)
    confusion = np.zeros((len(LABELS), len(LABELS)), dtype=np.int64)
    for g in groups:
        counts[g["label"]] += g["rows"]
        if (gold_id := label_id(g["gold"])) is not None:
            confusion[gold_id, LABELS.index(g["label"])] += g["rows"]
    accuracy, f1_macro = _metrics(confusion) if config.label_column else (None, None)
    content = f"{rows}:{sum(int(g['hash']) for g in groups)}:{','.join(input_columns)}"
    texts = out.select(text).sample(fraction=min(1.0, LENGTH_SAMPLE / max(rows, 1)), seed=0).toPandas().iloc[:, 0]
    return dict(
        rows=rows, blank=sum(g["blank"] for g in groups), label_counts=counts, labelled=int(confusion.sum()),
        accuracy=accuracy, f1_macro=f1_macro, token_length_counts=np.bincount(token_lengths(scorer, texts)),
        input_hash=hashlib.sha256(content.encode()).hexdigest(), input_sample=out.select(*columns).limit(5).toPandas(),
    )


def _first_line(exc: BaseException) -> str:
    """A Spark/Java error's first line and its root cause's (the JVM stack traces between them left out)."""
    head = str(getattr(exc, "java_exception", None) or exc).strip().splitlines()[0]  # not py4j's "while calling o63"
    causes = [line.removeprefix("Caused by: ") for line in str(exc).splitlines() if line.startswith("Caused by: ")]
    return one_line(head + (f" ({causes[-1]})" if causes else ""))


def _literal(path: str) -> str:
    """`path` with Hadoop's glob characters escaped: read back as named (an OUTPUT such as `out[1]` is no pattern)."""
    return re.sub(r"([\\\[\]{}*?])", r"\\\1", path)


def _is_local(path: str) -> bool:
    return urlsplit(path).scheme in ("", "file")


def _absolute(path: str) -> str:
    """A local path made absolute here: Spark resolves a relative one against its JVM's folder, which is where
    the session started, not necessarily this process's current folder."""
    return os.path.abspath(path) if not urlsplit(path).scheme else path


class _Output:
    """OUTPUT and its hidden partial folder beside it: on a local disk through the OS (a rename is atomic and
    still works after an interrupt stopped the JVM), elsewhere (s3a://, hdfs://) through Hadoop's FileSystem."""

    def __init__(self, spark, path: str):
        self.path = _absolute(path.rstrip("/"))
        self.local = Path(urlsplit(self.path).path) if _is_local(self.path) else None
        if self.local is None:
            jvm = spark.sparkContext._jvm
            self.hadoop = jvm.org.apache.hadoop.fs.Path
            self.fs = self.hadoop(self.path).getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())

    def exists(self, path: str | None = None) -> bool:
        path = path or self.path
        return Path(urlsplit(path).path).exists() if self.local else self.fs.exists(self.hadoop(path))

    @contextmanager
    def partial(self) -> Iterator[str]:
        """A new hidden path beside OUTPUT, removed afterwards whatever happened (published, it is gone)."""
        head, _, name = self.path.rpartition("/")
        # No glob characters in its name: Spark's multiLine CSV reader globs each part file's path again.
        name = "." + re.sub(r"[][{}*?\\]", "_", name) + f".{uuid.uuid4().hex[:8]}.partial"
        partial = f"{head}/{name}" if head else name
        try:
            yield partial
        finally:
            if self.local:
                shutil.rmtree(urlsplit(partial).path, ignore_errors=True)
            elif self.exists(partial):
                self.fs.delete(self.hadoop(partial), True)

    def publish(self, partial: str, overwrite: bool) -> None:
        if self.exists():
            if not overwrite:  # written by another job while this one scored
                raise UserError(
                    f"Output {self.path!r} appeared while scoring (another job?) and was left as it is; score "
                    "again with --overwrite to replace it, or to another OUTPUT."
                )
            self._delete(self.path)
        if self.local:
            os.rename(urlsplit(partial).path, self.local)
        elif not self.fs.rename(self.hadoop(partial), self.hadoop(self.path)):
            raise UserError(f"Could not rename the scored {partial!r} to {self.path!r}; it was removed.")

    def _delete(self, path: str) -> None:
        if self.local:
            target = Path(urlsplit(path).path)
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        else:
            self.fs.delete(self.hadoop(path), True)
