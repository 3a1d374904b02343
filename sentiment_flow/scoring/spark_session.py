"""The Spark engine's session: the active one (spark-submit's, a test's), else a new one whose JVM listens on
loopback only, keeps its scratch files in a folder of its own, and is ended (not left hanging) on SIGTERM."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import warnings
from contextlib import contextmanager

from sentiment_flow.config import ScoreConfig
from sentiment_flow.errors import UserError, one_line

LOOPBACK = "127.0.0.1"  # where a local Spark listens (driver, block manager, web UI) unless SPARK_LOCAL_IP says


# pyspark 4 warns on import with pandas 3, which every feature used here handles.
PANDAS_WARNING = "PySpark does not yet fully support pandas"


@contextmanager
def session(master: str, config: ScoreConfig):
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
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.log.level", "FATAL")
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
    changes = {
        "SPARK_SUBMIT_OPTS": f'{opts} "-Djava.io.tmpdir={scratch}"'.strip(),
        "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", LOOPBACK),
    }
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
