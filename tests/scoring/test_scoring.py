"""Batch scoring through the pyfunc loader: columns and rows kept, atomic output, every bad input named."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from sklearn.metrics import accuracy_score, f1_score

from sentiment_flow.cli import cli
from sentiment_flow.config import LABELS, ScoreConfig
from sentiment_flow.errors import UserError
from sentiment_flow.scoring import files as scoring  # the local engine, and the scorer names it uses

from conftest import REPO_ROOT, free_port, http_service, subprocess_env, synthetic_split

NAME = "sentiment-english"


@pytest.fixture
def champion(template, isolated) -> str:
    """models:/sentiment-english@champion -> version 2 of the tiny model in this test's store."""
    shutil.copyfile(template.db, isolated / "mlflow.db")
    client = mlflow.MlflowClient()
    client.create_registered_model(NAME)
    for _ in range(2):
        version = client.create_model_version(NAME, template.model_uri).version
    client.set_registered_model_alias(NAME, "champion", version)
    return f"models:/{NAME}@champion"


def write_input(path, n: int = 40, seed: int = 7) -> pd.DataFrame:
    """A labelled CSV with an id column that must survive as written ("007", not 7)."""
    frame = synthetic_split(n, seed).rename(columns={"label": "gold"})
    frame.insert(0, "id", [f"{i:03d}" for i in range(n)])
    frame.to_csv(path, index=False)
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def pyfunc_labels(model_uri: str, texts: list[str]) -> list[str]:
    """What MLflow's own pyfunc predict (and so `mlflow models serve`) answers for these texts."""
    return list(mlflow.pyfunc.load_model(model_uri).predict(pd.DataFrame({"text": texts}))["label"])


def test_scoring_keeps_every_input_column_and_row_and_agrees_with_pyfunc_predict(model_dir, tmp_path):
    given = write_input(tmp_path / "in.csv", n=50)
    config = ScoreConfig(chunk_size=7, batch_size=4)  # several chunks, each sorted by length and restored

    summary = scoring.score_csv(model_dir, tmp_path / "in.csv", tmp_path / "out.csv", config, progress=False)

    out = pd.read_csv(tmp_path / "out.csv", dtype=str, keep_default_na=False)
    assert list(out.columns) == [*given.columns, "label", "score", "model_version"]
    pd.testing.assert_frame_equal(out[given.columns], given)  # same rows, same order, "007" still "007"
    assert list(out["label"]) == pyfunc_labels(model_dir, list(given["text"]))
    assert out["score"].astype(float).between(1 / 3, 1).all()
    assert set(out["model_version"]) == {model_dir}
    assert summary.rows == 50 and summary.blank == 0
    assert summary.label_counts == out["label"].value_counts().reindex(LABELS, fill_value=0).to_dict()


def test_chunk_and_batch_sizes_do_not_change_the_output(model_dir, tmp_path):
    write_input(tmp_path / "in.csv", n=30)
    for name, config in {"a.csv": ScoreConfig(chunk_size=4, batch_size=3), "b.csv": ScoreConfig()}.items():
        scoring.score_csv(model_dir, tmp_path / "in.csv", tmp_path / name, config, progress=False)
    a, b = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv")
    assert list(a["label"]) == list(b["label"])
    np.testing.assert_allclose(a["score"], b["score"], rtol=1e-4)


def test_probabilities_are_one_column_per_class_summing_to_one(model_dir, tmp_path):
    write_input(tmp_path / "in.csv", n=12)
    scoring.score_csv(model_dir, tmp_path / "in.csv", tmp_path / "out.csv", probabilities=True, progress=False)
    out = pd.read_csv(tmp_path / "out.csv")
    probs = out[["prob_positive", "prob_neutral", "prob_negative"]]
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    assert list(out["label"]) == [LABELS[i] for i in probs.to_numpy().argmax(axis=1)]
    np.testing.assert_allclose(out["score"], probs.max(axis=1))


