"""The scorer: a model loaded through MLflow's pyfunc loader, unwrapped to what scores it, and `predict_texts`,
which scores one chunk of texts and touches no file: the local engine (files.py) and the Spark engine's
`mapInPandas` (spark.py) both run it.

Two kinds of logged model score here, each described once in KINDS: the transformers flavor that training logs
(its pipeline) and the int8 variant that `optimize` logs (its ONNX Runtime model). Which one a model is, its
MLmodel says (its flavors, or the variant's metadata), never its Python class.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sentiment_flow.config import CANARY_TEXTS, INPUT_COLUMN, INT8_VARIANT, LABELS, VARIANT_METADATA_KEY
from sentiment_flow.errors import UserError, one_line
from sentiment_flow.monitoring.probabilities import empty as no_probabilities

log = logging.getLogger(__name__)

PREDICTIONS = ("label", "score", "model_version")
PROBABILITIES = tuple(f"prob_{label}" for label in LABELS)
TRANSFORMERS = "transformers"


@dataclass(frozen=True)
class Scorer:
    """A model loaded through `mlflow.pyfunc.load_model`, unwrapped to what scores it."""

    kind: str  # a key of KINDS
    pipeline: Any  # transformers TextClassificationPipeline, or the int8 variant's Int8Model
    call_kwargs: dict  # the model_config it was logged with (truncation, max_length): served as trained
    model_version: str  # NAME/VERSION for a registry URI (an alias resolved when loaded), else the URI
    path: str  # the local model directory it was loaded from


@dataclass(frozen=True)
class ScoreSummary:
    """What one scoring job wrote, from either engine."""

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
    input_hash: str = ""  # sha256 of the input file (Spark: of its rows, see spark.py)
    input_sample: pd.DataFrame | None = None  # its first rows, named: the scoring run's dataset schema
    # monitoring.probabilities' stats of every row's probabilities: what `monitor` estimates performance from.
    probability_stats: dict[str, np.ndarray] = field(default_factory=no_probabilities)
    # monitoring.vocabulary's counts against the training split (None: the model has no vocabulary logged).
    vocabulary_counts: np.ndarray | None = None


def resolve_model(model_uri: str) -> tuple[str, str]:
    """The URI to load (an alias pinned to its version: the alias may move while a long job runs) and the
    model_version written beside each prediction (NAME/VERSION, or the URI itself outside the registry)."""
    if not model_uri.startswith("models:/"):
        return model_uri, model_uri
    from sentiment_flow.store import models_uri, resolve_version

    version = resolve_version(model_uri)
    return models_uri(version.name, version.version), f"{version.name}/{version.version}"


def load_scorer(model_uri: str, dst_path: str | None = None) -> Scorer:
    """Load `model_uri` (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model or a local path), downloaded
    into `dst_path` if given (a local model is then copied there too)."""
    import mlflow

    load_uri, model_version = resolve_model(model_uri)
    try:
        path = mlflow.artifacts.download_artifacts(load_uri, dst_path=dst_path)
        model = mlflow.pyfunc.load_model(path)
    except Exception as exc:
        raise UserError(
            f"Could not load model {model_uri!r}: {one_line(exc)}. Pass models:/NAME@ALIAS, models:/NAME/VERSION, "
            "runs:/RUN_ID/model or a local MLflow model directory."
        ) from exc
    kind = model_kind(model.metadata)
    pipeline, labels = KINDS[kind].unwrap(model, model_uri)
    if labels != set(LABELS):
        raise UserError(
            f"{model_uri!r} predicts labels {sorted(labels)}, not {list(LABELS)}: its config needs id2label = "
            f"{dict(enumerate(LABELS))}."
        )
    # Truncate even a model logged without a model_config: one overlong text must not fail a whole job.
    call_kwargs = {"truncation": True, **(model.model_config or {})}
    call_kwargs.pop("batch_size", None)  # serving's batch size: the scorer's --batch-size decides here
    return Scorer(kind=kind, pipeline=pipeline, call_kwargs=call_kwargs, model_version=model_version, path=path)


def model_kind(metadata) -> str:
    """The KINDS key of a logged model, from its MLmodel (`mlflow.models.Model`): the transformers flavor, or
    `optimize`'s variant by its metadata (or, logged before that metadata existed, by its code file's name)."""
    if TRANSFORMERS in metadata.flavors:
        return TRANSFORMERS
    code = (metadata.flavors.get("python_function") or {}).get("model_code_path") or ""
    if (metadata.metadata or {}).get(VARIANT_METADATA_KEY) == INT8_VARIANT or Path(code).name == "int8_model.py":
        return INT8_VARIANT
    return TRANSFORMERS  # refused by its unwrap, in words that name what to score instead


def canary_answers(model) -> tuple[list[str], list[str]]:
    """What pyfunc `model` answers for CANARY_TEXTS, sent as serving sends them (the signature's one input column):
    its label per text, and those labels not in LABELS (sorted). The registry's smoke test and `serve`'s swap both
    judge a model by these. Raises what predicting raises; KeyError when the output has no `label` column."""
    output = model.predict(pd.DataFrame({INPUT_COLUMN: list(CANARY_TEXTS)}))
    if isinstance(output, pd.DataFrame):
        if "label" not in output:
            raise KeyError(f"no label column in the output, only {list(output.columns)}")
        output = output["label"]
    labels = [str(label) for label in output]
    return labels, sorted(set(labels) - set(LABELS))


def predict_texts(
    scorer: Scorer, texts: pd.Series, batch_size: int = 32, lengths: np.ndarray | None = None
) -> pd.DataFrame:
    """`label`, `score` and one `prob_<label>` column per class, on the index of `texts`.

    Texts are scored in order of their token counts (`lengths`, from `token_lengths`, computed if not given),
    so each batch pads little, and returned in their own order.
    Every text is scored, an empty one too (a missing one as ""): `mlflow models serve` answers the model's
    prediction for "", and the scorer must agree with it.
    """
    clean = texts.fillna("").astype(str).tolist()
    probs = np.empty((len(clean), len(LABELS)))
    if clean:  # the pipeline fails on an empty list (a first chunk of one row is the header alone)
        probs[:] = KINDS[scorer.kind].probabilities(scorer, clean, batch_size, lengths)
    out = pd.DataFrame(probs, columns=list(PROBABILITIES), index=texts.index)
    out.insert(0, "label", np.asarray(LABELS, dtype=object)[probs.argmax(axis=1)])
    out.insert(1, "score", probs.max(axis=1))
    return out


def token_lengths(scorer: Scorer, texts: pd.Series) -> np.ndarray:
    """Tokens per text as the model sees it (truncated like `predict_texts`), for the token-length drift check."""
    if texts.empty:  # the tokenizer fails on an empty list
        return np.zeros(0, dtype=np.int64)
    return KINDS[scorer.kind].token_lengths(scorer, texts.fillna("").astype(str).tolist())


def _pipeline_unwrap(model, model_uri: str) -> tuple[Any, set[str]]:
    from transformers import Pipeline  # here: it imports torch, which the int8 variant does without

    pipeline = model.get_raw_model()
    if not isinstance(pipeline, Pipeline) or pipeline.task != "text-classification":
        raise UserError(
            f"{model_uri!r} is not a transformers text-classification model; score a model logged by "
            "`sentiment-flow train` or `sentiment-flow optimize`."
        )
    return pipeline, set((pipeline.model.config.id2label or {}).values())  # none: refused like wrong ones


def _pipeline_probabilities(scorer: Scorer, texts: list[str], batch_size: int, lengths) -> np.ndarray:
    # Tokens, not characters: in a mix of languages, texts of one character length differ several-fold in
    # tokens, and a batch sorted by characters pads to its longest (Spark's shuffled chunks scored 1.45x slower).
    order = np.argsort(_pipeline_token_lengths(scorer, texts) if lengths is None else lengths, kind="stable")
    results = scorer.pipeline([texts[i] for i in order], batch_size=batch_size, top_k=None, **scorer.call_kwargs)
    probs = np.empty((len(texts), len(LABELS)))
    for i, row in zip(order, results):
        scores = {r["label"]: r["score"] for r in row}
        probs[i] = [scores[label] for label in LABELS]
    return probs


def _pipeline_token_lengths(scorer: Scorer, texts: list[str]) -> np.ndarray:
    tokenizer = scorer.pipeline.tokenizer
    max_length = scorer.call_kwargs.get("max_length") or tokenizer.model_max_length
    encoded = tokenizer(texts, truncation=True, max_length=max_length)
    return np.fromiter((len(ids) for ids in encoded["input_ids"]), dtype=np.int64, count=len(texts))


def _int8_unwrap(model, model_uri: str) -> tuple[Any, set[str]]:
    variant = model.unwrap_python_model()
    return variant, set(variant.labels)


def _int8_probabilities(scorer: Scorer, texts: list[str], batch_size: int, lengths) -> np.ndarray:
    # The variant sorts by token count itself, tokenizing each text once: `lengths` are not needed.
    columns = [scorer.pipeline.labels.index(label) for label in LABELS]
    return scorer.pipeline.probabilities(texts, batch_size)[:, columns]


def _int8_token_lengths(scorer: Scorer, texts: list[str]) -> np.ndarray:
    # The variant's tokenizer truncates at its max_length, as it does when scoring.
    return np.fromiter((len(e.ids) for e in scorer.pipeline.tokenizer.encode_batch(texts)), np.int64, len(texts))


@dataclass(frozen=True)
class Kind:
    """How one kind of logged model is unwrapped (to what scores it, and its labels) and run."""

    unwrap: Callable[[Any, str], tuple[Any, set[str]]]
    probabilities: Callable[[Scorer, list[str], int, np.ndarray | None], np.ndarray]  # rows in LABELS order
    token_lengths: Callable[[Scorer, list[str]], np.ndarray]


KINDS = {
    TRANSFORMERS: Kind(_pipeline_unwrap, _pipeline_probabilities, _pipeline_token_lengths),
    INT8_VARIANT: Kind(_int8_unwrap, _int8_probabilities, _int8_token_lengths),
}


def output_columns(prefix: str = "", probabilities: bool = False) -> list[str]:
    """The columns `score_csv` appends to the input's, in order."""
    return [prefix + name for name in (*PREDICTIONS, *(PROBABILITIES if probabilities else ()))]
