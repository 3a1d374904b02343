"""`score`'s options and where its jobs are recorded."""

from __future__ import annotations

from dataclasses import dataclass, field

from sentiment_flow.errors import UserError


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