def test_empty_texts_are_scored_as_mlflow_serves_them_and_counted(model_dir, tmp_path):
    pd.DataFrame({"text": ["great day", "", "  ", None, "awful food"], "n": range(5)}).to_csv(
        tmp_path / "in.csv", index=False
    )
    summary = scoring.score_csv(model_dir, tmp_path / "in.csv", tmp_path / "out.csv", progress=False)
    out = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert list(out["n"]) == [0, 1, 2, 3, 4]
    served = mlflow.pyfunc.load_model(model_dir).predict(
        pd.DataFrame({"text": [""]})
    )  # what `mlflow models serve` answers for ""
    for row in (1, 3):  # None is written to CSV as an empty field
        assert out.loc[row, "label"] == served["label"][0]
        assert out.loc[row, "score"] == pytest.approx(served["score"][0], rel=1e-4)
    assert list(out["label"]) == pyfunc_labels(model_dir, ["great day", "", "  ", "", "awful food"])
    assert summary.rows == 5 and summary.blank == 3
    assert sum(summary.label_counts.values()) == 5


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("text\nhello\n\nworld\n", [["hello"], [""], ["world"]]),
        ("id,text\n1,hello\n\n3,world\n\n", [["1", "hello"], ["", ""], ["3", "world"], ["", ""]]),
        ("text\r\nhello\r\n\r\nworld\r\n", [["hello"], [""], ["world"]]),
    ],
)
def test_blank_lines_are_rows_with_an_empty_text_kept_in_order(model_dir, tmp_path, given, expected):
    (tmp_path / "in.csv").write_bytes(given.encode())
    summary = scoring.score_csv(model_dir, "in.csv", "out.csv", ScoreConfig(chunk_size=2), progress=False)
    out = pd.read_csv(tmp_path / "out.csv", dtype=str, keep_default_na=False, skip_blank_lines=False)
    assert out.iloc[:, : len(expected[0])].to_numpy().tolist() == expected
    assert set(out["label"]) <= set(LABELS)
    assert summary.rows == len(expected) and summary.blank == sum(row[-1] == "" for row in expected)


def test_duplicate_and_empty_header_names_come_out_as_written(model_dir, tmp_path):
    (tmp_path / "in.csv").write_text("note,text,note,\na,great day,b,c\nd,sad,e,f\n")
    scoring.score_csv(model_dir, "in.csv", "out.csv", progress=False)
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert lines[0] == "note,text,note,,label,score,model_version"
    assert [line.split(",")[:4] for line in lines[1:]] == [["a", "great day", "b", "c"], ["d", "sad", "e", "f"]]


