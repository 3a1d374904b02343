"""tune(): an Optuna study over the training's hyperparameters, recorded as one MLflow run with one child run per
trial, whose best trial is registered as a candidate version (never promoted)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass

import mlflow

from sentiment_flow import runs, store
from sentiment_flow.config import TrainConfig, TuneConfig
from sentiment_flow.errors import redact_uri
from sentiment_flow.tuning import best as results
from sentiment_flow.tuning import space as search_space
from sentiment_flow.tuning.settings import STUDY_TAG, TEST_ATTR
from sentiment_flow.tuning.study import open_study, storage_url
from sentiment_flow.tuning.trials import objective

log = logging.getLogger(__name__)

# What a study is continued with: a machine or a restart that differs in any of these is refused.
DEFINING_FIELDS = ("lang", "model", "data", "max_train_samples", "seed", "registered_model_name")


@dataclass(frozen=True)
class TuneResult:
    """What a search found: its run, its trials by state, and the best trial's registered version."""

    study: str
    storage: str  # without a password: safe to print
    run_id: str
    counts: dict[str, int]  # trials by Optuna state (COMPLETE, PRUNED, FAIL, RUNNING)
    best_trial: int | None
    best_value: float | None  # its validation macro-F1
    best_params: dict
    best_test_metrics: dict[str, float]  # reported, not used to choose
    registered_model_name: str
    version: str | None
    interrupted: bool  # Ctrl-C or SIGTERM ended the search early


def open_search(base: TrainConfig, cfg: TuneConfig):
    """The study a search of `cfg` over `base` runs in (created, or continued if its definition matches), its search
    space and its storage URL."""
    space = search_space.load_space(cfg.search_space)
    search_space.check_values(space, base)
    url = storage_url(cfg.storage)
    definition = json.loads(json.dumps({"search_space": space, **{k: getattr(base, k) for k in DEFINING_FIELDS}}))
    return open_study(cfg.study_name(base.registry_name), url, definition, cfg.pruner, cfg.trials), space, url


def tune(base: TrainConfig, cfg: TuneConfig) -> TuneResult:
    """Run (or continue) the study until it holds cfg.trials finished trials, then register its best trial."""
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    search_space.check_values(search_space.load_space(cfg.search_space), base)  # bad input: before the store
    store.check_store()
    study, space, url = open_search(base, cfg)
    name = study.study_name
    counted = (TrialState.COMPLETE, TrialState.PRUNED)
    params = {  # as typed (under `mlflow run` it logged them first), then as resolved
        **base.to_params(),
        **asdict(cfg),
        "storage": redact_uri(cfg.storage),
        "resolved_study": name,
        "resolved_search_space": json.dumps(space),
        "resolved_storage": redact_uri(url),
    }
    interrupted = False
    with runs.run(f"tune-{name}", params=params, tags={STUDY_TAG: name}) as parent:
        left = cfg.trials - len(study.get_trials(deepcopy=False, states=counted))
        if left > 0:
            try:
                study.optimize(
                    objective(base, space, name),
                    n_trials=left,
                    timeout=cfg.timeout_minutes * 60 or None,
                    # Over every machine sharing the study: stop once it holds cfg.trials finished trials.
                    callbacks=[MaxTrialsCallback(cfg.trials, states=counted)],
                    gc_after_trial=True,
                )
            except (KeyboardInterrupt, SystemExit):  # the trial's run ended KILLED; keep what the others found
                interrupted = True
                log.warning("Search stopped: registering the best trial so far")
        trial = results.best_trial(study)
        with store.sqlite_folder_locked(url):  # machines ending at once: one registers the trial, the rest find it
            version = results.register(study, trial, base.registry_name) if trial else None
        counts = {state.name: len(study.get_trials(deepcopy=False, states=(state,))) for state in TrialState}
        store_metrics: dict[str, float] = {f"trials_{state.lower()}": n for state, n in counts.items()}
        if trial:
            store_metrics["best_validation_f1_macro"] = trial.value
        mlflow.log_metrics(store_metrics)
        results.log_search(study)
    return TuneResult(
        study=name,
        storage=redact_uri(url),
        run_id=parent.info.run_id,
        counts={state: n for state, n in counts.items() if n},
        best_trial=trial.number if trial else None,
        best_value=trial.value if trial else None,
        best_params=dict(trial.params) if trial else {},
        best_test_metrics=dict(trial.user_attrs.get(TEST_ATTR, {})) if trial else {},
        registered_model_name=base.registry_name,
        version=version,
        interrupted=interrupted,
    )
