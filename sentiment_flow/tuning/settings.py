"""The names a search records under: tags of its runs and version, user attributes of its Optuna trials. Its
options (TuneConfig) and search space (SEARCH_SPACE) live with the other commands' in sentiment_flow/config/."""

# Tags of the parent run, the trial runs and the registered version; user attributes of the Optuna trials.
STUDY_TAG = "optuna.study"
TRIAL_TAG = "optuna.trial"
STATE_TAG = "optuna.trial_state"
PARAM_TAG_PREFIX = "optuna.param."
RUN_ATTR = "mlflow_run_id"
REGISTRATION_ATTR = "registration"
TEST_ATTR = "test_metrics"  # reported beside each trial, never read to choose one
DEFINITION_ATTR = "definition"  # the search space and fixed training settings a study was created with