@pytest.mark.parametrize("suffix", [".csv.gz", ".csv.bz2", ".zip", ".csv.xz", ".csv.zst"])
def test_compressed_input_is_read_by_its_file_name(model_dir, tmp_path, suffix):
    given = write_input(tmp_path / "in.csv", n=30)
    given.to_csv(tmp_path / f"in{suffix}", index=False)  # pandas compresses by the name, as it reads
    summary = scoring.score_csv(model_dir, f"in{suffix}", "out.csv", ScoreConfig(chunk_size=7), progress=False)
    out = pd.read_csv(tmp_path / "out.csv", dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(out[given.columns], given)
    assert summary.rows == 30


@pytest.mark.parametrize(
    ("source", "target"), [("in.parquet", "out.parquet"), ("in.csv", "out.parquet"), ("in.parquet", "out.csv")]
)
def test_parquet_is_read_and_written_by_its_name_in_chunks_keeping_rows_and_types(model_dir, tmp_path, source, target):
    given = write_input(tmp_path / "in.csv", n=30)
    given["n"] = range(30)  # a typed column: Parquet keeps it an integer
    given.loc[3, "text"] = 'He said "hi, there"\nthen left 😀'
    if source.endswith(".parquet"):
        given.to_parquet(tmp_path / source, row_group_size=8)
    else:
        given.to_csv(tmp_path / source, index=False)
    summary = scoring.score_csv(model_dir, source, target, ScoreConfig(chunk_size=7), progress=False)
    read = (
        pd.read_parquet
        if target.endswith(".parquet")
        else functools.partial(pd.read_csv, keep_default_na=False, dtype={"id": str})
    )
    out = read(tmp_path / target)
    assert list(out.columns) == [*given.columns, "label", "score", "model_version"]
    expected = given if source.endswith(".parquet") else given.astype({"n": str})  # a CSV column is text
    pd.testing.assert_frame_equal(out[given.columns], expected, check_dtype=False)
    if source == target.replace("out", "in"):
        assert out["n"].dtype == "int64"
    assert list(out["label"]) == pyfunc_labels(model_dir, list(given["text"]))
    assert summary.rows == 30 and sum(summary.token_length_counts) == 30


def test_a_file_named_parquet_that_is_not_one_is_refused_in_one_line(tmp_path):
    (tmp_path / "in.parquet").write_text("text\nnice\n")
    with pytest.raises(UserError, match=r"^'in.parquet' is not a readable Parquet file: "):
        scoring.score_csv("models:/never-loaded/1", "in.parquet", "out.csv", progress=False)


@pytest.mark.parametrize("logged_with_truncation", [True, False])
def test_a_text_longer_than_the_model_limit_is_truncated_not_fatal(template, tmp_path, logged_with_truncation):
    model = tmp_path / "model"
    shutil.copytree(template.model_dir, model)
    if not logged_with_truncation:  # a model logged before its model_config set truncation
        mlmodel = yaml.safe_load((model / "MLmodel").read_text())
        del mlmodel["flavors"]["python_function"]["config"]
        (model / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    long_text = " ".join(["the food was great today"] * 100)  # 500 words; the tiny model takes 64 positions
    pd.DataFrame({"text": [long_text, "sad"]}).to_csv(tmp_path / "in.csv", index=False)
    summary = scoring.score_csv(str(model), "in.csv", "out.csv", progress=False)
    assert summary.rows == 2 and summary.blank == 0
    assert set(pd.read_csv(tmp_path / "out.csv")["label"]) <= set(LABELS)


def test_predict_texts_needs_no_file_and_keeps_the_index(model_dir):
    """The per-chunk function a Spark pandas UDF would call."""
    scorer = scoring.load_scorer(model_dir)
    texts = pd.Series(["a really long sentence about the great food today", None, "sad"], index=[10, 5, 7])
    out = scoring.predict_texts(scorer, texts, batch_size=2)
    assert list(out.index) == [10, 5, 7]
    assert list(out["label"]) == pyfunc_labels(model_dir, [texts[10], "", texts[7]])  # a missing text is ""
    assert scoring.predict_texts(scorer, pd.Series([], dtype=str)).empty


def test_batches_are_formed_by_token_count_not_characters(model_dir):
    """A mix of scripts: a short-looking text can be many tokens. Batches sorted by characters padded every text to
    the longest in its batch (Spark's shuffled chunks of eight languages scored 1.45x slower)."""
    scorer = scoring.load_scorer(model_dir)
    texts = pd.Series(["ok " * 20, "unbelievably", "a b c d e f g h i j", "fine", "x y", "wonderfulness!"] * 3)
    seen, pipeline = [], scorer.pipeline

    class Recording:
        tokenizer = pipeline.tokenizer

        def __call__(self, batch, **kwargs):
            seen.extend(batch)
            return pipeline(batch, **kwargs)

    scoring.predict_texts(dataclasses.replace(scorer, pipeline=Recording()), texts, batch_size=4)
    counts = scoring.token_lengths(scorer, pd.Series(seen))
    assert sorted(seen) == sorted(texts) and list(counts) == sorted(counts)
    assert [len(t) for t in seen] != sorted(len(t) for t in seen)  # the character order would have been another


def test_gold_labels_give_accuracy_and_macro_f1_equal_to_sklearn(model_dir, tmp_path):
    given = write_input(tmp_path / "in.csv", n=60)
    config = ScoreConfig(label_column="gold", chunk_size=16)
    summary = scoring.score_csv(model_dir, tmp_path / "in.csv", tmp_path / "out.csv", config, progress=False)
    predicted = pd.read_csv(tmp_path / "out.csv")["label"]
    assert summary.labelled == 60
    assert summary.accuracy == pytest.approx(accuracy_score(given["gold"], predicted))
    assert summary.f1_macro == pytest.approx(f1_score(given["gold"], predicted, average="macro", labels=list(LABELS)))


def test_an_alias_is_resolved_once_and_written_as_name_and_version(champion, tmp_path):
    write_input(tmp_path / "in.csv", n=5)
    summary = scoring.score_csv(champion, tmp_path / "in.csv", tmp_path / "out.csv", progress=False)
    assert summary.model_version == f"{NAME}/2"
    assert set(pd.read_csv(tmp_path / "out.csv")["model_version"]) == {f"{NAME}/2"}


@pytest.mark.parametrize(
    ("setup", "config", "message"),
    [
        (None, {}, "Input file 'in.csv' does not exist."),
        ("", {}, "'in.csv' is empty: it needs a header row with a 'text' column."),
        ("text,gold\n", {}, "'in.csv' has a header but no rows to score."),
        (
            "review,stars\nnice,5\n",
            {},
            "'in.csv' has no text column 'text'; its columns are review, stars. Name the right one with --text-column.",
        ),
        (
            "text\nnice\n",
            {"label_column": "gold"},
            "has no gold label column 'gold'; its columns are text. Name the right one with --label-column.",
        ),
        (
            "text,label\nnice,positive\n",
            {},
            "'in.csv' already has column(s) label, which scoring would write. "
            "Pass --output-prefix (e.g. --output-prefix pred_) to name the new columns pred_label, pred_score",
        ),
        (b"text\ncaf\xe9\n", {}, "'in.csv' is not valid utf-8 ("),
        ("text\nnice\n", {"encoding": "klingon"}, "Unknown encoding 'klingon'"),
        ("text,n\nnice, really,1\n", {}, "'in.csv' line 2 has 3 fields but the header has 2: quote fields"),
        ('text,n\n"nice,1\nbad,2\n', {}, "'in.csv' has a quote (\") opened on line 2 that is never closed"),
        ("text,n,text\nnice,1,2\n", {}, "'in.csv' has 2 columns named 'text' (columns 1, 3): rename all but the text"),
        ("text,g,g\nnice,1,2\n", {"label_column": "g"}, "has 2 columns named 'g' (columns 2, 3)"),
    ],
)
def test_bad_input_is_refused_before_any_model_loads_and_writes_nothing(tmp_path, setup, config, message):
    if isinstance(setup, bytes):
        (tmp_path / "in.csv").write_bytes(setup)
    elif setup is not None:
        (tmp_path / "in.csv").write_text(setup)
    with pytest.raises(UserError) as error:
        scoring.score_csv("models:/never-loaded/1", "in.csv", "out.csv", ScoreConfig(**config), progress=False)
    assert message in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".csv") == (["in.csv"] if setup is not None else [])


def test_a_folder_given_as_input_is_named_a_folder_with_the_engine_that_reads_one(tmp_path):
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "part-0.csv").write_text("text\nnice\n")
    with pytest.raises(UserError) as error:
        scoring.score_csv("models:/never-loaded/1", "parts", "out.csv", progress=False)
    assert str(error.value) == (
        "Input 'parts' is a folder; the local engine scores one file: name the file, or score a folder of part "
        "files with --engine spark."
    )
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize(
    ("column", "kind"),
    [
        (["nice", "bad"], None),  # the control: a string column passes the checks
        ([["nice", "good"], ["bad"]], "list<element: string>"),
        ([1, 2], "int64"),
    ],
    ids=["string", "list", "integer"],
)
def test_a_parquet_text_column_that_is_not_text_is_named_with_its_type(tmp_path, column, kind):
    pd.DataFrame({"id": [1, 2], "text": column}).to_parquet(tmp_path / "in.parquet")
    if kind is None:
        assert scoring.check_input(tmp_path / "in.parquet", ScoreConfig()) == ["id", "text"]
        return
    with pytest.raises(UserError) as error:
        scoring.score_csv("models:/never-loaded/1", "in.parquet", "out.parquet", progress=False)
    assert str(error.value) == (
        f"'in.parquet' column 'text' holds {kind} values, not text; scoring needs one string per row "
        f"(or name another column with --text-column)."
    )


