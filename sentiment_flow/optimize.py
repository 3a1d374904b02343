"""optimize(uri): an int8 ONNX Runtime variant of a registered version, gated on its test split, registered as
NAME-int8.

ONNX Runtime's int8 was measured against PyTorch's dynamic quantization on this project's CPU (AVX-512
VNNI): see the README's "Speed: int8" and benchmarks/results/int8.md for the numbers behind the choice.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch

from sentiment_flow import int8_model, tracking
from sentiment_flow import metrics as M
from sentiment_flow.config import (
    INT8_CALIBRATION_ROWS, INT8_FALLBACK_MARGIN, INT8_MAX_F1_DROP, INT8_MIN_AGREEMENT, INT8_REQUEST_BATCH_SIZE,
    INT8_SMOOTH_ALPHA, LABELS, ScoreConfig, model_name_problem, shortened,
)
from sentiment_flow.errors import UserError
from sentiment_flow.int8_model import FP32_ARTIFACT, ONNX_ARTIFACT, TOKENIZER_ARTIFACT, Int8Model

log = logging.getLogger(__name__)

INT8_SUFFIX = "-int8"  # the variant of NAME is registered as NAME-int8
ONNX_OPSET = 17
EPSILON = 1e-9  # float noise: a drop of exactly the allowed amount passes
BACKEND = "onnxruntime-static-int8"
INT8_REQUIREMENTS = ("onnxruntime", "numpy", "pandas")  # beside mlflow, transformers and tokenizers
HEADLINE_METRICS = ("test_accuracy", "test_f1_macro", "test_f1_weighted")
# Source tags that describe the variant as well: what it was trained from and how it serves.
INHERITED_TAGS = ("lang", "base_model", "data_source", "data_hash", "max_length")


class GateRefused(UserError):
    """The variant missed the accuracy gate: nothing was registered. Exits 1, like a refused promotion."""

    exit_code = 1


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


def gate_misses(
    fp32_f1: float, int8_f1: float, agreement: float, rows: int, max_f1_drop: float, min_agreement: float
) -> list[str]:
    """What the variant missed the gate by, one phrase per rule (empty when it passes)."""
    misses = []
    drop = fp32_f1 - int8_f1
    if drop > max_f1_drop + EPSILON:
        misses.append(
            f"macro-F1 {int8_f1:.4f} is {drop:.4f} below fp32's {fp32_f1:.4f}, {drop - max_f1_drop:.4f} more than "
            f"the {max_f1_drop:g} allowed"
        )
    if agreement < min_agreement - EPSILON:
        misses.append(
            f"labels agree with fp32 on {agreement:.2%} of {rows} test rows, {min_agreement - agreement:.2%} short "
            f"of the {min_agreement:.0%} required"
        )
    return misses


def optimize(
    model_uri: str, data: str | None = None, max_f1_drop: float = INT8_MAX_F1_DROP,
    min_agreement: float = INT8_MIN_AGREEMENT, fallback_margin: float = INT8_FALLBACK_MARGIN,
    smooth_alpha: float = INT8_SMOOTH_ALPHA, again: bool = False,
) -> OptimizeResult:
    """Build, gate and register the int8 variant of `model_uri`; raises GateRefused when it misses the gate.

    A version that already has a variant is refused (UserError) unless `again`: a second variant is another
    version to tell apart, not a replacement of the first.
    """
    from sentiment_flow.registry import resolve_version
    from sentiment_flow.scoring import load_scorer, predict_texts
    from sentiment_flow.train import _git_commit as git_commit

    # 1. Fail fast: the extra, the store, the source version and its test split, before minutes of work.
    try:
        import onnx  # noqa: F401 - torch.onnx writes the graph with it
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise UserError(f"sentiment-flow optimize needs {exc.name}: pip install -e '.[fast]'.") from None
    tracking.check_store()
    source = resolve_version(model_uri)
    if problem := model_name_problem(source.name + INT8_SUFFIX):
        raise UserError(f"The int8 variant's name {shortened(source.name + INT8_SUFFIX)!r} is not a valid MLflow "
                        f"model name: {problem}; copy {source.name!r} to a shorter name and optimize the copy.")
    source_uri = f"models:/{source.name}/{source.version}"  # pinned: an alias may move meanwhile
    name = source.name + INT8_SUFFIX
    built = existing_variants(name, source)
    if built and not again:
        raise UserError(
            f"{source_uri} already has an int8 variant: models:/{name}/{built[-1]}. Promote or score that one, or "
            "pass --again to build and register another version of it."
        )
    if built:
        log.warning("%s already has int8 variants (versions %s of %s); --again registers another", source_uri,
                    ", ".join(built), name)
    test, test_source, calibration = _splits(source, data)
    scorer = load_scorer(source_uri)
    if isinstance(scorer.pipeline, Int8Model):
        raise UserError(f"{model_uri!r} is already an int8 variant; optimize its fp32 source instead.")
    fp32_labels = predict_texts(scorer, test["text"])["label"].map(LABELS.index).to_numpy()
    fp32_f1 = M.classification_metrics(test["label"], fp32_labels)["f1_macro"]

    experiment_id = mlflow.MlflowClient().get_run(source.run_id).info.experiment_id if source.run_id else None
    version = None
    try:
        # SIGTERM or Ctrl-C ends the run KILLED (MLflow's context manager alone records FAILED, like a refused gate).
        with mlflow.start_run(run_name=f"{name}-v{source.version}", experiment_id=experiment_id) as run, \
                tracking.killed_when_stopped(), tempfile.TemporaryDirectory(prefix="sentiment_flow-int8-") as folder:
            mlflow.log_params(
                {"source_uri": source_uri, "backend": BACKEND, "max_f1_drop": max_f1_drop,
                 "min_agreement": min_agreement, "fallback_margin": fallback_margin, "smooth_alpha": smooth_alpha,
                 "calibration_rows": len(calibration), "test_rows": len(test)}
            )
            lineage = {"source_model": source.name, "source_version": str(source.version),
                       "source_run_id": source.run_id or ""}
            mlflow.set_tags({**{k: source.tags[k] for k in INHERITED_TAGS if k in source.tags}, **lineage})

            # 2. Export and quantize; score the test split with the variant exactly as it will be logged.
            signature = mlflow.models.get_model_info(source_uri).signature
            kwargs = _model_kwargs(scorer, Path(folder), signature, fallback_margin, smooth_alpha, calibration)
            saved = Path(folder, "saved")
            mlflow.pyfunc.save_model(saved, **kwargs)
            variant = mlflow.pyfunc.load_model(str(saved)).unwrap_python_model()
            probs, unsure = variant.scored(test["text"].fillna("").astype(str).tolist())
            fallback_share = len(unsure) / max(len(test), 1)
            int8_labels = np.array([LABELS.index(variant.labels[i]) for i in probs.argmax(axis=1)])
            # The same test metrics, through mlflow.models.evaluate, and the same test dataset input as training logs,
            # so `promote NAME-int8` can evaluate it on the same data as its champion.
            tracking.log_datasets({"test": test}, {"test": test_source})
            metrics = tracking.log_test_evaluation(test["label"], int8_labels, test_source)
            agreement = float((int8_labels == fp32_labels).mean())
            mlflow.log_metrics(
                {"fp32_test_f1_macro": fp32_f1, "f1_macro_drop": fp32_f1 - metrics["test_f1_macro"],
                 "label_agreement": agreement, "fallback_share": fallback_share}
            )

            # 3. The gate: a refused variant is logged nowhere but in this run, which ends FAILED.
            misses = gate_misses(fp32_f1, metrics["test_f1_macro"], agreement, len(test), max_f1_drop, min_agreement)
            if misses:
                mlflow.set_tag("int8_gate", "refused: " + "; ".join(misses))
                raise GateRefused(
                    f"The int8 variant of {source_uri} was not registered: {'; '.join(misses)}. Keep serving the fp32 "
                    "model, score more rows in fp32 with a larger --fallback-margin, or loosen the gate deliberately with "
                    "--max-f1-drop / --min-agreement."
                )
            mlflow.set_tag("int8_gate", "passed")
            info = mlflow.pyfunc.log_model(name=tracking.MODEL_ARTIFACT, **kwargs)
            tracking.share_model_files(info)

            # 4. Registered last, with the tags training writes (mlflow_run_id last) and its lineage.
            version_tags = {
                **{k: source.tags[k] for k in INHERITED_TAGS if k in source.tags},
                **lineage,
                "quantization": BACKEND,
                "git_commit": git_commit(),
                **{k: f"{metrics[k]:.4f}" for k in HEADLINE_METRICS},
                "mlflow_run_id": run.info.run_id,
            }
            smoothing = f", activations smoothed with alpha {smooth_alpha:g}" if smooth_alpha else ""
            description = (
                f"int8 variant ({BACKEND}, activation scales from {len(calibration)} validation rows{smoothing}) of "
                f"{source.name} version {source.version}. On its test split "
                f"({len(test)} rows) macro-F1 {metrics['test_f1_macro']:.4f} vs fp32 {fp32_f1:.4f}; labels agree "
                f"with fp32 on {agreement:.2%} of rows; {fallback_share:.1%} of them (top-two margin under "
                f"{fallback_margin:g}) were scored by the fp32 graph it carries. Input: a string column `text`; "
                "output: label and score."
            )
            model_description = (
                f"int8 variants of {source.name}, one version per `sentiment-flow optimize`; each version's "
                f"source_model/source_version/source_run_id tags name its fp32 source."
            )
            version = tracking.register_version(info.model_uri, name, version_tags, description, model_description)
    except BaseException:
        # Stopped or failed while registering or closing the run: leave nothing promotable behind.
        if version is not None:
            tracking.delete_version(name, version)
        raise
    return OptimizeResult(
        source_uri=source_uri, model_uri=f"models:/{name}/{version}", name=name, version=version,
        run_id=run.info.run_id, rows=len(test), fp32_f1_macro=fp32_f1, metrics=metrics, agreement=agreement,
        fallback_share=fallback_share,
    )


def existing_variants(name: str, source) -> list[str]:
    """The versions of `name` (NAME-int8) built from `source`, found by their lineage tags, oldest first."""
    from sentiment_flow.registry.store import all_versions

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


def _model_kwargs(
    scorer, folder: Path, signature, fallback_margin: float, smooth_alpha: float, calibration: list[str]
) -> dict:
    """Arguments of mlflow.pyfunc.save_model/log_model for the int8 variant of `scorer`'s model."""
    from sentiment_flow.model import position_limit

    model, tokenizer = scorer.pipeline.model, scorer.pipeline.tokenizer
    max_length = scorer.call_kwargs.get("max_length") or position_limit(tokenizer, model)
    fp32_path, int8_path = folder / "model.fp32.onnx", folder / "model.onnx"
    # The fp32 graph (the fallback) is the smoothed one too: smoothing changes no fp32 answer.
    smoothed = smooth(model, tokenizer, calibration, smooth_alpha, max_length) if smooth_alpha else model
    _export_onnx(smoothed, tokenizer, fp32_path)
    quantize(fp32_path, int8_path, tokenizer, calibration, max_length)
    tokenizer.save_pretrained(folder / TOKENIZER_ARTIFACT)
    artifacts = {ONNX_ARTIFACT: str(int8_path), TOKENIZER_ARTIFACT: str(folder / TOKENIZER_ARTIFACT)}
    if fallback_margin > 0:
        artifacts[FP32_ARTIFACT] = str(fp32_path)
    return dict(
        # A model from code: the variant carries int8_model.py itself, not a pickle that names this package.
        python_model=int8_model.__file__,
        artifacts=artifacts,
        model_config={
            "labels": [model.config.id2label[i] for i in range(model.config.num_labels)],
            "input_column": tracking.INPUT_COLUMN,
            "max_length": max_length,
            "batch_size": INT8_REQUEST_BATCH_SIZE,  # per ONNX Runtime call, batched by token count within a request
            "fallback_margin": fallback_margin,
        },
        signature=signature,  # the fp32 model's: the same payloads, the same answers
        input_example=pd.DataFrame({tracking.INPUT_COLUMN: ["What a great day!", "The meeting is at noon."]}),
        # What int8_model.py imports, all public: the variant runs on ONNX Runtime alone, without torch or this project.
        pip_requirements=[
            pin for pin in tracking.pip_requirements(INT8_REQUIREMENTS) if not pin.startswith(("torch==", "accelerate=="))
        ],
    )


