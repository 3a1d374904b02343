"""What a Spark scoring job keeps for `monitor`, as the local engine does (monitoring/probabilities.py and
vocabulary.py): the probabilities' stats and the unseen-word counts, summed over every row by Spark.

The scored frame carries each row's probabilities (as hidden columns when OUTPUT does not ask for them) and, when
the version's training logged a vocabulary, each row's word counts; the job writes OUTPUT's columns only, and these
sums are aggregated from the same persisted rows, so the model runs once.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sentiment_flow.config import LABELS
from sentiment_flow.monitoring import probabilities as probability_stats
from sentiment_flow.monitoring import vocabulary
from sentiment_flow.scoring.scorer import PROBABILITIES

HIDDEN = "__sentiment_flow_"  # the prefix of the columns the job computes but does not write


def hidden_columns(probabilities: bool, known: dict | None) -> list[str]:
    """The columns scored beside OUTPUT's: the probabilities unless OUTPUT has them, the word counts if `known`."""
    return [
        *(() if probabilities else (HIDDEN + name for name in PROBABILITIES)),
        *((HIDDEN + name for name in vocabulary.FIELDS) if known is not None else ()),
    ]


def per_row_words(texts: pd.Series, known: dict) -> pd.DataFrame:
    """vocabulary.FIELDS of each text against `known`, one row per text (summed by `aggregate`)."""
    return pd.DataFrame(vocabulary.per_text(texts.fillna("").astype(str).tolist(), known), index=texts.index)


def aggregate(scored, probability_names: list[str], label_name: str, counted: bool) -> dict:
    """`probability_stats` (as probabilities.of computes them) and `vocabulary_counts` (None unless `counted`)
    of every row of `scored`, a Spark DataFrame with the probability columns `probability_names` (LABELS order)
    and the predicted label `label_name`."""
    from pyspark.sql import functions as F

    p = [F.col(f"`{name}`") for name in probability_names]
    confidence = F.greatest(*p)
    # As numpy's int conversion of confidence * bins, clipped to the last bin (a confidence of 1.0).
    bin_ = F.least(
        F.floor(confidence * probability_stats.CONFIDENCE_BINS), F.lit(probability_stats.CONFIDENCE_BINS - 1)
    )
    stats = probability_stats.empty()
    for row in scored.groupBy(bin_.cast("int").alias("bin")).count().collect():
        stats["confidence_counts"][row["bin"]] += row["count"]
    k = len(LABELS)
    sums = [F.sum(p[i]).alias(f"s{i}") for i in range(k)]
    outer = [F.sum(p[i] * p[j]).alias(f"o{i}_{j}") for i in range(k) for j in range(k)]
    for row in scored.groupBy(F.col(f"`{label_name}`").alias("label")).agg(*sums, *outer).collect():
        j = LABELS.index(row["label"])
        stats["probability_sums"][j] = [row[f"s{i}"] for i in range(k)]
        stats["outer_sums"][j] = [[row[f"o{i}_{m}"] for m in range(k)] for i in range(k)]
    words = None
    if counted:
        fields = [F.sum(F.col(f"`{HIDDEN}{name}`")).alias(name) for name in vocabulary.FIELDS]
        total = scored.agg(*fields).collect()[0]
        words = np.asarray([total[name] or 0 for name in vocabulary.FIELDS], dtype=np.int64)
    return {"probability_stats": stats, "vocabulary_counts": words}