def test_non_utf8_input_scores_with_the_encoding_it_names(model_dir, tmp_path):
    (tmp_path / "in.csv").write_bytes("text\ncaf\xe9 was great\n".encode("latin-1"))
    scoring.score_csv(model_dir, "in.csv", "out.csv", ScoreConfig(encoding="latin-1"), progress=False)
    assert pd.read_csv(tmp_path / "out.csv")["text"][0] == "caf\xe9 was great"  # written back as UTF-8


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("in.csv.gz", b"text\nnice\n", "Could not read 'in.csv.gz' as gzip: Not a gzipped file"),
        ("in.csv.xz", b"text\nnice\n", "Could not read 'in.csv.xz' as xz: Input format not supported by decoder."),
        ("in.csv.zst", b"text\nnice\n", "Could not read 'in.csv.zst' as zstd: zstd decompress error"),
    ],
)
def test_a_damaged_compressed_input_is_one_line_naming_the_compression(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        scoring.score_csv("models:/never-loaded/1", name, "out.csv", progress=False)


def test_two_zipped_files_are_refused_in_one_line(tmp_path):
    import zipfile

    with zipfile.ZipFile(tmp_path / "in.zip", "w") as archive:
        archive.writestr("a.csv", "text\na\n")
        archive.writestr("b.csv", "text\nb\n")
    with pytest.raises(UserError, match="Could not read 'in.zip' as zip: Multiple files found in ZIP file"):
        scoring.score_csv("models:/never-loaded/1", "in.zip", "out.csv", progress=False)


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        ("one, two,3\n", "Error: 'in.csv' line 302 has 3 fields but the header has 2: quote fields"),
        ('"never closed,3\nlast,4\n', "Error: 'in.csv' has a quote (\") opened on line 302 that is never closed"),
        (None, "Error: Could not read 'in.csv.gz' as gzip: Compressed file ended before the end-of-stream marker"),
    ],
)
def test_a_bad_input_deep_in_the_file_stops_in_one_line_and_keeps_the_old_output(
    model_dir, ready_store, tmp_path, tail, message
):
    """Found while scoring, after the model loaded and the first chunks were written to the partial file."""
    body = "text,n\n" + "".join(f"great food {i},{i}\n" for i in range(300))
    if tail is None:  # a download cut short: the first rows decompress, then the stream ends
        import gzip

        name, compressed = "in.csv.gz", gzip.compress(body.encode(), mtime=0)
        (tmp_path / name).write_bytes(compressed[: len(compressed) // 2])
    else:
        name = "in.csv"
        (tmp_path / name).write_text(body + tail)
    (tmp_path / "out.csv").write_text("the previous complete scores\n")
    result = CliRunner().invoke(cli, ["score", model_dir, name, "out.csv", "--overwrite", "--chunk-size", "100"])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0].startswith(message), result.output
    assert "Traceback" not in result.output
    assert (tmp_path / "out.csv").read_text() == "the previous complete scores\n"
    assert sorted(p.name for p in tmp_path.iterdir() if "csv" in p.name) == sorted([name, "out.csv"])


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("in.csv", "The output path is the input file"),
        ("existing.csv", "Output 'existing.csv' exists; pass --overwrite to replace it."),
        ("no-such-dir/out.csv", "Output folder 'no-such-dir' does not exist"),
    ],
)
def test_an_output_that_would_lose_data_is_refused(tmp_path, output, message):
    write_input(tmp_path / "in.csv", n=3)
    (tmp_path / "existing.csv").write_text("precious\n")
    with pytest.raises(UserError, match=message):
        scoring.score_csv("models:/never-loaded/1", "in.csv", output, progress=False)
    assert (tmp_path / "existing.csv").read_text() == "precious\n"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("models:/nope@champion", "Registered model 'nope' does not exist"),
        (f"models:/{NAME}@challenger", f"{NAME} has no alias 'challenger' (its aliases: champion)"),
        (f"models:/{NAME}/9", f"Version 9 of '{NAME}' does not exist; its versions are 1, 2"),
        ("runs:/0123456789abcdef/model", "Could not load model 'runs:/0123456789abcdef/model'"),
        ("./no-such-model", "Could not load model './no-such-model'"),
    ],
)
def test_a_model_uri_that_does_not_resolve_names_what_exists(champion, tmp_path, uri, message):
    write_input(tmp_path / "in.csv", n=3)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        scoring.score_csv(uri, "in.csv", "out.csv", progress=False)
    assert not (tmp_path / "out.csv").exists()


