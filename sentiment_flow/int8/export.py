"""The int8 variant's graphs: the classifier exported to ONNX (fp32), then quantized to static int8 with ONNX
Runtime, activation scales calibrated on validation rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


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
        Logits(model), tuple(example[name] for name in names), str(path), input_names=names,
        output_names=["logits"], dynamic_axes={**axes, "logits": {0: "batch"}}, opset_version=ONNX_OPSET,
        dynamo=False,  # the dynamo exporter needs onnxscript, which this project does not install
    )
