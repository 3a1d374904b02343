"""The Spark engine: the local scorer's results on Spark local[2], row content intact, bad input in one line.

One SparkSession (local[2]) serves the whole module: a JVM takes seconds to start. `score_spark` uses the
active session, as it would under spark-submit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from sentiment_flow.cli import cli
from sentiment_flow.config import ScoreConfig
from sentiment_flow.errors import UserError
from sentiment_flow.monitoring import vocabulary
from sentiment_flow.scoring import spark as spark_scoring
from sentiment_flow.scoring import spark_session, spark_stats
from sentiment_flow.scoring.files import score_csv

from conftest import SHARED_DATA, requires_shared_data, subprocess_env

pytest.importorskip("pyspark", reason="the spark extra (pyspark) is not installed")
try:
    spark_scoring.check_java()
    JAVA = ""
except UserError as missing:
    JAVA = str(missing)
pytestmark = pytest.mark.skipif(bool(JAVA), reason=f"Spark needs Java: {JAVA}")

# Rows a CSV round trip breaks first: quotes, commas, newlines inside quoted fields, emoji, an empty text.
TRICKY = ['He said "hi, there"', "line one\nline two, still one text", "great day 😀🎉", "", '"quoted", all of it']


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYSPARK_PYTHON", sys.executable)
        mp.setenv("PYTHONWARNINGS", f"ignore:{spark_session.PANDAS_WARNING}:FutureWarning")
        session = (
            SparkSession.builder.master("local[2]")
            .appName("sentiment-flow tests")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .getOrCreate()
        )
        session.sparkContext.setLogLevel("ERROR")
        try:
            yield session
        finally:
            session.stop()


def read_spark_csv(folder) -> pd.DataFrame:
    parts = sorted(p for p in folder.iterdir() if p.name.startswith("part-"))
    return pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False) for p in parts], ignore_index=True)


def leftovers(folder) -> list[str]:
    """Anything scoring may have left: outputs and hidden partial folders."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(("out", ".out")))


