"""Batch scoring of CSV or Parquet files through MLflow's pyfunc loader: streamed in chunks, written atomically.

`predict_texts` scores one chunk of texts and touches no file, so the same function runs inside the Spark
engine's `mapInPandas` (spark_scoring.py). `score_csv` adds the file streaming around it.
"""

from __future__ import annotations

import logging
import lzma
import os
import re
import time
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import zstandard
from pandas.io.common import infer_compression

from sentiment_flow.config import LABELS, ScoreConfig
from sentiment_flow.data import label_id
from sentiment_flow.errors import UserError, one_line
from sentiment_flow.int8_model import Int8Model

log = logging.getLogger(__name__)

PREDICTIONS = ("label", "score", "model_version")
PROBABILITIES = tuple(f"prob_{label}" for label in LABELS)
# What a damaged compressed input raises while it is read (gzip, bz2, zip, xz, zstd; EOFError when truncated).
DECOMPRESSION_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, lzma.LZMAError, zstandard.ZstdError)


@dataclass(frozen=True)
class Scorer:
    """A model loaded through `mlflow.pyfunc.load_model`, unwrapped to its transformers pipeline (or int8 model)."""

    pipeline: Any  # transformers TextClassificationPipeline, or the int8 variant's int8_model.Int8Model
    call_kwargs: dict  # the model_config it was logged with (truncation, max_length): served as trained
    model_version: str  # NAME/VERSION for a registry URI (an alias resolved when loaded), else the URI
    path: str  # the local model directory it was loaded from


@dataclass(frozen=True)
class ScoreSummary:
    """What one `score_csv` call wrote."""

    output: Path
    model_version: str
    rows: int
    blank: int  # rows whose text is empty or only spaces: scored like any other, as `mlflow models serve` does
    seconds: float
    label_counts: dict[str, int] = field(default_factory=dict)
    labelled: int = 0  # rows with a gold label in LABELS (when a gold column was named)
    accuracy: float | None = None
    f1_macro: float | None = None
    # Texts per token count (index = tokens after truncation): the scored side of the drift check.
    token_length_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    input_hash: str = ""  # sha256 of the input file (Spark: of its rows, see spark_scoring)
    input_sample: pd.DataFrame | None = None  # its first rows, named: the scoring run's dataset schema


def is_parquet(path: str | Path) -> bool:
    """Parquet by its name (`.parquet`, `.pq`); anything else is read and written as CSV."""
    return Path(str(path)).suffix.lower() in (".parquet", ".pq")


def resolve_model(model_uri: str) -> tuple[str, str]:
    """The URI to load (an alias pinned to its version: the alias may move while a long job runs) and the
    model_version written beside each prediction (NAME/VERSION, or the URI itself outside the registry)."""
    if not model_uri.startswith("models:/"):
        return model_uri, model_uri
    from sentiment_flow.registry import resolve_version

    version = resolve_version(model_uri)
    return f"models:/{version.name}/{version.version}", f"{version.name}/{version.version}"


def load_scorer(model_uri: str, dst_path: str | None = None) -> Scorer:
    """Load `model_uri` (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model or a local path), downloaded
    into `dst_path` if given (a local model is then copied there too)."""
    import mlflow

    load_uri, model_version = resolve_model(model_uri)
    try:
        path = mlflow.artifacts.download_artifacts(load_uri, dst_path=dst_path)
        model = mlflow.pyfunc.load_model(path)
    except Exception as exc:  # MLflow raises many types for "not there" and "not a model"
        raise UserError(
            f"Could not load model {model_uri!r}: {one_line(exc)}. Pass models:/NAME@ALIAS, models:/NAME/VERSION, "
            "runs:/RUN_ID/model or a local MLflow model directory."
        ) from exc
    if isinstance(python_model := _python_model(model), Int8Model):  # `sentiment-flow optimize`'s variant
        pipeline, labels = python_model, set(python_model.labels)
    else:
        from transformers import Pipeline  # here: it imports torch, which the int8 variant does without

        pipeline = model.get_raw_model()
        if not isinstance(pipeline, Pipeline) or pipeline.task != "text-classification":
            raise UserError(
                f"{model_uri!r} is not a transformers text-classification model; score a model logged by "
                "`sentiment-flow train` or `sentiment-flow optimize`."
            )
        labels = set((pipeline.model.config.id2label or {}).values())  # none: refused below like wrong ones
    if labels != set(LABELS):
        raise UserError(
            f"{model_uri!r} predicts labels {sorted(labels)}, not {list(LABELS)}: its config needs id2label = "
            f"{dict(enumerate(LABELS))}."
        )
    # Truncate even a model logged without a model_config: one overlong text must not fail a whole job.
    call_kwargs = {"truncation": True, **(model.model_config or {})}
    call_kwargs.pop("batch_size", None)  # serving's batch size: the scorer's --batch-size decides here
    return Scorer(pipeline=pipeline, call_kwargs=call_kwargs, model_version=model_version, path=path)


