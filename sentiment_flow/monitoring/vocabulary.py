"""Out-of-vocabulary rates: the share of a job's words, and of its adjacent word pairs (bigrams), that the
training split never had. Training logs its train split's words and bigrams (as CRC32 hashes) and the test split's
rates; each scoring job counts its own.

Why bigrams too: text in another language reads as new words, but English with its words shuffled has exactly
the training vocabulary and the same token lengths, and only its word order betrays it. Against the English train split: the test split
has 23 % unseen words and 74 % unseen bigrams, the same texts with shuffled words 23 % and 87 %, the German test
split 71 % and 96 % (docs/monitoring.md).
"""

from __future__ import annotations

import logging
import re
import zlib

import mlflow
import numpy as np

from sentiment_flow.errors import one_line

log = logging.getLogger(__name__)

ARTIFACT = "vocabulary.json"  # in each training run
WORD = re.compile(r"\w+")  # words as Unicode letters and digits, lower-cased: independent of the model's tokenizer
# counts(): unseen words, words, unseen bigrams, bigrams
FIELDS = ("unseen_words", "words", "unseen_bigrams", "bigrams")


def _grams(text: str) -> tuple[list[int], list[int]]:
    words = WORD.findall(text.lower())
    pairs = [f"{a} {b}" for a, b in zip(words, words[1:])]
    return [zlib.crc32(w.encode()) for w in words], [zlib.crc32(p.encode()) for p in pairs]


def baseline(train_texts, test_texts) -> dict:
    """The training run's vocabulary artifact: the train split's word and bigram hashes, and the test split's
    counts against them (the rates a scoring job is compared with)."""
    words: set[int] = set()
    bigrams: set[int] = set()
    for text in train_texts:
        w, b = _grams(str(text))
        words.update(w)
        bigrams.update(b)
    vocabulary = {"words": sorted(words), "bigrams": sorted(bigrams)}
    return {**vocabulary, "test_counts": counts(test_texts, vocabulary).tolist()}


def counts(texts, vocabulary: dict) -> np.ndarray:
    """FIELDS of `texts` against a vocabulary (`baseline`'s words and bigrams, as lists or sets)."""
    return per_text(texts, vocabulary).sum(axis=0)


def per_text(texts, vocabulary: dict) -> np.ndarray:
    """FIELDS of each of `texts` (one row per text) against a vocabulary, as `counts` sums them."""
    words, bigrams = set(vocabulary["words"]), set(vocabulary["bigrams"])
    found = np.zeros((len(texts), len(FIELDS)), dtype=np.int64)
    for i, text in enumerate(texts):
        w, b = _grams(str(text))
        found[i] = (sum(x not in words for x in w), len(w), sum(x not in bigrams for x in b), len(b))
    return found


def load(model_run_id: str | None) -> dict | None:
    """The vocabulary training logged in `model_run_id` (as sets), or None (a local model, or trained before
    vocabularies were logged)."""
    if model_run_id is None:
        return None
    try:
        data = mlflow.artifacts.load_dict(f"runs:/{model_run_id}/{ARTIFACT}")
    except Exception as exc:  # noqa: BLE001 - MLflow raises several types for a missing artifact
        log.debug("no %s in run %s: %s", ARTIFACT, model_run_id, one_line(exc))
        return None
    return {"words": set(data["words"]), "bigrams": set(data["bigrams"]), "test_counts": data["test_counts"]}