@pytest.mark.slow
@requires_shared_data()
def test_spark_local2_gives_the_local_scorers_labels_and_scores_on_real_english_rows(
    spark, model_dir, ready_store, tmp_path
):
    splits = [
        pd.read_csv(SHARED_DATA / "english" / f"{split}.csv", keep_default_na=False, dtype=str)
        for split in ("train", "valid", "test")
    ]
    rows = pd.concat(splits, ignore_index=True).head(3000)
    rows = pd.concat([rows, pd.DataFrame({"text": TRICKY, "label": "neutral", "source": "tricky"})], ignore_index=True)
    rows.insert(0, "id", [f"{i:05d}" for i in range(len(rows))])
    rows.to_csv(tmp_path / "in.csv", index=False)
    scoring_options = ["--label-column", "label", "--output-prefix", "p_", "--chunk-size", "500"]

    local = CliRunner().invoke(cli, ["score", model_dir, "in.csv", "local.csv", *scoring_options])
    assert local.exit_code == 0, local.output
    result = CliRunner().invoke(
        cli, ["score", model_dir, "in.csv", "out.parquet", "--engine", "spark", *scoring_options]
    )
    assert result.exit_code == 0, result.output

    expected = (
        pd.read_csv(tmp_path / "local.csv", dtype={"id": str}, keep_default_na=False).set_index("id").sort_index()
    )
    got = pd.read_parquet(tmp_path / "out.parquet").set_index("id").sort_index()
    assert list(got.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(got[rows.columns[1:]], rows.set_index("id")[rows.columns[1:]])  # content intact
    assert (got["p_label"] == expected["p_label"]).all()
    np.testing.assert_allclose(got["p_score"], expected["p_score"], atol=1e-5)

    client = mlflow.MlflowClient()
    runs = client.search_runs([mlflow.get_experiment_by_name("sentiment-flow-scoring").experiment_id])
    by_engine = {run.data.params["engine"]: run for run in runs}
    assert set(by_engine) == {"local", "spark"} and by_engine["spark"].data.params["spark_master"] == "local[*]"
    for name in ("rows", "blank_rows", "accuracy", "f1_macro", "predicted_share_neutral"):
        assert by_engine["spark"].data.metrics[name] == pytest.approx(by_engine["local"].data.metrics[name]), name
    assert by_engine["spark"].data.metrics["rows"] == len(rows)
    (dataset_input,) = by_engine["spark"].inputs.dataset_inputs
    assert dataset_input.dataset.digest == by_engine["spark"].data.params["input_hash"][:32]
    assert leftovers(tmp_path) == ["out.parquet"]


@pytest.mark.slow
def test_a_folder_of_parquet_parts_is_scored_into_csv_part_files_that_keep_every_text(spark, model_dir, tmp_path):
    given = pd.DataFrame({"text": TRICKY * 4, "n": range(20)})
    (tmp_path / "in").mkdir()
    for i, part in enumerate((given[:12], given[12:])):
        part.to_parquet(tmp_path / "in" / f"part-{i}.parquet")

    # Brackets are a Hadoop glob: the output is read back (for the summary) by its literal name.
    summary = spark_scoring.score_spark(model_dir, "in", "out[1].csv", ScoreConfig(chunk_size=4), probabilities=True)

    out = read_spark_csv(tmp_path / "out[1].csv").astype({"n": int}).sort_values("n", ignore_index=True)
    assert list(out.columns) == [
        "text",
        "n",
        "label",
        "score",
        "model_version",
        *(f"prob_{x}" for x in ("positive", "neutral", "negative")),
    ]
    assert list(out["text"]) == list(given["text"])
    assert summary.rows == 20 and summary.blank == 4 and sum(summary.label_counts.values()) == 20
    assert leftovers(tmp_path) == ["out[1].csv"]


@pytest.mark.slow
@pytest.mark.parametrize("probabilities", [False, True], ids=["without-prob-columns", "with-prob-columns"])
def test_spark_records_the_local_engines_monitoring_stats(
    spark, ready_store, register_tiny_model, tmp_path, probabilities
):
    """`monitor` reads a Spark job as it reads a local one: the same probability stats and unseen-word counts."""
    version = register_tiny_model()
    run_id = mlflow.MlflowClient().get_model_version("sentiment-english", version).tags["mlflow_run_id"]
    mlflow.log_dict(vocabulary.baseline(["the movie was great", "a sad day"], ["great day"]), vocabulary.ARTIFACT,
                    run_id=run_id)  # fmt: skip
    rows = pd.DataFrame({"text": [*TRICKY, "the movie was great", "the food was awful today", "new words here"] * 7})
    rows.to_csv(tmp_path / "in.csv", index=False)
    uri, config = "models:/sentiment-english/" + version, ScoreConfig(chunk_size=8, output_prefix="p_")

    local = score_csv(uri, "in.csv", "local.csv", config, probabilities=probabilities, progress=False)
    got = spark_scoring.score_spark(uri, "in.csv", "out.parquet", config, probabilities=probabilities)

    assert got.vocabulary_counts is not None and got.vocabulary_counts.tolist() == local.vocabulary_counts.tolist()
    assert got.vocabulary_counts[1] == sum(len(vocabulary.WORD.findall(text)) for text in rows["text"])  # words
    for key, expected in local.probability_stats.items():
        np.testing.assert_allclose(got.probability_stats[key], expected, rtol=1e-9, atol=1e-9, err_msg=key)
    assert got.probability_stats["confidence_counts"].sum() == len(rows)
    written = pd.read_parquet(tmp_path / "out.parquet")
    assert [c for c in written.columns if c.startswith("p_prob_")] == (
        [f"p_prob_{x}" for x in ("positive", "neutral", "negative")] if probabilities else []
    )
    assert not [c for c in written.columns if c.startswith(spark_stats.HIDDEN)]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("setup", "model", "message"),
    [
        (
            "text,n\nnice,1\n",
            None,
            "'in.csv' has no text column 'review'; its columns are text, n. Name the right one with --text-column.",
        ),
        (None, None, "Could not read '{tmp_path}/in.csv': [PATH_NOT_FOUND] Path does not exist: "),
        ("review\nnice\n", "./no-such-model", "Could not load model './no-such-model'"),
        ("review\nnice\n", "existing output", "Output 'out.parquet' exists; pass --overwrite to replace it."),
        # A local CSV is read first as the local engine reads it: Spark found this row only mid-job, model loaded.
        (
            "review,n\nok,1\nnice,2,3\n",
            None,
            (
                "'in.csv' line 3 has 3 fields but the header has 2: quote fields that contain the delimiter (\"a, b\") "
                "or fix that line."
            ),
        ),
    ],
)
def test_bad_input_on_the_spark_path_is_one_line_and_leaves_no_output(
    spark, model_dir, tmp_path, setup, model, message
):
    if setup is not None:
        (tmp_path / "in.csv").write_text(setup)
    if model == "existing output":
        (tmp_path / "out.parquet").mkdir()
        (tmp_path / "out.parquet" / "precious").write_text("kept")
    with pytest.raises(UserError) as error:
        spark_scoring.score_spark(
            model_dir if model in (None, "existing output") else model,
            "in.csv",
            "out.parquet",
            ScoreConfig(text_column="review"),
        )
    assert str(error.value).startswith(message.format(tmp_path=tmp_path)) and "\n" not in str(error.value)
    assert leftovers(tmp_path) == (["out.parquet"] if model == "existing output" else [])
    if model == "existing output":
        assert (tmp_path / "out.parquet" / "precious").read_text() == "kept"


