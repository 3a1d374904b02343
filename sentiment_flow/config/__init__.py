"""The one place defaults live: MLproject, the click options and the code all read them from here.

constants.py holds what every stage shares (labels, metrics, aliases, canary texts, model names); training.py,
registry.py, scoring.py, int8.py, tuning.py, monitoring.py and serving.py hold each command's options as a dataclass
(TrainConfig, PromotionConfig, ScoreConfig, OptimizeConfig, TuneConfig with `tune`'s search space,
MonitorConfig, ServeConfig) whose fields become its click options and MLproject parameters. Import them from here:
`from sentiment_flow.config import LABELS, TrainConfig`.
"""

from sentiment_flow.config.constants import (
    ALIASES,
    AUTO,
    CANARY_TEXTS,
    CHAMPION,
    DEFAULT_LEARNING_RATE,
    DEFAULT_PROTECTED_ALIASES,
    ENGLISH_MODEL,
    EPSILON,
    GOVERNANCE_ENDPOINT,
    HEADLINE_METRICS,
    HUB_DATASET,
    HUB_DATASET_REVISION,
    INPUT_COLUMN,
    INT8_VARIANT,
    JAPANESE_MODEL,
    KEY_METRICS,
    LABEL2ID,
    LABELS,
    LANGUAGES,
    LEARNING_RATE_BY_MODEL,
    MODEL_ARTIFACT,
    MODEL_NAME_MAX_LENGTH,
    MULTILINGUAL_MODEL,
    OFFLINE_MODEL,
    VARIANT_METADATA_KEY,
    model_name_problem,
    shortened,
)
from sentiment_flow.config.int8 import (
    INT8_CALIBRATION_ROWS,
    INT8_FALLBACK_MARGIN,
    INT8_MAX_F1_DROP,
    INT8_MIN_AGREEMENT,
    INT8_REQUEST_BATCH_SIZE,
    INT8_SMOOTH_ALPHA,
    OptimizeConfig,
)
from sentiment_flow.config.monitoring import (
    MONITORING_EXPERIMENT,
    MonitorConfig,
)
from sentiment_flow.config.registry import (
    PromotionConfig,
)
from sentiment_flow.config.scoring import (
    SCORING_EXPERIMENT,
    SPARK_MASTER,
    ScoreConfig,
)
from sentiment_flow.config.serving import ServeConfig
from sentiment_flow.config.training import (
    TrainConfig,
)
from sentiment_flow.config.tuning import (
    PRUNERS,
    SEARCH_SPACE,
    STUDY_DATABASE,
    TuneConfig,
)

__all__ = [
    "ServeConfig",
    "MONITORING_EXPERIMENT",
    "MonitorConfig",
    "ALIASES",
    "AUTO",
    "CANARY_TEXTS",
    "CHAMPION",
    "DEFAULT_PROTECTED_ALIASES",
    "DEFAULT_LEARNING_RATE",
    "ENGLISH_MODEL",
    "EPSILON",
    "GOVERNANCE_ENDPOINT",
    "HEADLINE_METRICS",
    "HUB_DATASET",
    "HUB_DATASET_REVISION",
    "INPUT_COLUMN",
    "INT8_CALIBRATION_ROWS",
    "INT8_FALLBACK_MARGIN",
    "INT8_MAX_F1_DROP",
    "INT8_MIN_AGREEMENT",
    "INT8_REQUEST_BATCH_SIZE",
    "INT8_SMOOTH_ALPHA",
    "INT8_VARIANT",
    "JAPANESE_MODEL",
    "KEY_METRICS",
    "LABEL2ID",
    "LABELS",
    "LANGUAGES",
    "LEARNING_RATE_BY_MODEL",
    "MODEL_ARTIFACT",
    "MODEL_NAME_MAX_LENGTH",
    "MULTILINGUAL_MODEL",
    "OFFLINE_MODEL",
    "OptimizeConfig",
    "PRUNERS",
    "PromotionConfig",
    "SCORING_EXPERIMENT",
    "SEARCH_SPACE",
    "STUDY_DATABASE",
    "SPARK_MASTER",
    "ScoreConfig",
    "TrainConfig",
    "TuneConfig",
    "VARIANT_METADATA_KEY",
    "model_name_problem",
    "shortened",
]
