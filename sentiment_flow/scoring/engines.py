"""The engines of `score`, by name: each scores one input into one output with a registered model and returns a
ScoreSummary. The CLI and `mlflow run . -e score` choose one from ENGINES; nothing else branches on the name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sentiment_flow.config import ScoreConfig
from sentiment_flow.scoring.scorer import ScoreSummary


@dataclass(frozen=True)
class Engine:
    """One way to run a scoring job; `options` names the `score` options it takes beyond the common ones."""

    description: str
    run: Callable[..., ScoreSummary]  # (model_uri, input, output, config, *, probabilities, overwrite, **options)
    options: tuple[str, ...] = ()


def _local(model_uri: str, input_path: str, output_path: str, config: ScoreConfig, **kwargs) -> ScoreSummary:
    from sentiment_flow.scoring.files import score_csv

    return score_csv(model_uri, input_path, output_path, config, **kwargs)


def _spark(
    model_uri: str, input_path: str, output_path: str, config: ScoreConfig, *, spark_master: str, **kwargs
) -> ScoreSummary:
    from sentiment_flow.scoring.spark import score_spark  # here: pyspark is an extra

    return score_spark(model_uri, input_path, output_path, config, master=spark_master, **kwargs)


ENGINES = {
    "local": Engine("stream the file in this process.", _local),
    "spark": Engine(
        "score on a Spark cluster (--spark-master); INPUT may be a folder of part files on any path Spark reads, "
        "OUTPUT is a folder (Parquet, or CSV if named *.csv).",
        _spark,
        options=("spark_master",),
    ),
}
