"""`monitor`'s settings: which scoring runs it reads and the thresholds of its alerts, in one dataclass that
generates the CLI options (the MLproject `monitor` entry point passes each). docs/monitoring.md says why each
default is what it is."""

from __future__ import annotations

from dataclasses import dataclass, field

from sentiment_flow.config.constants import CHAMPION
from sentiment_flow.errors import UserError

# `monitor`: the experiment its runs are recorded in.
MONITORING_EXPERIMENT = "sentiment-flow-monitoring"


@dataclass(frozen=True)
class MonitorConfig:
    """Which scoring runs `monitor` reads and the thresholds of its alerts; each field is one `monitor` option.

    docs/monitoring.md says why each default is what it is.
    """

    alias: str = field(default=CHAMPION, metadata={"help": "Monitor the version this alias points to now."})
    since: str = field(
        default="7d", metadata={"help": "Read the scoring runs started this long ago or later: <n>m, <n>h, <n>d, <n>w."}
    )
    max_class_mix_psi: float = field(
        default=0.2, metadata={"help": "Alert above this PSI of the predicted-label mix vs the training test split's."}
    )
    max_token_length_psi: float = field(
        default=0.2, metadata={"help": "Alert above this PSI of tokens per text vs the training test split's."}
    )
    max_confidence_psi: float = field(
        default=0.2, metadata={"help": "Alert above this PSI of the top probability vs the training test split's."}
    )
    max_unseen_word_increase: float = field(
        default=0.1,
        metadata={"help": "Alert when the share of words the train split never had exceeds the test split's by this."},
    )
    max_unseen_bigram_increase: float = field(
        default=0.05,
        metadata={
            "help": "Alert when the share of adjacent word pairs the train split never had exceeds the test split's "
            "by this (word order: shuffled or foreign text)."
        },
    )
    max_f1_decline: float = field(
        default=0.05,
        metadata={
            "help": "Alert when the estimated (or, with gold labels, realized) macro-F1 is more than this below "
            "the version's test macro-F1."
        },
    )

    def __post_init__(self) -> None:
        for name in ("max_class_mix_psi", "max_token_length_psi", "max_confidence_psi"):
            if getattr(self, name) <= 0:
                raise UserError(f"{name} must be above 0 (a PSI), got {getattr(self, name)}.")
        for name in ("max_unseen_word_increase", "max_unseen_bigram_increase", "max_f1_decline"):
            if not 0 <= getattr(self, name) <= 1:
                raise UserError(f"{name} must be between 0 and 1 (a difference of shares), got {getattr(self, name)}.")
