"""The int8 variant: an ONNX Runtime model of a registered fp32 version, gated on its test split and registered
as NAME-int8.

build.py runs `optimize` in named steps; export.py exports and quantizes the graph; smoothing.py applies
SmoothQuant first; model.py is the variant itself, logged as MLflow "model from code" (it imports nothing from
this package, so serving it needs neither torch nor sentiment-flow).
"""

from sentiment_flow.int8.build import INT8_SUFFIX, OptimizeResult, optimize

__all__ = ["INT8_SUFFIX", "OptimizeResult", "optimize"]
