"""The int8 variant's defaults: its accuracy gate, its SmoothQuant and fp32-fallback settings (`optimize`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sentiment_flow.errors import UserError

# `sentiment-flow optimize`: the int8 variant is registered only if, on the source's test split, its macro-F1 is
# at most this much below the fp32 model's and its labels equal the fp32 model's on at least this share of rows.
INT8_MAX_F1_DROP = 0.005
INT8_MIN_AGREEMENT = 0.99
# Before quantizing, each Linear's input channels are rescaled (SmoothQuant) with this alpha, from the activation
# ranges of up to INT8_CALIBRATION_ROWS validation texts; 0: no smoothing. On two MiniLMs (English test split),
# int8 alone agreed with fp32 on 97.6 % / 96.6 % of rows plain and 99.1 % / 98.3 % smoothed at 0.9 (0.7: 98.3 /
# -, 0.8: 98.6 / 97.7, 1.0: 99.1 / 97.8).
INT8_SMOOTH_ALPHA = 0.9
INT8_CALIBRATION_ROWS = 512
# Rows whose top-two int8 probabilities are closer than this are scored again by the fp32 graph. Smoothed, with
# this margin, agreement was 99.8 % / 99.9 % on the two MiniLMs with 2.5 % / 8.7 % of rows falling back
# (unsmoothed it took 0.15 and 7 % / 28 % of rows).
INT8_FALLBACK_MARGIN = 0.05
# Texts per ONNX Runtime call when the variant answers a request (pyfunc predict, `mlflow models serve`); the
# scorer passes its own --batch-size. In 64-text requests, batches of 16 pad less than 32: 435 rows/s against 386
# on MiniLM in one process, measured before a request's batches were spread over the cores (a sorted stream of
# thousands of rows pads little either way and runs best at 32).
INT8_REQUEST_BATCH_SIZE = 16


@dataclass(frozen=True)
class OptimizeConfig:
    """The int8 variant's gate and build settings; each field is one `optimize` option."""

    max_f1_drop: float = field(
        default=INT8_MAX_F1_DROP,
        metadata={"help": "Largest test macro-F1 drop from the fp32 model that still registers the variant."},
    )
    min_agreement: float = field(
        default=INT8_MIN_AGREEMENT,
        metadata={"help": "Smallest share of test rows on which the variant's label must equal the fp32 model's."},
    )
    fallback_margin: float = field(
        default=INT8_FALLBACK_MARGIN,
        metadata={
            "help": "Rows whose two best int8 probabilities are closer than this are scored again in fp32 (the "
            "variant carries the fp32 graph for them); 0: int8 alone, a smaller model."
        },
    )
    smooth_alpha: float = field(
        default=INT8_SMOOTH_ALPHA,
        metadata={
            "help": "SmoothQuant's alpha: how much of each Linear's input range moves into its weights before "
            "quantizing, measured on validation rows; 0: no smoothing."
        },
    )

    def __post_init__(self) -> None:
        if self.max_f1_drop < 0:
            raise UserError(f"max_f1_drop must be at least 0 (a macro-F1 difference), got {self.max_f1_drop}.")
        for name in ("min_agreement", "fallback_margin", "smooth_alpha"):
            if not 0 <= getattr(self, name) <= 1:
                raise UserError(f"{name} must be between 0 and 1, got {getattr(self, name)}.")
