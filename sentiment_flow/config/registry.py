"""`promote`'s gates and their thresholds."""

from __future__ import annotations

from dataclasses import dataclass, field

from sentiment_flow.errors import UserError


@dataclass(frozen=True)
class PromotionConfig:
    """Thresholds of the promotion gates; each field is one `promote` option."""

    min_f1_macro: float = field(
        default=0.5,
        metadata={
            "help": "Gate 2: the candidate's macro-F1 (on the same-data evaluation set, else its test_f1_macro) must "
            "be at least this (chance is about 0.33)."
        },
    )
    tolerance: float = field(
        default=0.0,
        metadata={"help": "Gate 3: how far (in macro-F1) the candidate may fall below the current champion."},
    )
    per_class_tolerance: float = field(
        default=0.05,
        metadata={
            "help": "Gate 3: how far each class's F1 may fall below the champion's, on the same evaluation data."
        },
    )
    eval_data: str = field(
        default="",
        metadata={
            "help": "CSV (text,label) to evaluate candidate and champion on; default: the champion's logged "
            "test dataset."
        },
    )
    require_significant: bool = field(
        default=False,
        metadata={"help": "Gate 3: refuse unless the 95% bootstrap interval of the macro-F1 gain is above 0."},
    )
    bootstrap_resamples: int = field(
        default=1000, metadata={"help": "Paired bootstrap resamples for the macro-F1 difference's interval."}
    )
    bootstrap_seed: int = field(
        default=0, metadata={"help": "Seed of the bootstrap: the same seed, the same interval."}
    )
    max_ece: float = field(
        default=1.0,
        metadata={"help": "Gate: the candidate's test ECE (15 bins, calibrated) must be at most this; 1 = off."},
    )

    def __post_init__(self) -> None:
        if not 0 <= self.min_f1_macro <= 1:
            raise UserError(f"min_f1_macro must be between 0 and 1, got {self.min_f1_macro}.")
        for name, unit in (("tolerance", "a macro-F1 difference"), ("per_class_tolerance", "an F1 difference")):
            if not 0 <= getattr(self, name) <= 1:
                raise UserError(f"{name} must be between 0 and 1 ({unit}), got {getattr(self, name)}.")
        if not 0 < self.max_ece <= 1:
            raise UserError(f"max_ece must be above 0 and at most 1 (1 = no ECE gate), got {self.max_ece}.")
        if self.bootstrap_resamples < 100:
            raise UserError(f"bootstrap_resamples must be at least 100, got {self.bootstrap_resamples}.")
