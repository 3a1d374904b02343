"""The int8 variant's files: the classifier exported to ONNX (fp32), quantized to static int8 with ONNX Runtime
(activation scales calibrated on validation rows), and the arguments that log them as the variant's pyfunc model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sentiment_flow import runs
from sentiment_flow.config import (
    CANARY_TEXTS,
    INPUT_COLUMN,
    INT8_REQUEST_BATCH_SIZE,
    INT8_VARIANT,
    VARIANT_METADATA_KEY,
)
from sentiment_flow.int8 import model as int8_model
from sentiment_flow.int8.model import FP32_ARTIFACT, ONNX_ARTIFACT, TOKENIZER_ARTIFACT
from sentiment_flow.int8.smoothing import smooth

INT8_REQUIREMENTS = ("onnxruntime", "numpy", "pandas")  # beside mlflow, transformers and tokenizers


ONNX_OPSET = 17


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
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
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
        fp32_path,
        int8_path,
        Texts(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul", "Gemm"],
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"]},
    )


def export_onnx(model, tokenizer, path: Path, attention: str = "eager") -> None:
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
        Logits(model),
        tuple(example[name] for name in names),
        str(path),
        input_names=names,
        output_names=["logits"],
        dynamic_axes={**axes, "logits": {0: "batch"}},
        opset_version=ONNX_OPSET,
        dynamo=False,  # the dynamo exporter needs onnxscript, which this project does not install
    )


def model_kwargs(
    scorer, folder: Path, signature, fallback_margin: float, smooth_alpha: float, calibration: list[str]
) -> dict:
    """Arguments of mlflow.pyfunc.save_model/log_model for the int8 variant of `scorer`'s model."""
    from sentiment_flow.training.model import position_limit

    model, tokenizer = scorer.pipeline.model, scorer.pipeline.tokenizer
    max_length = scorer.call_kwargs.get("max_length") or position_limit(tokenizer, model)
    fp32_path, int8_path = folder / "model.fp32.onnx", folder / "model.onnx"
    # The fp32 graph (the fallback) is the smoothed one too: smoothing changes no fp32 answer.
    smoothed = smooth(model, tokenizer, calibration, smooth_alpha, max_length) if smooth_alpha else model
    export_onnx(smoothed, tokenizer, fp32_path)
    quantize(fp32_path, int8_path, tokenizer, calibration, max_length)
    tokenizer.save_pretrained(folder / TOKENIZER_ARTIFACT)
    artifacts = {ONNX_ARTIFACT: str(int8_path), TOKENIZER_ARTIFACT: str(folder / TOKENIZER_ARTIFACT)}
    if fallback_margin > 0:
        artifacts[FP32_ARTIFACT] = str(fp32_path)
    return dict(
        # A model from code: the variant carries int8/model.py itself, not a pickle that names this package.
        python_model=int8_model.__file__,
        metadata={VARIANT_METADATA_KEY: INT8_VARIANT},  # how the scorer knows the variant (scoring/scorer.py)
        artifacts=artifacts,
        model_config={
            "labels": [model.config.id2label[i] for i in range(model.config.num_labels)],
            "input_column": INPUT_COLUMN,
            "max_length": max_length,
            "batch_size": INT8_REQUEST_BATCH_SIZE,  # per ONNX Runtime call, batched by token count within a request
            "fallback_margin": fallback_margin,
        },
        signature=signature,  # the fp32 model's: the same payloads, the same answers
        input_example=pd.DataFrame({INPUT_COLUMN: list(CANARY_TEXTS[:3])}),  # the short ones, as training's
        # What int8/model.py imports, all public: the variant runs on ONNX Runtime alone, without torch or this project.
        pip_requirements=[
            pin for pin in runs.pip_requirements(INT8_REQUIREMENTS) if not pin.startswith(("torch==", "accelerate=="))
        ],
    )