def quantize(fp32_path: Path, int8_path: Path, tokenizer, texts: list[str], max_length: int | None) -> None:
    """Write `fp32_path`'s graph to `int8_path` with its matrix products in int8 and every activation scale a
    constant, calibrated on `texts` (validation rows, never test rows); returns nothing.

    Static, not dynamic: dynamic int8 chose each activation's scale from the range of the whole batch at run time,
    so a text's answer depended on the texts scored with it and on their padding (on MiniLM one text in 123 got
    another label alone than inside a batch). With constant scales every row is quantized alone: its answer is
    the same whatever batch, request or scorer it arrives in. Weights are int8 per output channel: with one scale
    per matrix, MiniLM fine-tuned for one epoch lost 0.018 test macro-F1 against 0.009 (dynamic int8, then).
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static,
    )

    names = [i.name for i in onnx.load(str(fp32_path), load_external_data=False).graph.input]

    class Texts(CalibrationDataReader):
        # One text a call, unpadded: the ranges are those of real tokens, as each row is quantized at run time.
        def __init__(self):
            self.texts = iter(texts)

        def get_next(self):
            text = next(self.texts, None)
            if text is None:
                return None
            encoded = tokenizer(text, truncation=True, max_length=max_length, return_tensors="np")
            return {name: encoded[name].astype(np.int64) for name in names}

    # Products in fp32 out: ONNX Runtime runs each MatMul as one MatMulIntegerToFloat, the kernel dynamic int8 used,
    # instead of QLinearMatMul rounding its output to int8 again and a DequantizeLinear after it. Gemm (the
    # classifier head, one vector per text) is quantized as dynamic int8 quantized it: an int8 flaw there shows.
    quantize_static(
        fp32_path, int8_path, Texts(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul", "Gemm"],
        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"]},
    )


class SmoothedLinear(torch.nn.Module):
    """`linear` with its input multiplied by `inverse` (1 / scale) per channel and its weight multiplied by the
    scale: the same product in exact arithmetic, another split of the range between activation and weight (see
    `smooth`). Linears reading one input share one `inverse` tensor, so the export has one initializer for them
    and ONNX Runtime computes the product once."""

    def __init__(self, linear: torch.nn.Linear, inverse: torch.Tensor):
        super().__init__()
        with torch.no_grad():
            linear.weight.div_(inverse)  # [out, in]: each input channel by its scale
        self.linear = linear
        self.inverse: torch.Tensor
        self.register_buffer("inverse", inverse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x * self.inverse)


def smooth(model, tokenizer, texts: list[str], alpha: float, max_length: int | None):
    """A copy of `model` whose Linear layers see inputs with flatter channel ranges (SmoothQuant, Xiao et al. 2023).

    Dynamic int8 quantizes a Linear's whole input with one scale, so a few channels with large values cost every
    other channel its precision. Each input channel j is divided by s_j = max|x_j|^alpha / max|W_:,j|^(1-alpha)
    (max|x_j| over `texts`, tokenized as the variant will) and the weight's column j multiplied by s_j: the fp32
    product is unchanged and the range moves into the weights, which are quantized per output channel. Linears
    that read the same input (query, key and value) get one scale, from the largest of their weights' columns,
    so the input is divided once. On MiniLM (English, benchmarks/results/int8.md) it took int8's label agreement
    with fp32 from 97.5 % to 99.3 %.
    """
    import copy

    model = copy.deepcopy(model).eval()
    linears = {name: module for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    absmax: dict[str, torch.Tensor] = {}
    inputs_of: dict[str, torch.Tensor] = {}  # what each Linear read in the first batch: the same tensor = one group

    def record(name):
        def hook(module, inputs, output):
            x = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(dim=0)
            absmax[name] = torch.maximum(absmax[name], x) if name in absmax else x
            inputs_of.setdefault(name, inputs[0])  # held, so no two of these tensors can share an id

        return hook

    hooks = [module.register_forward_hook(record(name)) for name, module in linears.items()]
    try:
        with torch.inference_mode():
            for start in range(0, len(texts), ScoreConfig.batch_size):
                batch = texts[start : start + ScoreConfig.batch_size]
                model(**tokenizer(batch, truncation=True, max_length=max_length, padding=True, return_tensors="pt"))
    finally:
        for hook in hooks:
            hook.remove()
    groups: dict[int, list[str]] = {}
    for name in absmax:  # a Linear off the path from the inputs to the logits has no record and stays as it is
        groups.setdefault(id(inputs_of[name]), []).append(name)
    modules = dict(model.named_modules())
    for names in groups.values():
        weight = torch.stack([linears[n].weight.detach().abs().amax(dim=0) for n in names]).amax(dim=0).clamp(min=1e-5)
        scale = (absmax[names[0]].clamp(min=1e-5) ** alpha / weight ** (1 - alpha)).clamp(min=1e-5)
        inverse = (1.0 / scale).to(linears[names[0]].weight.dtype)
        for name in names:
            parent, _, child = name.rpartition(".")
            setattr(modules[parent] if parent else model, child, SmoothedLinear(linears[name], inverse))
    return model


def _export_onnx(model, tokenizer, path: Path, attention: str = "eager") -> None:
    """The classifier's logits as an ONNX graph with dynamic batch and sequence axes. `attention`: transformers'
    attention implementation to export (another than eager only for the benchmark's comparison)."""
    import copy

    names = list(tokenizer.model_input_names)

    class Logits(torch.nn.Module):
        # The exporter passes inputs by position, and the tokenizer's order (input_ids, token_type_ids,
        # attention_mask for BERT) is not forward()'s: by name, or the mask reads the token types.
        def __init__(self, classifier):
            super().__init__()
            self.classifier = classifier

        def forward(self, *inputs):
            return self.classifier(**dict(zip(names, inputs))).logits

    example = tokenizer(["a short text", "and a longer second one"], padding=True, return_tensors="pt")
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    # A copy: after the export the model itself answered differently (logits off by up to 0.49 on MiniLM).
    model = copy.deepcopy(model).eval()
    # Eager attention: the SDPA path exports its mask as Where/IsNaN on every layer, and MiniLM's int8 graph ran
    # 857 rows/s with it against 941 (benchmarks/results/int8.md); each agreed with fp32 on 97.5 % of test rows.
    model.set_attn_implementation(attention)
    torch.onnx.export(
        Logits(model), tuple(example[name] for name in names), str(path), input_names=names,
        output_names=["logits"], dynamic_axes={**axes, "logits": {0: "batch"}}, opset_version=ONNX_OPSET,
        dynamo=False,  # the dynamo exporter needs onnxscript, which this project does not install
    )
