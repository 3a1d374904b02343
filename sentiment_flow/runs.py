"""MLflow runs and the versions they register: the one run context every stage starts its runs with, and the one
registration that deletes its version when the run it belongs to fails.

Training, scoring jobs, int8 builds and promotion evaluations each record themselves as one MLflow run; each
starts it through `run`, so every run ends FINISHED, FAILED on an error or KILLED on SIGTERM or Ctrl-C, never
RUNNING, and under `mlflow run` resumes the run `mlflow run` created.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from urllib.parse import urlsplit

import mlflow
from mlflow.entities import RunStatus

from sentiment_flow.store import models_uri

log = logging.getLogger(__name__)


def end_project_run(status: str) -> None:
    """End the run `mlflow run` started for this process (MLFLOW_RUN_ID) with `status` if it is still running.

    `mlflow run` marks it FAILED itself, but not when it was killed too: then nobody else ends it.
    """
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    client = mlflow.MlflowClient()
    try:
        if client.get_run(run_id).info.status == RunStatus.to_string(RunStatus.RUNNING):
            client.set_terminated(run_id, status)
    except mlflow.exceptions.MlflowException as exc:  # the store itself may be what failed: report that instead
        log.debug("could not end run %s %s: %s", run_id, status, exc)


@contextmanager
def killed_when_stopped() -> Iterator[None]:
    """Inside `mlflow.start_run()`: a SIGTERM or Ctrl-C (SystemExit, KeyboardInterrupt) ends the active run KILLED,
    where MLflow's context manager would record FAILED; other exceptions are left to it."""
    try:
        yield
    except (SystemExit, KeyboardInterrupt):
        mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
        raise


class Stopped(Exception):
    """A job that ends early on purpose (a tuning trial the pruner stopped): its run ends FINISHED, not FAILED."""


@contextmanager
def finished_when_stopped() -> Iterator[None]:
    """Inside `mlflow.start_run()`: a `Stopped` ends the active run FINISHED, then goes on up."""
    try:
        yield
    except Stopped:
        mlflow.end_run(RunStatus.to_string(RunStatus.FINISHED))
        raise


@contextmanager
def run(
    run_name: str | None = None,
    experiment_id: str | None = None,
    params: dict | None = None,
    tags: dict[str, str] | None = None,
    run_id: str | None = None,
    nested: bool = False,
) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run for one job, with `params` and `tags`: the run `run_id` (created by the caller), else under
    `mlflow run` (MLFLOW_RUN_ID) the run it created, else a new one; `nested`: a child of the active run.

    Ends FINISHED, FAILED on an error (MLflow's context manager), KILLED on SIGTERM or Ctrl-C, FINISHED on `Stopped`.
    """
    with (
        mlflow.start_run(
            run_id=run_id,
            run_name=None if run_id else run_name,
            experiment_id=None if run_id else experiment_id,
            nested=nested,
        ) as active,
        killed_when_stopped(),
        finished_when_stopped(),
    ):
        if params:
            log_new_params(params)
        if tags:
            mlflow.set_tags(tags)
        yield active


def log_new_params(params: dict) -> None:
    """Log `params` to the active run, except those it has: `mlflow run` logged its MLproject parameters as typed
    (e.g. "1e-4") already, and MLflow refuses to change a param."""
    logged = mlflow.get_run(mlflow.active_run().info.run_id).data.params  # type: ignore[union-attr]  # in a run
    mlflow.log_params({k: v for k, v in params.items() if k not in logged})


def pip_requirements(extra: tuple[str, ...] = ()) -> list[str]:
    """Exact pins for serving; passed explicitly because MLflow's inference tries to pin torchvision."""
    pins = []
    for package in ("mlflow", "transformers", "torch", "tokenizers", "accelerate", *extra):
        try:
            pins.append(f"{package}=={version(package).split('+')[0]}")  # drop local tags like +cpu
        except PackageNotFoundError:
            log.warning("%s is not installed; left out of the model's pip requirements", package)
    return pins


def share_model_files(info) -> None:
    """Make a model logged to a local artifact store readable by the group and others, like its other files.

    safetensors writes the weights 0600, and a local store keeps that mode when it copies them in (a tracking
    server writes uploads with its own umask): another user of a shared store could not load the model.
    """
    from mlflow.utils.file_utils import local_file_uri_to_path

    location = mlflow.MlflowClient().get_logged_model(info.model_id).artifact_location
    if urlsplit(location).scheme not in ("", "file"):
        return
    for path in Path(local_file_uri_to_path(location)).rglob("*"):
        path.chmod(path.stat().st_mode | (0o055 if path.is_dir() else 0o044))


class Registration:
    """A version about to be registered inside a run, deleted again if that run fails (see `registration`)."""

    def __init__(self, name: str):
        self.name = name
        self.version: str | None = None

    @property
    def model_uri(self) -> str:
        """models:/NAME/VERSION of the registered version."""
        if self.version is None:
            raise RuntimeError(f"no version of {self.name} was registered")
        return models_uri(self.name, self.version)

    def register(self, model_uri: str, tags: dict[str, str], description: str, model_description: str) -> str:
        """Register `model_uri` as a new version of NAME, created with its tags; returns the version.

        A new registered model gets `model_description`; the version gets `description`.
        """
        self.version = str(mlflow.register_model(model_uri, self.name, tags=tags).version)
        client = mlflow.MlflowClient()
        if not client.get_registered_model(self.name).description:
            client.update_registered_model(self.name, description=model_description)
        client.update_model_version(self.name, self.version, description=description)
        return self.version


@contextmanager
def registration(name: str) -> Iterator[Registration]:
    """A `Registration` of a new version of `name`; put the run that logs its model inside this block.

    If the block fails or is stopped after `register` (writing the description, closing the run), the version
    is deleted: a version exists only once its run ended FINISHED, and `promote` refuses any other.
    """
    registered = Registration(name)
    try:
        yield registered
    except BaseException:
        if registered.version is not None:
            delete_version(name, registered.version)
        raise


def delete_version(name: str, version: str) -> None:
    """Delete a version whose run did not finish; log (never raise) if that fails too."""
    try:
        mlflow.MlflowClient().delete_model_version(name, version)
        log.warning("Deleted %s version %s: its run did not finish", name, version)
    except Exception:
        log.exception("Could not delete %s version %s; its run is not FINISHED, so promote refuses it", name, version)


def git_commit() -> str:
    """The commit of the checkout this package runs from, or "unknown" (an installed wheel has none)."""
    from mlflow.utils.git_utils import get_git_commit

    return get_git_commit(str(Path(__file__).resolve().parent)) or "unknown"
