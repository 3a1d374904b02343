"""Batch scoring of CSV files through MLflow's pyfunc loader: streamed in chunks, written atomically.

`predict_texts` scores one chunk of texts and touches no file, so the same function can run inside a
Spark job (e.g. a pandas UDF over `load_scorer`). `score_csv` adds the CSV streaming around it.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sentiment_flow.config import LABELS, ScoreConfig
from sentiment_flow.data import label_id
from sentiment_flow.errors import UserError, one_line

log = logging.getLogger(__name__)

PREDICTIONS = ("label", "score", "model_version")
PROBABILITIES = tuple(f"prob_{label}" for label in LABELS)


@dataclass(frozen=True)
class Scorer:
    """A model loaded through `mlflow.pyfunc.load_model`, unwrapped to its transformers pipeline."""

    pipeline: object  # transformers TextClassificationPipeline
    call_kwargs: dict  # the model_config it was logged with (truncation, max_length): served as trained
    model_version: str  # NAME/VERSION for a registry URI (an alias resolved when loaded), else the URI


@dataclass(frozen=True)
class ScoreSummary:
    """What one `score_csv` call wrote."""

    output: Path
    model_version: str
    rows: int
    blank: int  # rows with empty text: written with an empty label
    seconds: float
    label_counts: dict[str, int] = field(default_factory=dict)
    labelled: int = 0  # rows with a gold label in LABELS (when a gold column was named)
    accuracy: float | None = None
    f1_macro: float | None = None


def load_scorer(model_uri: str) -> Scorer:
    """Load `model_uri` (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model or a local path)."""
    import mlflow
    from transformers import Pipeline

    model_version = load_uri = model_uri
    if model_uri.startswith("models:/"):
        from sentiment_flow.registry import resolve_version

        version = resolve_version(model_uri)
        model_version = f"{version.name}/{version.version}"
        load_uri = f"models:/{model_version}"  # pinned: the alias may move while a long job runs
    try:
        model = mlflow.pyfunc.load_model(load_uri)
    except Exception as exc:  # noqa: BLE001 - MLflow raises many types for "not there" and "not a model"
        raise UserError(
            f"Could not load model {model_uri!r}: {one_line(exc)}. Pass models:/NAME@ALIAS, models:/NAME/VERSION, "
            "runs:/RUN_ID/model or a local MLflow model directory."
        ) from exc
    pipeline = model.get_raw_model()
    if not isinstance(pipeline, Pipeline) or pipeline.task != "text-classification":
        raise UserError(
            f"{model_uri!r} is not a transformers text-classification model; score a model logged by "
            "`sentiment-flow train`."
        )
    labels = set(pipeline.model.config.id2label.values())
    if labels != set(LABELS):
        raise UserError(
            f"{model_uri!r} predicts labels {sorted(labels)}, not {list(LABELS)}: its config needs id2label = "
            f"{dict(enumerate(LABELS))}."
        )
    # Truncate even a model logged without a model_config: one overlong text must not fail a whole job.
    call_kwargs = {"truncation": True, **(model.model_config or {})}
    return Scorer(pipeline=pipeline, call_kwargs=call_kwargs, model_version=model_version)


def predict_texts(scorer: Scorer, texts: pd.Series, batch_size: int = 32) -> pd.DataFrame:
    """`label`, `score` and one `prob_<label>` column per class, on the index of `texts`.

    Texts are scored in length order, so each batch pads little, and returned in their own order.
    Empty or missing texts get an empty label and NaN scores instead of failing the chunk.
    """
    clean = texts.fillna("").astype(str)
    present = clean[clean.str.strip() != ""]
    order = present.str.len().sort_values(kind="stable").index
    out = pd.DataFrame({"label": "", "score": np.nan, **dict.fromkeys(PROBABILITIES, np.nan)}, index=texts.index)
    if len(order):
        results = scorer.pipeline(
            present.loc[order].tolist(), batch_size=batch_size, top_k=None, **scorer.call_kwargs
        )
        probs = pd.DataFrame([{r["label"]: r["score"] for r in row} for row in results], index=order, columns=list(LABELS))
        out.loc[order, "label"] = probs.idxmax(axis=1)
        out.loc[order, "score"] = probs.max(axis=1)
        out.loc[order, list(PROBABILITIES)] = probs.to_numpy()
    return out


def output_columns(prefix: str = "", probabilities: bool = False) -> list[str]:
    """The columns `score_csv` appends to the input's, in order."""
    return [prefix + name for name in (*PREDICTIONS, *(PROBABILITIES if probabilities else ()))]