@pytest.mark.parametrize("java_home", ["/no/such/jdk", None])
def test_java_absent_is_one_line_naming_the_fix(ready_store, tmp_path, monkeypatch, java_home):
    if java_home:
        monkeypatch.setenv("JAVA_HOME", java_home)
        expected = "JAVA_HOME is '/no/such/jdk', which has no bin/java"
    else:
        monkeypatch.delenv("JAVA_HOME", raising=False)
        monkeypatch.setenv("PATH", str(tmp_path))  # no java on it
        expected = "The Spark engine needs Java (17 or 21) and none was found"
    result = CliRunner().invoke(cli, ["score", "models:/never-loaded/1", "in.csv", "out", "--engine", "spark"])
    assert result.exit_code == 2 and expected in result.output and "Traceback" not in result.output
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.slow
def test_sigterm_mid_job_stops_spark_ends_the_run_killed_and_leaves_no_output(model_dir, ready_store, tmp_path):
    """py4j waits for the running job's answer; without ending the JVM, the process hung on SIGTERM. Ending it,
    the JVM left its scratch folders (blockmgr-*, spark-*/userFiles-* with the model's copy) in the temp folder;
    running, its web UI listened on every interface."""
    import psutil

    texts = pd.DataFrame({"text": ["the food was great today", "an awful sad day"] * 20_000})
    texts.to_csv(tmp_path / "in.csv", index=False)
    temp = tmp_path / "tmp"  # this job's TMPDIR; the JVM's own temp folder (java.io.tmpdir) is /tmp
    temp.mkdir()
    before = spark_temp_dirs()
    command = [
        sys.executable,
        "-m",
        "sentiment_flow",
        "score",
        model_dir,
        "in.csv",
        "out.parquet",
        "--engine",
        "spark",
        "--spark-master",
        "local[1]",
        "--chunk-size",
        "100",
    ]
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=subprocess_env(TMPDIR=str(temp)), stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 240
        while not any(p.name.startswith(".out.parquet") for p in tmp_path.iterdir()):  # the job is writing
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "timeout"
            time.sleep(0.2)
        time.sleep(2)
        descendants = psutil.Process(proc.pid).children(recursive=True)  # the JVM and its Python workers
        (jvm,) = [p for p in descendants if p.name() == "java"]
        listening = {(c.laddr.ip, c.laddr.port) for c in jvm.net_connections("inet") if c.status == psutil.CONN_LISTEN}
        assert listening and {ip for ip, _ in listening} <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, listening
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM, proc.stderr.read()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    _, alive = psutil.wait_procs(descendants, timeout=30)
    assert alive == []
    assert sorted(p.name for p in temp.iterdir()) == []
    assert spark_temp_dirs() - before == set()
    (run,) = mlflow.MlflowClient().search_runs([mlflow.get_experiment_by_name("sentiment-flow-scoring").experiment_id])
    assert run.info.status == "KILLED"
    assert leftovers(tmp_path) == []


def spark_temp_dirs() -> set[str]:
    """The folders a Spark driver makes in the shared /tmp when told no spark.local.dir."""
    return {p.name for pattern in ("spark-*", "blockmgr-*") for p in Path("/tmp").glob(pattern)}
