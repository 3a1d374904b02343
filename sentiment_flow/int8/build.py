"""optimize(uri): an int8 ONNX Runtime variant of a registered version, gated on its test split, registered as
NAME-int8, in named steps (export.py and smoothing.py build its graphs; model.py is the variant itself).

ONNX Runtime's int8 was measured against PyTorch's dynamic quantization on this project's CPU (AVX-512
VNNI): see docs/int8.md and benchmarks/results/int8.md for the numbers behind the choice.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from sentiment_flow import metrics as M
from sentiment_flow import runs, store
from sentiment_flow.config import (
    HEADLINE_METRICS,
    INT8_CALIBRATION_ROWS,
    INT8_VARIANT,
    LABELS,
    MODEL_ARTIFACT,
    OptimizeConfig,
    model_name_problem,
    shortened,
)
from sentiment_flow.errors import UserError
from sentiment_flow.int8.export import model_kwargs
from sentiment_flow.int8.gate import Measured, check_gate
from sentiment_flow.monitoring.drift import SOURCE_RUN_TAG
from sentiment_flow.store import models_uri
from sentiment_flow.training import tracking

log = logging.getLogger(__name__)

INT8_SUFFIX = "-int8"  # the variant of NAME is registered as NAME-int8
BACKEND = "onnxruntime-static-int8"
# Source tags that describe the variant as well: what it was trained from and how it serves.
INHERITED_TAGS = ("lang", "base_model", "data_source", "data_hash", "max_length")


@dataclass(frozen=True)
class OptimizeResult:
    """The registered variant and how it compared with its fp32 source on the source's test split."""

    source_uri: str  # models:/NAME/VERSION of the fp32 source
    model_uri: str  # models:/NAME-int8/VERSION
    name: str
    version: str
    run_id: str
    rows: int
    fp32_f1_macro: float
    metrics: dict[str, float]  # the variant's test_* metrics
    agreement: float
    fallback_share: float  # share of test rows the fp32 graph scored again


def optimize(
    model_uri: str,
    data: str | None = None,
    config: OptimizeConfig = OptimizeConfig(),
    again: bool = False,
) -> OptimizeResult:
    """Build, gate and register the int8 variant of `model_uri`; raises Refused when it misses the gate.

    A version that already has a variant is refused (UserError) unless `again`: a second variant is another
    version to tell apart, not a replacement of the first.
    """
    from sentiment_flow.scoring import load_scorer, predict_texts

    source, name = _source(model_uri, again)  # fails fast, before minutes of work
    source_uri = models_uri(source.name, source.version)  # pinned: an alias may move meanwhile
    test, test_source, calibration = _splits(source, data)
    scorer = load_scorer(source_uri)
    if scorer.kind == INT8_VARIANT:
        raise UserError(f"{model_uri!r} is already an int8 variant; optimize its fp32 source instead.")
    fp32_labels = predict_texts(scorer, test["text"])["label"].map(LABELS.index).to_numpy()
    fp32_f1 = M.classification_metrics(test["label"], fp32_labels)["f1_macro"]

    params = {
        "source_uri": source_uri,
        "backend": BACKEND,
        **dataclasses.asdict(config),
        "calibration_rows": len(calibration),
        "test_rows": len(test),
    }
    lineage = {"source_model": source.name, "source_version": str(source.version), SOURCE_RUN_TAG: source.run_id or ""}
    tags = {**{k: source.tags[k] for k in INHERITED_TAGS if k in source.tags}, **lineage}
    experiment_id = mlflow.MlflowClient().get_run(source.run_id).info.experiment_id if source.run_id else None
    # A refused variant is logged nowhere but in its run, which ends FAILED; a registered one is deleted again if
    # the run then fails to close.
    with (
        runs.registration(name) as registered,
        runs.run(f"{name}-v{source.version}", experiment_id, params, tags) as run,
        tempfile.TemporaryDirectory(prefix="sentiment_flow-int8-") as folder,
    ):
        # Scored exactly as it will be logged: saved, loaded back, then run on the test split.
        kwargs = model_kwargs(
            scorer,
            Path(folder),
            mlflow.models.get_model_info(source_uri).signature,
            config.fallback_margin,
            config.smooth_alpha,
            calibration,
        )
        mlflow.pyfunc.save_model(Path(folder, "saved"), **kwargs)
        variant = mlflow.pyfunc.load_model(str(Path(folder, "saved"))).unwrap_python_model()
        measured = _measure(variant, test, test_source, fp32_labels, fp32_f1)
        check_gate(source_uri, measured, len(test), config.max_f1_drop, config.min_agreement)
        info = mlflow.pyfunc.log_model(name=MODEL_ARTIFACT, **kwargs)
        runs.share_model_files(info)
        # Registered last, with the tags training writes (mlflow_run_id last) and its lineage.
        version_tags = {
            **tags,
            "quantization": BACKEND,
            "git_commit": runs.git_commit(),
            **{k: f"{measured.metrics[k]:.4f}" for k in HEADLINE_METRICS},
            "mlflow_run_id": run.info.run_id,
        }
        registered.register(
            info.model_uri,
            version_tags,
            _description(source, measured, len(test), len(calibration), config),
            f"int8 variants of {source.name}, one version per `sentiment-flow optimize`; each version's "
            f"source_model/source_version/source_run_id tags name its fp32 source.",
        )
    return OptimizeResult(
        source_uri=source_uri,
        model_uri=registered.model_uri,
        name=name,
        version=str(registered.version),
        run_id=run.info.run_id,
        rows=len(test),
        fp32_f1_macro=fp32_f1,
        metrics=measured.metrics,
        agreement=measured.agreement,
        fallback_share=measured.fallback_share,
    )


