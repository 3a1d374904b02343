"""One trial: a training on the project's own path (training.train) with the trial's values, as a child run of
the search's run, stopped by the pruner after an epoch."""

from __future__ import annotations

from typing import Any

import mlflow

from sentiment_flow import runs
from sentiment_flow.config import HEADLINE_METRICS, TrainConfig
from sentiment_flow.training import Extras, train
from sentiment_flow.tuning import space as search_space
from sentiment_flow.tuning.settings import REGISTRATION_ATTR, RUN_ATTR, STATE_TAG, STUDY_TAG, TEST_ATTR, TRIAL_TAG

VALIDATION_METRIC = "eval_f1_macro"  # what the Trainer logs after each epoch, and what the study maximises


class Pruned(runs.Stopped):
    """The pruner stopped this trial: its run ends FINISHED, tagged PRUNED."""


def objective(base: TrainConfig, space: dict[str, Any], study_name: str):
    """The study's objective: train with the trial's values, return the kept epoch's validation macro-F1."""
    import optuna

    def run_trial(trial) -> float:
        cfg = search_space.as_config(base, search_space.suggest(trial, space))
        extras = Extras(
            callbacks=(pruning_callback(trial),),
            tags={STUDY_TAG: study_name, TRIAL_TAG: str(trial.number)},
            nested=True,
            wandb_group=study_name,
            register=False,  # only the best trial's model is registered, once the search ends
        )
        try:
            result = train(cfg, extras)
        except Pruned as exc:
            raise optuna.TrialPruned(str(exc)) from None
        except SystemExit as exc:  # SIGTERM: Optuna marks a trial FAIL on an Exception or Ctrl-C, and not on this
            raise KeyboardInterrupt(f"stopped by signal (exit {exc.code})") from exc
        if result is None or result.best_eval_f1_macro is None:  # a non-main process of torchrun, or no epoch
            raise RuntimeError("a trial trains in one process and evaluates each epoch; run tune without torchrun")
        mlflow.MlflowClient().set_tag(result.run_id, STATE_TAG, "COMPLETE")
        trial.set_user_attr(REGISTRATION_ATTR, result.registration)
        trial.set_user_attr(TEST_ATTR, {key: result.metrics[key] for key in HEADLINE_METRICS})
        return float(result.best_eval_f1_macro)

    return run_trial


def pruning_callback(trial):
    """A Trainer callback that records the trial's run, reports each epoch's validation macro-F1 to the study and
    raises Pruned when the pruner says so (after that epoch is logged)."""
    from transformers import TrainerCallback

    class PruningCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            trial.set_user_attr(RUN_ATTR, mlflow.active_run().info.run_id)  # type: ignore[union-attr]  # in train's run

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            epoch = round(state.epoch or 0)
            value = (metrics or {})[VALIDATION_METRIC]
            trial.report(value, epoch)
            if trial.should_prune():
                mlflow.set_tag(STATE_TAG, "PRUNED")
                raise Pruned(f"pruned after epoch {epoch}: validation macro-F1 {value:.4f}")

    return PruningCallback()
