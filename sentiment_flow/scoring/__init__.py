"""Batch scoring: a registered model over CSV or Parquet, on this machine or on Spark, each job one MLflow run.

scorer.py loads a model and scores texts (the one place that knows the kinds of model); inputs.py reads and checks
an input; files.py is the local engine, spark.py (with spark_session.py and spark_files.py) the Spark engine;
engines.py names them; runs.py records a job as an MLflow run.
"""

from sentiment_flow.scoring.engines import ENGINES
from sentiment_flow.scoring.scorer import (
    Scorer,
    ScoreSummary,
    load_scorer,
    predict_texts,
    resolve_model,
    token_lengths,
)

__all__ = ["ENGINES", "ScoreSummary", "Scorer", "load_scorer", "predict_texts", "resolve_model", "token_lengths"]
