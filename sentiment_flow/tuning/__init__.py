"""Tuning: an Optuna study over the training's hyperparameters, each trial a training on the project's own path.

settings.py holds the names a search records under (its options, TuneConfig, are in config/tuning.py); space.py
reads and draws the search space (config.SEARCH_SPACE by default); study.py opens the study in its own database; trials.py runs one trial as a
child run with a pruning callback; best.py registers the best trial and logs the search's plots; search.py runs
it all under one parent run.
"""

from sentiment_flow.tuning.search import TuneResult, tune

__all__ = ["TuneResult", "tune"]
