"""The local engine of `score`: one CSV or Parquet file (by its name) streamed in chunks through the scorer and
written atomically: the output appears only when every row is written (inputs.py checks and reads the input)."""

from __future__ import annotations

import logging
import os
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from sentiment_flow import metrics
from sentiment_flow.config import LABELS, ScoreConfig
from sentiment_flow.data import label_id
from sentiment_flow.errors import UserError, one_line
from sentiment_flow.monitoring import probabilities as probability_stats
from sentiment_flow.monitoring import vocabulary
from sentiment_flow.scoring.inputs import check_input, chunks, is_parquet, parquet_file
from sentiment_flow.scoring.runs import known_vocabulary
from sentiment_flow.scoring.scorer import (
    PROBABILITIES,
    Scorer,
    ScoreSummary,
    load_scorer,
    output_columns,
    predict_texts,
    token_lengths,
)

log = logging.getLogger(__name__)


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
    known = known_vocabulary(model_uri, scorer.model_version)

    # Beside the output (same filesystem, so publishing it is atomic), hidden, and never mistaken for it.
    partial = output_path.with_name(f".{output_path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        with _writer(partial, output_path, header, input_path, config, probabilities) as write:
            summary = _stream(scorer, input_path, header, write, config, probabilities, progress, known)
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
    given = (
        parquet_file(input_path).schema_arrow
        if is_parquet(input_path)
        else pa.schema([(c, pa.string()) for c in header])
    )
    texts = {config.output_prefix + name for name in ("label", "model_version")}
    predicted = [(name, pa.string() if name in texts else pa.float64()) for name in columns[len(header) :]]
    schema = pa.schema([*given, *predicted])
    with open(partial, "xb") as handle, pq.ParquetWriter(handle, schema) as out:
        yield lambda scored: out.write_table(
            pa.Table.from_pandas(scored.set_axis(columns, axis=1), schema, preserve_index=False)
        )


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
    scorer: Scorer,
    input_path: Path,
    header: list[str],
    write,
    config: ScoreConfig,
    probabilities: bool,
    progress: bool,
    known: dict | None = None,
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
    stats = probability_stats.empty()
    words = np.zeros(len(vocabulary.FIELDS), dtype=np.int64) if known else None
    start = time.perf_counter()
    bar = Progress(
        TextColumn("Scoring"),
        BarColumn(),
        TextColumn("{task.fields[rows]:,} rows, {task.fields[rate]:,.0f} rows/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not progress,
    )
    with bar, open(input_path, "rb") as handle:
        task = bar.add_task("score", total=os.path.getsize(input_path), rows=0, rate=0.0)
        for chunk in chunks(handle, input_path, config):
            texts = chunk[text_at].fillna("")
            chunk_token_lengths = token_lengths(scorer, texts)  # orders the batches and feeds the drift check
            predicted = predict_texts(scorer, texts, config.batch_size, chunk_token_lengths)
            predicted["model_version"] = scorer.model_version
            probability_stats.add(stats, probability_stats.of(predicted[list(PROBABILITIES)]))
            if known is not None and words is not None:
                words += vocabulary.counts(texts, known)
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
                confusion += _labelled_confusion(chunk[label_at], predicted["label"])
            bar.update(task, completed=handle.tell(), rows=rows, rate=rows / (time.perf_counter() - start))
    gold = metrics.from_confusion(confusion)  # empty without gold labels
    return dict(
        model_version=scorer.model_version,
        rows=rows,
        blank=blank,
        seconds=time.perf_counter() - start,
        label_counts=counts,
        labelled=int(confusion.sum()),
        accuracy=gold.get("accuracy"),
        f1_macro=gold.get("f1_macro"),
        token_length_counts=lengths,
        input_hash=_sha256(input_path),
        input_sample=sample,
        probability_stats=stats,
        vocabulary_counts=words,
    )


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()  # block by block: hashlib.file_digest is Python 3.11+, the project supports 3.10
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _labelled_confusion(gold: pd.Series, predicted: pd.Series) -> np.ndarray:
    """The confusion matrix of the rows that have a known gold label (a name or an id 0-2)."""
    gold_ids, predicted_ids = gold.map(label_id), predicted.map(label_id)
    both = gold_ids.notna() & predicted_ids.notna()
    return metrics.confusion_matrix(gold_ids[both].astype(int), predicted_ids[both].astype(int))
