"""Both engines hand back every input field exactly as read, and refuse the same inputs in the same words.

"Exactly as read": the output's input columns equal, cell by cell, pandas reading the input with the local
engine's settings (`scoring.inputs._read_csv`). Spark's reader and writer differ from pandas by default: its writer
trimmed every field, its reader turned a CRLF inside quotes into LF and invalid bytes into U+FFFD.
"""

from __future__ import annotations

import pandas as pd
import pytest

from sentiment_flow.config import ScoreConfig
from sentiment_flow.errors import UserError
from sentiment_flow.scoring import files as scoring
from sentiment_flow.scoring import inputs

from test_spark import JAVA, spark  # noqa: F401 - that module's SparkSession fixture, reused here

HEADER = b"id,text,note"
# Each input: its rows after HEADER, as bytes (RFC 4180: a quote inside a quoted field doubled).
TRICKY = {
    "spaces and tabs": b'0,  leading,x \n1,trailing  ,  \n2,"  quoted both  ", y\n3,\ttabs\t,\t\n4, ,""\n',
    "quotes": b'0,"say ""hi""",a"b\n1,"C:\\dir\\",\\\n2,"say \\""hi\\""",""""\n3,"a, b",","\n',
    "CRLF": b'0,plain,x\r\n1,"two\r\nlines",y\r\n2,"line\nfeed",\r\n3,"carriage\rreturn",z \r\n',
    "LF with CRLF quoted": b'0,"two\r\nlines",x\n1,"carriage\rreturn",\n',
    "BOM": b"0,\xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80,x\n1, caf\xc3\xa9 ,y\n",
}
ENGINES = ["local", pytest.param("spark", marks=pytest.mark.slow)]


def score(engine: str, request, source: str, output: str) -> None:
    """Score `source` into `output` with `engine`, the tiny model and the default config."""
    if engine == "local":
        scoring.score_csv(request.getfixturevalue("model_dir"), source, output, progress=False)
        return
    if JAVA:
        pytest.skip(f"Spark needs Java: {JAVA}")
    from sentiment_flow.scoring import spark as spark_scoring

    request.getfixturevalue("spark")
    spark_scoring.score_spark(request.getfixturevalue("model_dir"), source, output, ScoreConfig(chunk_size=2))


def read_output(path) -> pd.DataFrame:
    """The output as pandas reads it: a CSV file, or a folder of CSV part files (each with its header)."""
    if scoring.is_parquet(path):
        return pd.read_parquet(path)
    files = sorted(p for p in path.iterdir() if p.name.startswith("part-")) if path.is_dir() else [path]
    return pd.concat([pd.read_csv(f, dtype=str, keep_default_na=False) for f in files], ignore_index=True)


@pytest.mark.parametrize("output", ["out.csv", "out.parquet"])
@pytest.mark.parametrize("case", list(TRICKY))
@pytest.mark.parametrize("engine", ENGINES)
def test_both_engines_return_every_input_field_exactly_as_read(engine, case, output, request, tmp_path):
    data = TRICKY[case]
    lines = b"\r\n" if case == "CRLF" else b"\n"
    (tmp_path / "in.csv").write_bytes((b"\xef\xbb\xbf" if case == "BOM" else b"") + HEADER + lines + data)
    read = inputs._read_csv(tmp_path / "in.csv", tmp_path / "in.csv", ScoreConfig())
    expected = read.iloc[1:].set_axis(list(read.iloc[0]), axis=1).reset_index(drop=True)

    score(engine, request, "in.csv", output)

    got = read_output(tmp_path / output).sort_values("id", ignore_index=True)
    assert list(got.columns[:3]) == list(expected.columns) == ["id", "text", "note"]
    pd.testing.assert_frame_equal(got[expected.columns], expected)


@pytest.mark.parametrize("engine", ENGINES)
def test_both_engines_refuse_invalid_bytes_in_the_same_one_line(engine, request, tmp_path):
    # Valid rows first: Spark found nothing wrong, it scored the text with U+FFFD in place of the byte.
    (tmp_path / "in.csv").write_bytes(HEADER + b"\n" + b"0,fine,x\n" * 50 + b"1,caf\xe9,y\n")

    with pytest.raises(UserError) as error:
        score(engine, request, "in.csv", "out.csv")

    assert str(error.value) == (
        "'in.csv' is not valid utf-8 (unexpected end of data); pass its encoding with --encoding "
        "(e.g. --encoding latin-1) or re-encode it as UTF-8."
    )
    assert [p.name for p in tmp_path.iterdir() if "out" in p.name] == []
