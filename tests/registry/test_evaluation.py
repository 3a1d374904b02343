"""MLflow's evaluation gives the hand-written metrics; the paired bootstrap is sklearn's macro-F1, seeded."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from sentiment_flow import evaluation
from sentiment_flow.config import LABELS


def noisy_predictions(n: int, correct: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(LABELS), n)
    return y, np.where(rng.random(n) < correct, y, rng.integers(0, len(LABELS), n))


def test_mlflow_evaluate_gives_sklearns_metrics_under_the_project_names():
    y, p = noisy_predictions(200, 0.6, seed=1)
    with mlflow.start_run():
        metrics = evaluation.evaluate(pd.DataFrame({"label": y, "prediction": p}))

    ids = list(range(len(LABELS)))
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y, p))
    assert metrics["f1_macro"] == pytest.approx(f1_score(y, p, labels=ids, average="macro"))
    assert metrics["f1_weighted"] == pytest.approx(f1_score(y, p, labels=ids, average="weighted"))
    precision, recall, f1, _ = precision_recall_fscore_support(y, p, labels=ids, zero_division=0)
    for i, label in enumerate(LABELS):
        assert (metrics[f"precision_{label}"], metrics[f"recall_{label}"], metrics[f"f1_{label}"]) == pytest.approx(
            (precision[i], recall[i], f1[i])
        )


def test_a_class_no_row_has_scores_zero_not_an_error():
    y = np.array([0, 0, 1, 1])
    with mlflow.start_run():
        metrics = evaluation.evaluate(pd.DataFrame({"label": y, "prediction": y}))
    assert metrics["f1_negative"] == 0.0 and metrics["f1_positive"] == 1.0


def test_bootstrap_interval_is_deterministic_under_a_seed_and_brackets_the_difference():
    y, better = noisy_predictions(300, 0.8, seed=2)
    _, worse = noisy_predictions(300, 0.5, seed=3)
    worse = np.where(np.random.default_rng(4).random(300) < 0.5, y, worse)

    first = evaluation.bootstrap_f1_difference(y, better, worse, resamples=500, seed=7)
    again = evaluation.bootstrap_f1_difference(y, better, worse, resamples=500, seed=7)
    other = evaluation.bootstrap_f1_difference(y, better, worse, resamples=500, seed=8)

    assert first == again != other
    difference = f1_score(y, better, average="macro") - f1_score(y, worse, average="macro")
    assert first[0] < difference < first[1]
    assert first[0] > 0  # clearly better on 300 rows


def test_bootstrap_of_a_model_against_itself_is_exactly_zero():
    y, p = noisy_predictions(100, 0.6, seed=5)
    assert evaluation.bootstrap_f1_difference(y, p, p, resamples=200, seed=0) == (0.0, 0.0)


def test_a_dataset_another_process_inserts_first_is_linked_not_refused():
    """The interleaving behind a failed CI run: two promotions evaluated one version at once, both found the
    dataset missing, and the second insert broke the store's UNIQUE (experiment, name, digest). Here another
    client logs the same dataset between this run's look-up and its insert, on the real sqlite store."""
    import sqlalchemy
    from mlflow.entities import DatasetInput
    from mlflow.tracking._tracking_service.utils import _get_store

    frame = pd.DataFrame({"text": ["good", "bad"], "label": [0, 2]})
    data = evaluation.dataset(frame, "rows.csv", "test")
    client = mlflow.MlflowClient()
    other = client.create_run(client.create_experiment("race")).info.run_id
    engine, raced = _get_store().engine, []

    def insert_first(conn, cursor, statement, *args):
        if statement.startswith("INSERT INTO datasets") and not raced:
            raced.append(statement)  # before the nested call: its own insert comes through here too
            client.log_inputs(other, [DatasetInput(data._to_mlflow_entity())])

    sqlalchemy.event.listen(engine, "before_cursor_execute", insert_first)
    try:
        with mlflow.start_run(experiment_id=client.get_run(other).info.experiment_id) as run:
            evaluation.log_input(data, context="test")
    finally:
        sqlalchemy.event.remove(engine, "before_cursor_execute", insert_first)

    assert raced
    logged = [client.get_run(r).inputs.dataset_inputs for r in (run.info.run_id, other)]
    assert [[i.dataset.digest for i in inputs] for inputs in logged] == [[data.digest], [data.digest]]
    assert [t.value for t in logged[0][0].tags] == ["test"]