def check_input(input_path: Path, config: ScoreConfig, probabilities: bool = False) -> list[str]:
    """The input's columns, after checking everything that can be checked before a model is loaded."""
    if not input_path.is_file():
        raise UserError(f"Input file {str(input_path)!r} does not exist.")
    try:
        head = pd.read_csv(input_path, nrows=1, dtype=str, encoding=config.encoding)
    except pd.errors.EmptyDataError:
        raise UserError(
            f"{str(input_path)!r} is empty: it needs a header row with a {config.text_column!r} column."
        ) from None
    except UnicodeDecodeError as exc:
        raise UserError(_decode_message(input_path, config.encoding, exc)) from None
    except LookupError:
        raise UserError(f"Unknown encoding {config.encoding!r}; use e.g. utf-8, latin-1 or cp1252.") from None
    columns = list(head.columns)
    for role, name in (("text", config.text_column), ("gold label", config.label_column)):
        if name and name not in columns:
            option = "--text-column" if role == "text" else "--label-column"
            raise UserError(
                f"{str(input_path)!r} has no {role} column {name!r}; its columns are {', '.join(columns)}. "
                f"Name the right one with {option}."
            )
    if head.empty:
        raise UserError(f"{str(input_path)!r} has a header but no rows to score.")
    clashes = [c for c in output_columns(config.output_prefix, probabilities) if c in columns]
    if clashes:
        suggestion = "pred_" + config.output_prefix
        raise UserError(
            f"{str(input_path)!r} already has column(s) {', '.join(clashes)}, which scoring would write. "
            f"Pass --output-prefix (e.g. --output-prefix {suggestion}) to name the new columns "
            f"{', '.join(output_columns(suggestion, probabilities))}."
        )
    return columns


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

    The output appears only when every row is written (a temporary file is renamed); a failure or an
    interrupt leaves no output file behind.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    check_input(input_path, config, probabilities)
    if output_path.resolve() == input_path.resolve():
        raise UserError("The output path is the input file; write the scores to a new file.")
    if output_path.exists() and not overwrite:
        raise UserError(f"Output {str(output_path)!r} exists; pass --overwrite to replace it.")
    if not output_path.parent.is_dir():
        raise UserError(f"Output folder {str(output_path.parent)!r} does not exist; create it first.")
    scorer = load_scorer(model_uri)

    # Beside the output (same filesystem, so the rename is atomic), hidden, and never mistaken for it.
    partial = output_path.with_name(f".{output_path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        with open(partial, "x", encoding="utf-8", newline="") as out:
            summary = _stream(scorer, input_path, out, config, probabilities, progress)
        os.replace(partial, output_path)
    except BaseException:  # an interrupt too: never leave a half-written file behind
        partial.unlink(missing_ok=True)
        raise
    return ScoreSummary(output=output_path, **summary)


def _stream(scorer: Scorer, input_path: Path, out, config: ScoreConfig, probabilities: bool, progress: bool) -> dict:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    names = output_columns(config.output_prefix, probabilities)
    confusion = np.zeros((len(LABELS), len(LABELS)), dtype=np.int64)
    counts = dict.fromkeys(LABELS, 0)
    rows = blank = 0
    start = time.perf_counter()
    bar = Progress(
        TextColumn("Scoring"), BarColumn(), TextColumn("{task.fields[rows]:,} rows, {task.fields[rate]:,.0f} rows/s"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True), disable=not progress,
    )
    with bar, open(input_path, "rb") as handle:
        task = bar.add_task("score", total=os.path.getsize(input_path), rows=0, rate=0.0)
        # Every field as a string, empty ones kept empty: the input columns are written back unchanged.
        reader = pd.read_csv(
            handle, dtype=str, keep_default_na=False, chunksize=config.chunk_size, encoding=config.encoding
        )
        try:
            for chunk in reader:
                predicted = predict_texts(scorer, chunk[config.text_column], config.batch_size)
                predicted["model_version"] = scorer.model_version
                predicted = predicted[output_columns(probabilities=probabilities)]
                predicted.columns = names
                pd.concat([chunk, predicted], axis=1).to_csv(out, header=rows == 0, index=False)

                labels = predicted[config.output_prefix + "label"]
                rows += len(chunk)
                blank += int((labels == "").sum())
                for label, n in labels[labels != ""].value_counts().items():
                    counts[label] += int(n)
                if config.label_column:
                    _add_confusion(confusion, chunk[config.label_column], labels)
                bar.update(task, completed=handle.tell(), rows=rows, rate=rows / (time.perf_counter() - start))
        except UnicodeDecodeError as exc:
            raise UserError(_decode_message(input_path, config.encoding, exc)) from None
    accuracy, f1_macro = _metrics(confusion) if config.label_column else (None, None)
    return dict(
        model_version=scorer.model_version, rows=rows, blank=blank, seconds=time.perf_counter() - start,
        label_counts=counts, labelled=int(confusion.sum()), accuracy=accuracy, f1_macro=f1_macro,
    )


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


def _decode_message(path: Path, encoding: str, exc: UnicodeDecodeError) -> str:
    return (
        f"{str(path)!r} is not valid {encoding} ({exc.reason}); "
        "pass its encoding with --encoding (e.g. --encoding latin-1) or re-encode it as UTF-8."
    )