def _source(model_uri: str, again: bool):
    """The fp32 source version and its variant's name, after every check that needs no data or model."""
    try:
        import onnx  # noqa: F401 - torch.onnx writes the graph with it
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise UserError(f"sentiment-flow optimize needs {exc.name}: pip install -e '.[fast]'.") from None
    store.check_store()
    source = store.resolve_version(model_uri)
    name = source.name + INT8_SUFFIX
    if problem := model_name_problem(name):
        raise UserError(
            f"The int8 variant's name {shortened(name)!r} is not a valid MLflow model name: {problem}; "
            f"copy {source.name!r} to a shorter name and optimize the copy."
        )
    built = existing_variants(name, source)
    source_uri = models_uri(source.name, source.version)
    if built and not again:
        raise UserError(
            f"{source_uri} already has an int8 variant: {models_uri(name, built[-1])}. Promote or score that one, or "
            "pass --again to build and register another version of it."
        )
    if built:
        log.warning(
            "%s already has int8 variants (versions %s of %s); --again registers another",
            source_uri,
            ", ".join(built),
            name,
        )
    return source, name


def _measure(variant, test: pd.DataFrame, test_source: str, fp32_labels: np.ndarray, fp32_f1: float) -> Measured:
    """Score the test split with the variant and log the comparison: the same test metrics as training logs
    (through mlflow.models.evaluate) and the same test dataset input, so `promote NAME-int8` can evaluate it on
    the same data as its champion."""
    probs, unsure = variant.scored(test["text"].fillna("").astype(str).tolist())
    int8_labels = np.array([LABELS.index(variant.labels[i]) for i in probs.argmax(axis=1)])
    tracking.log_datasets({"test": test}, {"test": test_source})
    metrics = tracking.log_test_evaluation(test["label"], int8_labels, test_source)
    measured = Measured(
        fp32_f1,
        metrics,
        agreement=float((int8_labels == fp32_labels).mean()),
        fallback_share=len(unsure) / max(len(test), 1),
    )
    mlflow.log_metrics(
        {
            "fp32_test_f1_macro": fp32_f1,
            "f1_macro_drop": fp32_f1 - metrics["test_f1_macro"],
            "label_agreement": measured.agreement,
            "fallback_share": measured.fallback_share,
        }
    )
    return measured


def _description(source, measured: Measured, rows: int, calibration_rows: int, config: OptimizeConfig) -> str:
    smoothing = f", activations smoothed with alpha {config.smooth_alpha:g}" if config.smooth_alpha else ""
    return (
        f"int8 variant ({BACKEND}, activation scales from {calibration_rows} validation rows{smoothing}) of "
        f"{source.name} version {source.version}. On its test split ({rows} rows) macro-F1 "
        f"{measured.metrics['test_f1_macro']:.4f} vs fp32 {measured.fp32_f1:.4f}; labels agree with fp32 on "
        f"{measured.agreement:.2%} of rows; {measured.fallback_share:.1%} of them (top-two margin under "
        f"{config.fallback_margin:g}) were scored by the fp32 graph it carries. Input: a string column `text`; "
        "output: label and score."
    )


def existing_variants(name: str, source) -> list[str]:
    """The versions of `name` (NAME-int8) built from `source`, found by their lineage tags, oldest first."""
    from sentiment_flow.store import all_versions

    versions = all_versions(mlflow.MlflowClient(), name)  # none, not an error, before the first variant
    lineage = {"source_model": source.name, "source_version": str(source.version)}
    return sorted(
        (str(v.version) for v in versions if all(v.tags.get(k) == value for k, value in lineage.items())), key=int
    )


def _splits(source, data: str | None) -> tuple[pd.DataFrame, str, list[str]]:
    """The source version's test split (`text`, `label` ids), from `data` or where its training read it, its
    source (file or Hub split), and up to INT8_CALIBRATION_ROWS texts of its validation split (training's, if
    there is no validation split) for the smoothing and the activation scales: never test rows, which the gate
    scores."""
    from sentiment_flow.data import load_data

    where = data or source.tags.get("data_source", "")
    if not where or "lang" not in source.tags:
        raise UserError(
            f"{source.name} version {source.version} has no data_source/lang tags (not registered by "
            "`sentiment-flow train`?); pass --data <folder with LANG/test.csv> and register it with a lang tag."
        )
    # A Hub source is recorded as ID@REVISION/LANG; load_data takes the ID.
    location = where.partition("@")[0] if "@" in where and not Path(where).exists() else where
    split = load_data(location, source.tags["lang"])
    expected = source.tags.get("data_hash")
    if expected and split.content_hash != expected:
        raise UserError(
            f"The data at {where!r} (sha256 {split.content_hash[:12]}) is not what {source.name} version "
            f"{source.version} was tested on (data_hash {expected[:12]}); pass --data <the folder it was trained from>."
        )
    calibration = split.splits["valid"] if len(split.splits["valid"]) else split.splits["train"]
    texts = calibration["text"].fillna("").astype(str).tolist()[:INT8_CALIBRATION_ROWS]
    return split.splits["test"].reset_index(drop=True), split.split_sources["test"], texts