def test_a_model_with_other_labels_is_refused(template, tmp_path):
    broken = tmp_path / "generic"
    shutil.copytree(template.model_dir, broken)
    config_path = broken / "model" / "config.json"
    config = json.loads(config_path.read_text())
    config["id2label"], config["label2id"] = {"0": "A", "1": "B", "2": "C"}, {"A": 0, "B": 1, "C": 2}
    config_path.write_text(json.dumps(config))
    with pytest.raises(
        UserError, match=r"predicts labels \['A', 'B', 'C'\], not \['positive', 'neutral', 'negative'\]"
    ):
        scoring.load_scorer(str(broken))


def test_a_failure_mid_run_leaves_no_output_and_keeps_the_old_one(model_dir, tmp_path, monkeypatch):
    write_input(tmp_path / "in.csv", n=20)
    (tmp_path / "out.csv").write_text("the previous complete scores\n")
    real, calls = scoring.predict_texts, []

    def fail_on_third_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("worker died")
        return real(*args, **kwargs)

    monkeypatch.setattr(scoring, "predict_texts", fail_on_third_chunk)
    with pytest.raises(RuntimeError, match="worker died"):
        scoring.score_csv(model_dir, "in.csv", "out.csv", ScoreConfig(chunk_size=5), overwrite=True, progress=False)
    assert len(calls) == 3  # two chunks had been written to the partial file
    assert (tmp_path / "out.csv").read_text() == "the previous complete scores\n"
    assert sorted(p.name for p in tmp_path.iterdir() if "csv" in p.name) == ["in.csv", "out.csv"]


