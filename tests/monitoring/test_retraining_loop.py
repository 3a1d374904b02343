"""The retraining loop of docs/monitoring.md, end to end on the tiny model: score new data with the champion ->
`monitor` alerts (exit 3) -> `mlflow run .` on the new data -> `promote` with the same-data gate -> `monitor` on
the new champion is quiet (exit 0).

The new data keeps the labels' rule (one sentiment word per text) but its other words are ones the champion never
saw, and its texts are twice as long: what a move to a new domain looks like to the checks.
"""

import random

import mlflow
import pandas as pd
import pytest
from click.testing import CliRunner

from sentiment_flow.cli import cli
from sentiment_flow.config import TrainConfig
from sentiment_flow.errors import ALERT_EXIT_CODE
from sentiment_flow.training import train

from conftest import SENTIMENT_WORDS
from test_mlproject import mlflow_run

pytestmark = pytest.mark.slow

NAME = "sentiment-loop"
NEW_WORDS = ["weather", "train", "music", "book", "phone", "game", "song", "city", "street", "team", "night", "week"]
# The same small training for both versions (test_train's): the tiny model learns the one-word rule in it.
TRAINING = {"epochs": 2, "batch_size": 16, "max_length": 32, "learning_rate": "5e-3"}


def new_domain(n: int, seed: int) -> pd.DataFrame:
    """`n` rows of the new data: 10-18 words the champion never saw around one sentiment word."""
    rng = random.Random(seed)
    labels = [list(SENTIMENT_WORDS)[i % 3] for i in range(n)]
    texts = []
    for label in labels:
        words = rng.choices(NEW_WORDS, k=rng.randint(10, 18))
        words.insert(rng.randrange(len(words) + 1), rng.choice(SENTIMENT_WORDS[label]))
        texts.append(" ".join(words))
    return pd.DataFrame({"text": texts, "label": labels})


def score_and_monitor(rows: str, tmp_path, step: str):
    written = str(tmp_path / f"scored-{step}.csv")
    scored = CliRunner().invoke(cli, ["score", f"models:/{NAME}@champion", rows, written, "--label-column", "gold"])
    assert scored.exit_code == 0, scored.output
    return CliRunner().invoke(cli, ["monitor", NAME])


def alerts() -> set[str]:
    """The checks over all runs that alerted in the newest monitoring run."""
    run = mlflow.search_runs(experiment_names=["sentiment-flow-monitoring"], output_format="list", max_results=1)[0]
    found = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/checks.json")["checks"]
    return {c["check"] for c in found if c["scope"] == "all runs" and c["status"] == "alert"}


def test_score_monitor_retrain_promote_monitor(tiny_model_dir, tiny_data_dir, tmp_path):
    first = train(
        TrainConfig(model=str(tiny_model_dir), data=str(tiny_data_dir), registered_model_name=NAME, **TRAINING)
    )
    promoted = CliRunner().invoke(cli, ["promote", NAME, "--version", first.version, "--alias", "champion"])
    assert promoted.exit_code == 0, promoted.output

    new_data = tmp_path / "new-data"
    (new_data / "english").mkdir(parents=True)
    for seed, (split, n) in enumerate({"train": 900, "valid": 90, "test": 300}.items()):
        new_domain(n, seed).to_csv(new_data / "english" / f"{split}.csv", index=False)
    production = str(tmp_path / "this-week.csv")
    # A fresh sample of the new data (not a split), its labels known as `gold`.
    new_domain(400, seed=7).rename(columns={"label": "gold"}).to_csv(production, index=False)

    # 1-2. The champion scores the new data; monitor alerts on what moved.
    result = score_and_monitor(production, tmp_path, "before")
    assert result.exit_code == ALERT_EXIT_CODE, result.output
    assert {"token_length", "unseen_words"} <= alerts()

    # 3. Retrain on the new data, as cron or CI would: `mlflow run .` registers the next version.
    params = {"model": tiny_model_dir, "data": new_data, "registered_model_name": NAME, **TRAINING}
    args = [arg for key, value in params.items() for arg in ("-P", f"{key}={value}")]
    run = mlflow_run(*args, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    versions = mlflow.MlflowClient().search_model_versions(f"name='{NAME}'")
    (candidate,) = [str(v.version) for v in versions if str(v.version) != first.version]

    # 4. The same-data gate compares the candidate and the champion on the new test split, then moves the alias.
    promoted = CliRunner().invoke(
        cli,
        ["promote", NAME, "--version", candidate, "--alias", "champion",
         "--eval-data", str(new_data / "english" / "test.csv")],
    )  # fmt: skip
    assert promoted.exit_code == 0, promoted.output
    assert str(mlflow.MlflowClient().get_model_version_by_alias(NAME, "champion").version) == candidate

    # 5. The new champion scores the same week: its own baseline is the new data, and monitor is quiet.
    result = score_and_monitor(production, tmp_path, "after")
    assert result.exit_code == 0, result.output
    assert alerts() == set()
