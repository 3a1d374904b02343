"""What a search leaves: the best trial's model registered as a candidate (chosen by validation macro-F1 only),
and the search's plots and trial table in the parent run."""

from __future__ import annotations

import json
import logging
import warnings

import mlflow

from sentiment_flow import runs, store
from sentiment_flow.training import tracking
from sentiment_flow.tuning.settings import PARAM_TAG_PREFIX, REGISTRATION_ATTR, STUDY_TAG, TRIAL_TAG

log = logging.getLogger(__name__)


def best_trial(study):
    """The completed trial with the highest validation macro-F1 (the study's objective), or None.

    Test metrics are stored beside each trial for the report; nothing here reads them.
    """
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values]
    return max(complete, key=lambda t: (t.value, -t.number), default=None)


def register(study, trial, registry_name: str) -> str:
    """Register `trial`'s model as a new version of `registry_name` tagged with the study, trial and params;
    returns the version. A version already registered for this trial (a study run again) is returned instead."""
    client = mlflow.MlflowClient()
    for version in _versions(client, registry_name):
        if version.tags.get(STUDY_TAG) == study.study_name and version.tags.get(TRIAL_TAG) == str(trial.number):
            return str(version.version)
    pending = trial.user_attrs[REGISTRATION_ATTR]
    finished = len([t for t in study.get_trials(deepcopy=False) if t.state.is_finished()])
    tags = {
        **pending["tags"],
        STUDY_TAG: study.study_name,
        TRIAL_TAG: str(trial.number),
        "validation_f1_macro": f"{trial.value:.4f}",
        **{f"{PARAM_TAG_PREFIX}{name}": str(value) for name, value in trial.params.items()},
    }
    description = (
        f"{pending['description']} The best of {finished} trials of Optuna study {study.study_name} (trial "
        f"{trial.number}, validation macro-F1 {trial.value:.4f}; params {json.dumps(trial.params)})."
    )
    with runs.registration(registry_name) as registered:
        registered.register(pending["model_uri"], tags, description, pending["model_description"])
    return str(registered.version)


def _versions(client, name: str) -> list:
    try:
        return store.all_versions(client, name)
    except mlflow.exceptions.MlflowException as exc:
        if exc.error_code != store.NOT_FOUND:
            raise
    return []


def log_search(study) -> None:
    """The optimization history, the parameter importances and every trial as a CSV, in the active (parent) run."""
    import optuna
    from optuna.visualization import matplotlib as optuna_plots

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        history = optuna_plots.plot_optimization_history(study, target_name="validation macro-F1")
        tracking.log_figure(history.figure, "optimization_history.png")
        try:
            importances = optuna_plots.plot_param_importances(study, target_name="validation macro-F1")
            tracking.log_figure(importances.figure, "param_importances.png")
        except (ValueError, RuntimeError) as exc:  # fewer than 2 completed trials, or nothing varied
            log.info("No parameter importances: %s", exc)
            tracking.log_text(f"No parameter importances: {exc}\n", "plots/param_importances.txt")
    frame = study.trials_dataframe(attrs=("number", "state", "value", "params", "duration", "user_attrs"))
    tracking.log_text(frame.drop(columns=[c for c in frame if "registration" in c]).to_csv(index=False), "trials.csv")
