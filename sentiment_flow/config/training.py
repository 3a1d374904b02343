"""A training's parameters: one MLproject parameter and one CLI option each."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from sentiment_flow.config.constants import (
    AUTO,
    DEFAULT_LEARNING_RATE,
    ENGLISH_MODEL,
    HUB_DATASET,
    JAPANESE_MODEL,
    LANGUAGES,
    LEARNING_RATE_BY_MODEL,
    MULTILINGUAL_MODEL,
    OFFLINE_MODEL,
    model_name_problem,
    shortened,
)
from sentiment_flow.errors import UserError


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run is parameterised by; each field is one MLproject parameter and one CLI option."""

    lang: str = field(default="english", metadata={"help": f"Dataset language: one of {', '.join(LANGUAGES)}."})
    model: str = field(
        default=AUTO,
        metadata={
            "help": f"Hub model id, local model directory, '{OFFLINE_MODEL}' (packaged all-MiniLM-L6-v2, "
            f"offline extra) or '{AUTO}' ({ENGLISH_MODEL} for english, {JAPANESE_MODEL} for japanese, "
            f"{MULTILINGUAL_MODEL} otherwise)."
        },
    )
    data: str = field(
        default=HUB_DATASET,
        metadata={
            "help": "Hub dataset id, or a local directory laid out <lang>/{train,valid,test}.csv "
            "(or holding those three files) with columns text,label[,source]."
        },
    )
    epochs: int = field(default=2, metadata={"help": "Training epochs; the model is evaluated after each."})
    learning_rate: str = field(
        default=AUTO,
        metadata={"help": f"Peak AdamW learning rate, or '{AUTO}' (1e-4 for {OFFLINE_MODEL}, 2e-5 otherwise)."},
    )
    batch_size: int = field(default=16, metadata={"help": "Training batch size per device."})
    max_length: int = field(default=128, metadata={"help": "Tokens kept per text; longer texts are truncated."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    warmup_ratio: float = field(default=0.0, metadata={"help": "Share of the steps that warm the learning rate up."})
    label_smoothing: float = field(default=0.0, metadata={"help": "Label smoothing of the loss (0 = none)."})
    seed: int = field(default=42, metadata={"help": "Random seed for initialisation, shuffling and sampling."})
    max_train_samples: int = field(
        default=0, metadata={"help": "Train on at most this many rows (0 = all); for smoke runs."}
    )
    registered_model_name: str = field(
        default=AUTO, metadata={"help": f"Registry name for the trained model; '{AUTO}' = sentiment-<lang>."}
    )

    def __post_init__(self) -> None:
        if self.lang not in LANGUAGES:
            raise UserError(f"Unknown lang {self.lang!r}. Use one of: {', '.join(LANGUAGES)}.")
        for name in ("epochs", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.max_train_samples < 0:
            raise UserError(f"max_train_samples must be 0 (all) or positive, got {self.max_train_samples}.")
        if self.weight_decay < 0:
            raise UserError(f"weight_decay must be >= 0, got {self.weight_decay}.")
        for name in ("warmup_ratio", "label_smoothing"):
            if not 0 <= getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 0 and below 1, got {getattr(self, name)}.")
        # Checked here, not when the version is registered after hours of training.
        problem = model_name_problem(self.registry_name)
        if problem:
            raise UserError(
                f"registered_model_name {shortened(self.registered_model_name)!r} is not a valid MLflow model name: "
                f"{problem}, e.g. sentiment-{self.lang}."
            )
        if self.learning_rate != AUTO:
            try:
                lr = float(self.learning_rate)
            except ValueError:
                lr = -1.0
            if not 0 < lr < 1:
                raise UserError(
                    f"learning_rate must be '{AUTO}' or a number between 0 and 1, got {self.learning_rate!r}."
                )

    @property
    def model_name(self) -> str:
        """The model to fine-tune once `auto` is resolved: a Hub id, a local path or `minilm`."""
        if self.model != AUTO:
            return self.model
        if self.lang == "english":
            return ENGLISH_MODEL
        if self.lang == "japanese":
            return JAPANESE_MODEL
        return MULTILINGUAL_MODEL

    @property
    def lr(self) -> float:
        """The learning rate once `auto` is resolved."""
        if self.learning_rate != AUTO:
            return float(self.learning_rate)
        return LEARNING_RATE_BY_MODEL.get(self.model_name, DEFAULT_LEARNING_RATE)

    @property
    def registry_name(self) -> str:
        """The registered model name once `auto` is resolved."""
        if self.registered_model_name != AUTO:
            return self.registered_model_name
        return f"sentiment-{self.lang}"

    def to_params(self) -> dict[str, str | int | float]:
        """Every field with its type: W&B keeps numbers as numbers, MLflow stores their text."""
        return dataclasses.asdict(self)