def _python_model(model):
    """The PythonModel inside a pyfunc model, or None for a built-in flavor."""
    import mlflow

    try:
        return model.unwrap_python_model()
    except mlflow.exceptions.MlflowException:
        return None


def predict_texts(
    scorer: Scorer, texts: pd.Series, batch_size: int = 32, lengths: np.ndarray | None = None
) -> pd.DataFrame:
    """`label`, `score` and one `prob_<label>` column per class, on the index of `texts`.

    Texts are scored in order of their token counts (`lengths`, from `token_lengths`, computed here if not given),
    so each batch pads little, and returned in their own order.
    Every text is scored, an empty one too (a missing one as ""): `mlflow models serve` answers the model's
    prediction for "", and the scorer must agree with it.
    """
    clean = texts.fillna("").astype(str).tolist()
    probs = np.empty((len(clean), len(LABELS)))
    if isinstance(scorer.pipeline, Int8Model):  # sorts by token count itself, tokenizing each text once
        columns = [scorer.pipeline.labels.index(label) for label in LABELS]
        probs[:] = scorer.pipeline.probabilities(clean, batch_size)[:, columns]
    elif clean:  # the pipeline fails on an empty list (a first chunk of one row is the header alone)
        # Tokens, not characters: in a mix of languages, texts of one character length differ several-fold in
        # tokens, and a batch sorted by characters pads to its longest (Spark's shuffled chunks scored 1.45x slower).
        order = np.argsort(token_lengths(scorer, texts) if lengths is None else lengths, kind="stable")
        results = scorer.pipeline([clean[i] for i in order], batch_size=batch_size, top_k=None, **scorer.call_kwargs)
        for i, row in zip(order, results):
            scores = {r["label"]: r["score"] for r in row}
            probs[i] = [scores[label] for label in LABELS]
    out = pd.DataFrame(probs, columns=list(PROBABILITIES), index=texts.index)
    out.insert(0, "label", np.asarray(LABELS, dtype=object)[probs.argmax(axis=1)])
    out.insert(1, "score", probs.max(axis=1))
    return out


def token_lengths(scorer: Scorer, texts: pd.Series) -> np.ndarray:
    """Tokens per text as the model sees it (truncated like `predict_texts`), for the token-length drift check."""
    if texts.empty:  # the tokenizer fails on an empty list
        return np.zeros(0, dtype=np.int64)
    clean = texts.fillna("").astype(str).tolist()
    if isinstance(scorer.pipeline, Int8Model):  # a tokenizer that truncates at the variant's max_length
        return np.fromiter((len(e.ids) for e in scorer.pipeline.tokenizer.encode_batch(clean)), np.int64, len(clean))
    tokenizer = scorer.pipeline.tokenizer
    max_length = scorer.call_kwargs.get("max_length") or tokenizer.model_max_length
    encoded = tokenizer(clean, truncation=True, max_length=max_length)
    return np.fromiter((len(ids) for ids in encoded["input_ids"]), dtype=np.int64, count=len(texts))


def output_columns(prefix: str = "", probabilities: bool = False) -> list[str]:
    """The columns `score_csv` appends to the input's, in order."""
    return [prefix + name for name in (*PREDICTIONS, *(PROBABILITIES if probabilities else ()))]


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
            parquet = _parquet(input_path)
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
        ("text", config.text_column, "--text-column"), ("gold label", config.label_column, "--label-column")
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
        for _ in _chunks(handle, path, config):
            pass


def _parquet(path: Path):
    import pyarrow.parquet as pq

    return pq.ParquetFile(path)