def test_two_jobs_writing_one_output_at_once_one_wins_and_the_other_replaces_nothing(model_dir, tmp_path, monkeypatch):
    """Both pass the check that OUTPUT does not exist, then both finish: the second must not replace the first."""
    import threading

    inputs = {name: write_input(tmp_path / f"{name}.csv", n=12, seed=seed) for seed, name in enumerate(("a", "b"))}
    both_scoring, real = threading.Barrier(2, timeout=120), scoring.predict_texts

    def predict_once_both_are_scoring(*args, **kwargs):
        both_scoring.wait()  # each job's chunks are size 12: one call per job
        return real(*args, **kwargs)

    monkeypatch.setattr(scoring, "predict_texts", predict_once_both_are_scoring)
    outcomes = {}

    def job(name: str) -> None:
        try:
            scoring.score_csv(model_dir, f"{name}.csv", "out.csv", ScoreConfig(chunk_size=12), progress=False)
            outcomes[name] = "wrote"
        except UserError as error:
            outcomes[name] = str(error)

    threads = [threading.Thread(target=job, args=(name,)) for name in inputs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    (winner,) = [name for name, outcome in outcomes.items() if outcome == "wrote"]
    (loser,) = set(inputs) - {winner}
    assert outcomes[loser] == (
        "Output 'out.csv' appeared while scoring (another job?) and was left as it is; score again with "
        "--overwrite to replace it, or to another OUTPUT."
    )
    out = pd.read_csv(tmp_path / "out.csv", dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(out[inputs[winner].columns], inputs[winner])
    assert sorted(p.name for p in tmp_path.iterdir() if "csv" in p.name) == ["a.csv", "b.csv", "out.csv"]


@pytest.fixture
def full_disk(tmp_path):
    """A real 16 KiB tmpfs: a real ENOSPC, raised wherever the kernel raises it (a write or the final flush),
    rather than an injected one. Mounting needs root (or CAP_SYS_ADMIN); skipped elsewhere."""
    folder = tmp_path / "full"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", "--lazy", str(folder)], check=True)


@pytest.mark.parametrize("earlier_output", [True, False])
def test_a_full_disk_is_one_line_keeps_the_earlier_output_and_removes_the_partial(
    model_dir, tmp_path, full_disk, earlier_output
):
    pd.concat([write_input(tmp_path / "in.csv", n=50)] * 6).to_csv(tmp_path / "in.csv", index=False)  # ~30 KiB out
    if earlier_output:
        (full_disk / "out.csv").write_text("the previous complete scores\n")
    with pytest.raises(UserError) as error:
        scoring.score_csv(model_dir, "in.csv", "full/out.csv", overwrite=earlier_output, progress=False)
    assert str(error.value) == (
        "Could not write 'full/out.csv': No space left on device. Nothing was written and an existing file there "
        "is unchanged; free space or choose another OUTPUT."
    )
    assert sorted(p.name for p in full_disk.iterdir()) == (["out.csv"] if earlier_output else [])
    if earlier_output:
        assert (full_disk / "out.csv").read_text() == "the previous complete scores\n"


def test_cli_score_prints_a_summary_and_exits_2_on_bad_input(model_dir, ready_store, tmp_path):
    write_input(tmp_path / "in.csv", n=10)
    runner = CliRunner()
    result = runner.invoke(
        cli, ["score", model_dir, "in.csv", "out.csv", "--label-column", "gold", "--output-prefix", "p_"]
    )
    assert result.exit_code == 0, result.output
    assert "10 in" in result.output and "macro-F1" in result.output
    assert "p_label" in pd.read_csv(tmp_path / "out.csv").columns

    again = runner.invoke(cli, ["score", model_dir, "in.csv", "out.csv"])
    assert again.exit_code == 2
    assert "Output 'out.csv' exists; pass --overwrite to replace it." in again.output
    assert "Traceback" not in again.output


def test_cli_flags_also_take_the_true_or_false_that_mlproject_passes(model_dir, ready_store, tmp_path):
    write_input(tmp_path / "in.csv", n=4)
    runner = CliRunner()
    assert runner.invoke(cli, ["score", model_dir, "in.csv", "out.csv", "--probabilities", "false"]).exit_code == 0
    assert "prob_neutral" not in pd.read_csv(tmp_path / "out.csv").columns
    refused = runner.invoke(cli, ["score", model_dir, "in.csv", "out.csv", "--overwrite", "false"])
    assert refused.exit_code == 2 and "pass --overwrite to replace it" in refused.output
    replaced = runner.invoke(cli, ["score", model_dir, "in.csv", "out.csv", "--overwrite", "true", "--probabilities"])
    assert replaced.exit_code == 0, replaced.output
    assert "prob_neutral" in pd.read_csv(tmp_path / "out.csv").columns


def test_mlproject_score_passes_every_cli_option_with_the_cli_and_config_defaults():
    import dataclasses

    import click

    options = {p.name: p for p in cli.commands["score"].params if isinstance(p, click.Option)}
    assert {name: options[name].default for name in ScoreConfig.__dataclass_fields__} == {
        f.name: f.default for f in dataclasses.fields(ScoreConfig)
    }
    entry = yaml.safe_load((REPO_ROOT / "MLproject").read_text())["entry_points"]["score"]
    assert set(entry["parameters"]) == {"model_uri", "input", "output", "cwd", *options}
    assert "score {model_uri} {input} {output}" in entry["command"]
    for name, option in options.items():
        # As MLflow substitutes it: the YAML default as a string, parsed by the CLI option.
        assert option.type.convert(str(entry["parameters"][name]["default"]), option, None) == option.default, name
        assert f"--{name.replace('_', '-')} {{{name}}}" in entry["command"]


@pytest.mark.parametrize(("input_name", "status"), [("in.csv", "FINISHED"), ("missing.csv", "FAILED")])
def test_cli_score_under_mlflow_run_ends_that_run_itself(
    template, model_dir, tmp_path, monkeypatch, input_name, status
):
    """`mlflow run` passes its run in MLFLOW_RUN_ID; the score command ends it, whatever becomes of `mlflow run`."""
    shutil.copyfile(template.db, tmp_path / "mlflow.db")  # a ready store: creating one costs seconds
    write_input(tmp_path / "in.csv", n=3)
    run = mlflow.MlflowClient().create_run(mlflow.MlflowClient().create_experiment("score"))
    monkeypatch.setenv("MLFLOW_RUN_ID", run.info.run_id)
    result = CliRunner().invoke(cli, ["score", model_dir, input_name, "out.csv"])
    assert result.exit_code == (0 if status == "FINISHED" else 2), result.output
    assert mlflow.MlflowClient().get_run(run.info.run_id).info.status == status


# ---------------------------------------------------------------------------------------------------------
# Subprocesses: a kill mid-run, `mlflow run -e score`, `mlflow models serve` (real data: test_real_data.py)


@pytest.mark.slow
def test_sigterm_mid_run_leaves_no_output_and_no_partial_file(model_dir, tmp_path):
    pd.concat([write_input(tmp_path / "in.csv", n=100)] * 200).to_csv(tmp_path / "in.csv", index=False)
    command = [sys.executable, "-m", "sentiment_flow", "score", model_dir, "in.csv", "out.csv", "--chunk-size", "50"]
    proc = subprocess.Popen(command, cwd=tmp_path, env=subprocess_env(), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(p.suffix == ".partial" and p.stat().st_size > 0 for p in tmp_path.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "timeout"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert sorted(p.name for p in tmp_path.iterdir() if "csv" in p.name) == ["in.csv"]
    experiment = mlflow.get_experiment_by_name("sentiment-flow-scoring")
    (run,) = mlflow.MlflowClient().search_runs([experiment.experiment_id])
    assert run.info.status == "KILLED"  # the job's scoring run too: never left RUNNING


@pytest.mark.slow
def test_two_scoring_processes_on_one_output_one_wins_whole_and_the_other_exits_2_in_one_line(model_dir, tmp_path):
    inputs = {}
    for seed, name in enumerate(("a", "b")):
        inputs[name] = pd.concat([write_input(tmp_path / f"{name}.csv", n=100, seed=seed)] * 40, ignore_index=True)
        inputs[name].to_csv(tmp_path / f"{name}.csv", index=False)
    # The store exists before both start: otherwise one job waits for the other's table migrations and may start
    # scoring only after the first one has finished.
    mlflow.MlflowClient().search_experiments()
    procs = {}
    for name in inputs:
        with open(tmp_path / f"{name}.log", "w") as log:
            command = [
                sys.executable,
                "-m",
                "sentiment_flow",
                "score",
                model_dir,
                f"{name}.csv",
                "out.csv",
                "--chunk-size",
                "50",
            ]
            procs[name] = subprocess.Popen(command, cwd=tmp_path, env=subprocess_env(), stdout=log, stderr=log)
    both_scoring, deadline = False, time.monotonic() + 300
    while any(proc.poll() is None for proc in procs.values()) and time.monotonic() < deadline:
        both_scoring |= len([p for p in tmp_path.iterdir() if p.suffix == ".partial"]) == 2
        time.sleep(0.05)
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
    assert both_scoring  # both passed the start-up check that out.csv does not exist
    codes = {name: proc.wait() for name, proc in procs.items()}
    (winner,) = [name for name, code in codes.items() if code == 0]
    (loser,) = set(inputs) - {winner}
    assert codes[loser] == 2
    errors = [line for line in (tmp_path / f"{loser}.log").read_text().splitlines() if line.startswith("Error:")]
    assert errors == [
        "Error: Output 'out.csv' appeared while scoring (another job?) and was left as it is; score "
        "again with --overwrite to replace it, or to another OUTPUT."
    ]
    out = pd.read_csv(tmp_path / "out.csv", dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(out[inputs[winner].columns], inputs[winner])
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".partial"]


def mlflow_run_score(cwd, **params: str) -> list[str]:
    """`mlflow run` of the score entry point, started in `cwd` as a user would."""
    args = [arg for key, value in params.items() for arg in ("-P", f"{key}={value}")]
    return [
        "mlflow",
        "run",
        str(REPO_ROOT),
        "-e",
        "score",
        *args,
        "--env-manager",
        "local",
        "--experiment-name",
        "score",
    ]


def score_runs() -> list:
    return mlflow.MlflowClient().search_runs([mlflow.get_experiment_by_name("score").experiment_id])


@pytest.mark.slow
def test_mlproject_score_entry_point_takes_every_option_and_writes_relative_paths_where_it_was_started(
    champion, isolated
):
    given = write_input(isolated / "in.csv", n=10)
    command = mlflow_run_score(
        isolated,
        model_uri=champion,
        input="in.csv",
        output="out.csv",
        batch_size="4",
        label_column="gold",
        output_prefix="p_",
        probabilities="true",
    )
    proc = subprocess.run(command, cwd=isolated, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert not (REPO_ROOT / "out.csv").exists()  # the project checkout is not the user's folder
    out = pd.read_csv(isolated / "out.csv", dtype=str, keep_default_na=False)
    assert list(out.columns) == [*given.columns, *scoring.output_columns("p_", probabilities=True)]
    assert len(out) == 10 and set(out["p_model_version"]) == {f"{NAME}/2"}
    assert "macro-F1" in proc.stdout
    (run,) = score_runs()
    assert run.info.status == "FINISHED"
    # The scoring run is the one `mlflow run` created: its metrics and dataset are there, and no second run.
    assert run.data.metrics["rows"] == 10 and "accuracy" in run.data.metrics and run.inputs.dataset_inputs
    assert run.data.params["engine"] == "local" and mlflow.get_experiment_by_name("sentiment-flow-scoring") is None


@pytest.mark.slow
def test_mlflow_run_score_with_a_missing_input_fails_its_run_in_one_line(isolated):
    command = mlflow_run_score(isolated, model_uri="models:/never-loaded/1", input="missing.csv", output="out.csv")
    proc = subprocess.run(command, cwd=isolated, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "Error: Input file 'missing.csv' does not exist." in proc.stderr
    assert "Traceback" not in proc.stderr
    (run,) = score_runs()
    assert run.info.status == "FAILED"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "statuses"),
    [
        (signal.SIGTERM, {"KILLED"}),  # `mlflow run` dies without a word: the scorer ends the run
        # Ctrl-C: the scorer ends the run KILLED, then `mlflow run` 3.x overwrites it FAILED (its is_terminated compares a status name with status numbers).
        (signal.SIGINT, {"KILLED", "FAILED"}),
    ],
)
def test_a_signal_to_mlflow_run_score_ends_its_run_and_leaves_no_output(model_dir, isolated, signum, statuses):
    """A scheduler (SIGTERM) or Ctrl-C (SIGINT) signals the whole process group."""
    # 100,000 rows (about 25 s here): the signal lands mid-job; with 20,000 (5 s) a loaded CI once saw the job finish first.
    pd.concat([write_input(isolated / "in.csv", n=100)] * 1000).to_csv(isolated / "in.csv", index=False)
    command = mlflow_run_score(isolated, model_uri=model_dir, input="in.csv", output="out.csv", chunk_size="50")
    proc = subprocess.Popen(
        command,
        cwd=isolated,
        env=subprocess_env(),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # As from a terminal: a suite started in the background by a non-interactive shell (`... &`) ignores
        # SIGINT, every child inherits that, and the job then ran to its end FINISHED.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 180
        while not any(p.suffix == ".partial" and p.stat().st_size > 0 for p in isolated.iterdir()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "timeout"
            time.sleep(0.1)
        os.killpg(proc.pid, signum)
        proc.wait(timeout=60)
        deadline = time.monotonic() + 60  # the scorer may still be unwinding after `mlflow run` is gone
        while score_runs()[0].info.status == "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert score_runs()[0].info.status in statuses
    assert sorted(p.name for p in isolated.iterdir() if "csv" in p.name) == ["in.csv"]


@pytest.mark.slow
def test_mlflow_models_serve_answers_like_the_batch_scorer_and_rejects_bad_payloads(champion, tmp_path):
    texts = ["great food today", "it was fine", "the service was awful", "a really happy day"]
    pd.DataFrame({"text": texts}).to_csv(tmp_path / "in.csv", index=False)
    batch = pd.read_csv(scoring.score_csv(champion, "in.csv", "out.csv", progress=False).output)["label"].tolist()

    port = free_port()
    command = [
        "mlflow",
        "models",
        "serve",
        "-m",
        champion,
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    with http_service(command, f"http://127.0.0.1:{port}", "/ping", tmp_path / "serve.log") as url:

        def invoke(body: bytes) -> tuple[int, dict]:
            request = urllib.request.Request(f"{url}/invocations", body, {"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as error:
                return error.code, {}

        payloads = {
            "inputs": {"inputs": texts},
            "dataframe_split": {"dataframe_split": {"columns": ["text"], "data": [[t] for t in texts]}},
            "dataframe_records": {"dataframe_records": [{"text": t} for t in texts]},
        }
        for shape, payload in payloads.items():
            status, body = invoke(json.dumps(payload).encode())
            assert status == 200, shape
            assert [row["label"] for row in body["predictions"]] == batch, shape
        for malformed in (b"{not json", b'{"unknown_key": [1]}', b'{"inputs": {"a": {"b": 1}}}'):
            status, _ = invoke(malformed)
            assert 400 <= status < 500, (malformed, status)


def test_input_hash_is_the_files_sha256_without_python_311_hashlib(tmp_path, monkeypatch):
    """requires-python is 3.10: the input hash cannot use hashlib.file_digest (3.11+); mypy's python_version
    3.10 found it."""
    import hashlib

    path = tmp_path / "in.csv"
    path.write_bytes(b"text,label\n" + b"the food was great,positive\n" * 100_000)  # several read blocks
    monkeypatch.delattr(hashlib, "file_digest", raising=False)  # as on Python 3.10
    assert scoring._sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
