"""What scoring reads: the input's header and rows, CSV or Parquet by its name, and every way a bad input is
refused in one line naming the file (and the line) before a model is loaded, for both engines."""

from __future__ import annotations

import lzma
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import zstandard
from pandas.io.common import infer_compression

from sentiment_flow.config import ScoreConfig
from sentiment_flow.errors import UserError, one_line
from sentiment_flow.scoring.scorer import output_columns

# What a damaged compressed input raises while it is read (gzip, bz2, zip, xz, zstd; EOFError when truncated).
DECOMPRESSION_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, lzma.LZMAError, zstandard.ZstdError)


def is_parquet(path: str | Path) -> bool:
    """Parquet by its name (`.parquet`, `.pq`); anything else is read and written as CSV."""
    return Path(str(path)).suffix.lower() in (".parquet", ".pq")


def check_input(input_path: Path, config: ScoreConfig, probabilities: bool = False) -> list[str]:
    """The input's header as written, after checking everything that can be checked before a model is loaded."""
    if input_path.is_dir():
        raise UserError(
            f"Input {str(input_path)!r} is a folder; the local engine scores one file: name the file, or score a "
            f"folder of part files with --engine spark."
        )
    if not input_path.is_file():
        raise UserError(f"Input file {str(input_path)!r} does not exist.")
    if is_parquet(input_path):
        with _reading(input_path, config):
            parquet = parquet_file(input_path)
            # The Arrow schema's names are the columns; the Parquet schema's are its leaves (a list column's
            # leaf is called `element`).
            schema, has_rows = parquet.schema_arrow, parquet.metadata.num_rows > 0
        header = list(schema.names)
        check_columns(header, str(input_path), config, probabilities)
        _check_text_type(schema, str(input_path), config.text_column)
    else:
        with _reading(input_path, config):
            head = _read_csv(input_path, input_path, config, nrows=2)
        header, has_rows = list(head.iloc[0]), len(head) > 1
        check_columns(header, str(input_path), config, probabilities)
    if not has_rows:
        raise UserError(f"{str(input_path)!r} has a header but no rows to score.")
    return header


def check_columns(header: list[str], where: str, config: ScoreConfig, probabilities: bool = False) -> None:
    """Refuse an input without the named text/gold columns, with them twice, or with the columns scoring adds."""
    for role, name, option in (
        ("text", config.text_column, "--text-column"),
        ("gold label", config.label_column, "--label-column"),
    ):
        if name and name not in header:
            raise UserError(
                f"{where!r} has no {role} column {name!r}; its columns are {', '.join(header)}. "
                f"Name the right one with {option}."
            )
        if name and header.count(name) > 1:
            positions = ", ".join(str(i + 1) for i, column in enumerate(header) if column == name)
            raise UserError(
                f"{where!r} has {header.count(name)} columns named {name!r} (columns {positions}): "
                f"rename all but the {role} column."
            )
    clashes = [c for c in output_columns(config.output_prefix, probabilities) if c in header]
    if clashes:
        suggestion = "pred_" + config.output_prefix
        raise UserError(
            f"{where!r} already has column(s) {', '.join(clashes)}, which scoring would write. "
            f"Pass --output-prefix (e.g. --output-prefix {suggestion}) to name the new columns "
            f"{', '.join(output_columns(suggestion, probabilities))}."
        )


def _check_text_type(schema, where: str, text_column: str) -> None:
    """Refuse a Parquet text column that holds something other than one string (or null) per row."""
    import pyarrow as pa

    kind = schema.field(text_column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)):
        raise UserError(
            f"{where!r} column {text_column!r} holds {kind} values, not text; scoring needs one string per row "
            f"(or name another column with --text-column)."
        )


def check_csv(path: Path, config: ScoreConfig) -> None:
    """Read all of the CSV `path` as the local engine does, and drop the rows: an engine with another parser
    (Spark's turns invalid bytes into U+FFFD) first refuses what this one would, in the same words."""
    with open(path, "rb") as handle:
        for _ in chunks(handle, path, config):
            pass


def parquet_file(path: Path):
    import pyarrow.parquet as pq

    return pq.ParquetFile(path)


def _read_csv(source, path: Path, config: ScoreConfig, **kwargs):
    """`pd.read_csv` of `source` (`path` or an open binary handle on it) as written: the header is row 0, so
    duplicate names stay duplicates and a longer row is an error, not an index; blank lines are rows; every
    field a string, empty ones empty."""
    return pd.read_csv(
        source,
        header=None,
        dtype=str,
        keep_default_na=False,
        skip_blank_lines=False,
        encoding=config.encoding,
        # Inferred from the name: pandas infers nothing from an open handle.
        compression=infer_compression(str(path), "infer"),
        **kwargs,
    )


@contextmanager
def _reading(path: Path, config: ScoreConfig) -> Iterator[None]:
    """Turn what a bad input raises while it is read into one line naming the file (and the line, if known)."""
    where, encoding = repr(str(path)), config.encoding
    try:
        yield
    except pd.errors.EmptyDataError:
        raise UserError(f"{where} is empty: it needs a header row with a {config.text_column!r} column.") from None
    except pd.errors.ParserError as exc:
        raise UserError(_parser_message(where, exc)) from None
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{where} is not valid {encoding} ({exc.reason}); "
            "pass its encoding with --encoding (e.g. --encoding latin-1) or re-encode it as UTF-8."
        ) from None
    except LookupError:
        raise UserError(f"Unknown encoding {encoding!r}; use e.g. utf-8, latin-1 or cp1252.") from None
    except _arrow_error() as exc:
        raise UserError(f"{where} is not a readable Parquet file: {one_line(exc)}.") from None
    except DECOMPRESSION_ERRORS as exc:
        method = infer_compression(str(path), "infer")
        raise UserError(
            f"Could not read {where}" + (f" as {method}" if method else "") + f": {one_line(exc)}."
        ) from None


def _arrow_error() -> type[Exception]:
    import pyarrow

    return pyarrow.ArrowException


def _parser_message(where: str, exc: pd.errors.ParserError) -> str:
    # pandas counts records from 1 ("line") or 0 ("row"): the file's line unless a quoted field spans lines.
    text = one_line(exc)
    if match := re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text):
        expected, line, saw = match.groups()
        return (
            f"{where} line {line} has {saw} fields but the header has {expected}: quote fields that contain the "
            'delimiter ("a, b") or fix that line.'
        )
    if match := re.search(r"EOF inside string starting at row (\d+)", text):
        return (
            f'{where} has a quote (") opened on line {int(match.group(1)) + 1} that is never closed: close it, '
            'and write a quote inside a quoted field as two ("").'
        )
    return f"{where} is not a readable CSV: {text}."


def chunks(handle, input_path: Path, config: ScoreConfig) -> Iterator[pd.DataFrame]:
    """The input's rows in chunks, columns by position (a CSV's header may repeat a name); reading errors as
    UserErrors."""
    with _reading(input_path, config):
        if is_parquet(input_path):
            for batch in parquet_file(handle).iter_batches(batch_size=config.chunk_size):
                frame = batch.to_pandas()
                yield frame.set_axis(range(frame.shape[1]), axis=1)
            return
        for i, chunk in enumerate(_read_csv(handle, input_path, config, chunksize=config.chunk_size)):
            yield chunk.iloc[1:] if i == 0 else chunk  # row 0 is the header, which the writer wrote