def _read_csv(source, path: Path, config: ScoreConfig, **kwargs):
    """`pd.read_csv` of `source` (`path` or an open binary handle on it) as written: the header is row 0, so
    duplicate names stay duplicates and a longer row is an error, not an index; blank lines are rows; every
    field a string, empty ones empty."""
    return pd.read_csv(
        source, header=None, dtype=str, keep_default_na=False, skip_blank_lines=False, encoding=config.encoding,
        # Inferred from the name: pandas infers nothing from an open handle.
        compression=infer_compression(str(path), "infer"), **kwargs,
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
            f"{where} has a quote (\") opened on line {int(match.group(1)) + 1} that is never closed: close it, "
            'and write a quote inside a quoted field as two ("").'
        )
    return f"{where} is not a readable CSV: {text}."


def score_csv(
    model_uri: str,
    input_path: str | Path,
    output_path: str | Path,
    config: ScoreConfig = ScoreConfig(),
    *,
    probabilities: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> ScoreSummary:
    """Score every row of `input_path` into `output_path`: its columns and rows in order, plus predictions.

    Each file is CSV or Parquet by its name (`is_parquet`). The output appears only when every row is written
    (a temporary file is published under its name); a failure or an interrupt leaves no output file behind,
    and an existing one is replaced only with `overwrite`.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    header = check_input(input_path, config, probabilities)
    if output_path.resolve() == input_path.resolve():
        raise UserError("The output path is the input file; write the scores to a new file.")
    if output_path.exists() and not overwrite:
        raise UserError(f"Output {str(output_path)!r} exists; pass --overwrite to replace it.")
    if not output_path.parent.is_dir():
        raise UserError(f"Output folder {str(output_path.parent)!r} does not exist; create it first.")
    if is_parquet(output_path) and len(set(header)) < len(header):
        raise UserError(
            f"{str(input_path)!r} has duplicate column names, which Parquet cannot hold; rename them or write "
            "the scores to a .csv OUTPUT."
        )
    scorer = load_scorer(model_uri)

    # Beside the output (same filesystem, so publishing it is atomic), hidden, and never mistaken for it.
    partial = output_path.with_name(f".{output_path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        with _writer(partial, output_path, header, input_path, config, probabilities) as write:
            summary = _stream(scorer, input_path, header, write, config, probabilities, progress)
        _publish(partial, output_path, overwrite)
    except OSError as exc:  # reading errors are UserErrors by now: this is the output's disk or folder
        raise UserError(
            f"Could not write {str(output_path)!r}: {exc.strerror or one_line(exc)}. Nothing was written and an "
            "existing file there is unchanged; free space or choose another OUTPUT."
        ) from None
    finally:  # an interrupt too: never leave a half-written file behind (after a publish, only a second name)
        partial.unlink(missing_ok=True)
    return ScoreSummary(output=output_path, **summary)


@contextmanager
def _writer(partial: Path, output: Path, header: list[str], input_path: Path, config: ScoreConfig, probabilities: bool):
    """A function writing one scored chunk (positional columns: the input's, then the predictions) to `partial`."""
    columns = header + output_columns(config.output_prefix, probabilities)
    if not is_parquet(output):
        # CRLF line ends (RFC 4180): with "\n", pandas leaves a field holding a lone "\r" unquoted, which a
        # reader then splits into two rows.
        lines = "\r\n"
        with open(partial, "x", encoding="utf-8", newline="") as out:
            out.write(pd.DataFrame(columns=columns).to_csv(index=False, lineterminator=lines))  # duplicates stay
            yield lambda scored: scored.to_csv(out, header=False, index=False, lineterminator=lines)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    # One schema for every chunk: a CSV's columns are all strings; a Parquet input keeps its own types.
    given = _parquet(input_path).schema_arrow if is_parquet(input_path) else pa.schema([(c, pa.string()) for c in header])
    texts = {config.output_prefix + name for name in ("label", "model_version")}
    predicted = [(name, pa.string() if name in texts else pa.float64()) for name in columns[len(header):]]
    schema = pa.schema([*given, *predicted])
    with open(partial, "xb") as handle, pq.ParquetWriter(handle, schema) as out:
        yield lambda scored: out.write_table(pa.Table.from_pandas(scored.set_axis(columns, axis=1), schema, preserve_index=False))


def _publish(partial: Path, output: Path, overwrite: bool) -> None:
    """Give `partial` the name `output`, replacing a file there only if `overwrite`."""
    if overwrite:
        os.replace(partial, output)
        return
    # The existence check ran before scoring; another job may have written `output` since. A hard link
    # fails if the name exists, where a rename would silently replace that job's file.
    try:
        os.link(partial, output)
    except FileExistsError:
        raise UserError(
            f"Output {str(output)!r} appeared while scoring (another job?) and was left as it is; score again "
            "with --overwrite to replace it, or to another OUTPUT."
        ) from None


def _stream(
    scorer: Scorer, input_path: Path, header: list[str], write, config: ScoreConfig, probabilities: bool, progress: bool
) -> dict:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    text_at = header.index(config.text_column)
    label_at = header.index(config.label_column) if config.label_column else None
    confusion = np.zeros((len(LABELS), len(LABELS)), dtype=np.int64)
    counts = dict.fromkeys(LABELS, 0)
    lengths = np.zeros(0, dtype=np.int64)
    rows = blank = 0
    sample = None
    start = time.perf_counter()
    bar = Progress(
        TextColumn("Scoring"), BarColumn(), TextColumn("{task.fields[rows]:,} rows, {task.fields[rate]:,.0f} rows/s"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True), disable=not progress,
    )
    with bar, open(input_path, "rb") as handle:
        task = bar.add_task("score", total=os.path.getsize(input_path), rows=0, rate=0.0)
        for chunk in _chunks(handle, input_path, config):
            texts = chunk[text_at].fillna("")
            chunk_token_lengths = token_lengths(scorer, texts)  # orders the batches and feeds the drift check
            predicted = predict_texts(scorer, texts, config.batch_size, chunk_token_lengths)
            predicted["model_version"] = scorer.model_version
            predicted = predicted[output_columns(probabilities=probabilities)]
            if sample is None:
                sample = chunk.head(5).set_axis(header, axis=1)
            width = chunk.shape[1]
            write(pd.concat([chunk, predicted.set_axis(range(width, width + predicted.shape[1]), axis=1)], axis=1))

            rows += len(chunk)
            blank += int((texts.astype(str).str.strip() == "").sum())
            for label, n in predicted["label"].value_counts().items():
                counts[label] += int(n)
            chunk_lengths = np.bincount(chunk_token_lengths)
            lengths = np.pad(lengths, (0, max(0, len(chunk_lengths) - len(lengths))))
            lengths[: len(chunk_lengths)] += chunk_lengths
            if label_at is not None:
                _add_confusion(confusion, chunk[label_at], predicted["label"])
            bar.update(task, completed=handle.tell(), rows=rows, rate=rows / (time.perf_counter() - start))
    accuracy, f1_macro = _metrics(confusion) if config.label_column else (None, None)
    return dict(
        model_version=scorer.model_version, rows=rows, blank=blank, seconds=time.perf_counter() - start,
        label_counts=counts, labelled=int(confusion.sum()), accuracy=accuracy, f1_macro=f1_macro,
        token_length_counts=lengths, input_hash=_sha256(input_path), input_sample=sample,
    )


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()  # block by block: hashlib.file_digest is Python 3.11+, the project supports 3.10
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _chunks(handle, input_path: Path, config: ScoreConfig) -> Iterator[pd.DataFrame]:
    """The input's rows in chunks, columns by position (a CSV's header may repeat a name); reading errors as
    UserErrors."""
    with _reading(input_path, config):
        if is_parquet(input_path):
            for batch in _parquet(handle).iter_batches(batch_size=config.chunk_size):
                frame = batch.to_pandas()
                yield frame.set_axis(range(frame.shape[1]), axis=1)
            return
        for i, chunk in enumerate(_read_csv(handle, input_path, config, chunksize=config.chunk_size)):
            yield chunk.iloc[1:] if i == 0 else chunk  # row 0 is the header, which the writer wrote


def _add_confusion(confusion: np.ndarray, gold: pd.Series, predicted: pd.Series) -> None:
    """Count (gold, predicted) pairs of rows that have both; gold given as a name or an id 0-2."""
    gold_ids, predicted_ids = gold.map(label_id), predicted.map(label_id)
    both = gold_ids.notna() & predicted_ids.notna()
    np.add.at(confusion, (gold_ids[both].astype(int), predicted_ids[both].astype(int)), 1)


def _metrics(confusion: np.ndarray) -> tuple[float | None, float | None]:
    """Accuracy and macro-F1 from a confusion matrix (rows gold, columns predicted)."""
    total = confusion.sum()
    if total == 0:
        return None, None
    tp = np.diag(confusion)
    denominators = confusion.sum(axis=0) + confusion.sum(axis=1)  # 2tp + fp + fn
    f1 = np.divide(2 * tp, denominators, out=np.zeros(len(tp)), where=denominators > 0)
    return float(tp.sum() / total), float(f1.mean())
