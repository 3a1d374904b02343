"""The study's database: beside the MLflow store and never inside it (both keep an Alembic revision in
alembic_version), no password in its URL, and a study continued only with the definition it was created with."""

import mlflow
import pytest

from sentiment_flow.errors import UserError
from sentiment_flow.tuning.study import open_study, storage_url

DEFINITION = {"search_space": {"epochs": [1, 2]}, "lang": "english"}


def test_the_study_database_is_optuna_db_beside_a_sqlite_store(tmp_path):
    assert storage_url("") == f"sqlite:///{tmp_path / 'optuna.db'}"


@pytest.mark.slow  # creating an MLflow store takes seconds
def test_optuna_and_mlflow_cannot_share_one_sqlite_database(tmp_path):
    # Why the study has a database of its own: the store's alembic_version holds MLflow's revision, which
    # Optuna reads as its own schema's and refuses.
    optuna = pytest.importorskip("optuna")
    mlflow.MlflowClient().search_experiments(max_results=1)  # creates mlflow.db
    with pytest.raises(RuntimeError, match="no longer compatible with the table schema"):
        optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(UserError, match="is the MLflow store's own database: Optuna and MLflow both keep"):
        storage_url(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_a_password_in_the_storage_url_is_refused_and_not_printed():
    with pytest.raises(UserError) as raised:
        storage_url("postgresql://tuner:s3cret@db.example:5432/optuna")
    assert "s3cret" not in str(raised.value)
    assert "PGPASSWORD or a ~/.pgpass line" in str(raised.value)
    assert storage_url("postgresql://tuner@db.example:5432/optuna") == "postgresql://tuner@db.example:5432/optuna"


def test_a_server_store_needs_a_storage_named(monkeypatch):
    mlflow.set_tracking_uri("http://tracker.example:5000")
    with pytest.raises(
        UserError, match=r"is no sqlite file, so there is no folder to keep the study in: pass --storage"
    ):
        storage_url("")


def test_a_study_is_refused_with_another_search_space_and_continued_with_its_own(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = open_study("s", url, DEFINITION, "median", 4)
    first.enqueue_trial({"epochs": 1})
    changed = {**DEFINITION, "search_space": {"epochs": [1, 3]}}
    with pytest.raises(UserError, match=r"^Study 's' was created with another search_space: pass the same ones"):
        open_study("s", url, changed, "median", 4)
    again = open_study("s", url, DEFINITION, "median", 4)
    assert len(again.trials) == 1
