"""The tracking store and its registry: which store (configure_store), whether it answers (check_store), lookups
(one `models:/` builder, URI resolution, versions, experiment ids), and its errors turned into ones naming the fix.

A leaf: it imports nothing of this package but config and errors, so every stage may import it."""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException
from sqlalchemy.engine import make_url

from sentiment_flow.config import ALIASES, KEY_METRICS
from sentiment_flow.errors import SERVER_FAILED, UserError, one_line, redact_uri, server_failed

READY = "READY"
FINISHED = "FINISHED"
NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"
DENIED = "PERMISSION_DENIED"  # HTTP 403 from a server with --auth
INVALID = "INVALID_PARAMETER_VALUE"
MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[^/@]+)|@(?P<alias>[^/@]+))$")


def models_uri(name: str, version: str | int) -> str:
    """models:/NAME/VERSION: the one place a registry URI is built."""
    return f"models:/{name}/{version}"


@dataclass(frozen=True)
class Evidence:
    """A version's test metrics as training recorded them, and where they were found."""

    metrics: dict[str, float]
    source: str  # where the metrics were found, for the gate table
    searched: str  # where they were looked for
    data_hash: str  # "" when unknown
    run_status: str | None  # the source run's status; None when that run is not in this store


def resolve_version(model_uri: str) -> ModelVersion:
    """The version a registry URI (models:/NAME/VERSION or models:/NAME@ALIAS) points at now.

    Raises a UserError that names the versions or aliases that do exist.
    """
    match = MODELS_URI.match(model_uri)
    if not match:
        raise UserError(
            f"{model_uri!r} is not a registry model URI; use models:/NAME/VERSION or models:/NAME@ALIAS, "
            f"e.g. models:/sentiment-english@champion."
        )
    client = MlflowClient()
    model = registered_model(client, match["name"])
    version = match["version"]
    if match["alias"]:
        version = alias_version(model, match["alias"])
        if version is None:
            raise UserError(
                f"{model.name} has no alias {match['alias']!r} (its aliases: "
                f"{', '.join(sorted(model.aliases)) or 'none'}). Use one of those or models:/NAME/VERSION."
            )
    return get_version(client, model.name, version)


def registered_model(client: MlflowClient, name: str) -> RegisteredModel:
    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == INVALID:
            raise UserError(f"{one_line(exc)}: pass a registered model name such as sentiment-english.") from None
        if exc.error_code != NOT_FOUND:
            raise
    known = [model.name for model in client.search_registered_models(max_results=20)]
    raise UserError(
        f"Registered model {name!r} does not exist in {redact_uri(mlflow.get_tracking_uri())}. Models there: "
        f"{', '.join(known) or 'none'}. Check the name, or point MLFLOW_TRACKING_URI at the store that has it."
    )


def get_version(client: MlflowClient, name: str, version: str | None) -> ModelVersion:
    if not str(version).isdigit():
        raise UserError(f"A version is a number like 3, got {version!r}. See `sentiment-flow status {name}`.")
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if exc.error_code != NOT_FOUND:
            raise
    versions = sorted(int(mv.version) for mv in all_versions(client, name))
    raise UserError(
        f"Version {version} of {name!r} does not exist; its versions are {', '.join(map(str, versions)) or 'none'}. "
        f"See `sentiment-flow status {name}`."
    )


def check_alias(alias: str) -> None:
    if alias not in ALIASES:
        raise UserError(f"Unknown alias {alias!r}. Use one of: {', '.join(ALIASES)}.")


def alias_version(model: RegisteredModel, alias: str) -> str | None:
    version = model.aliases.get(alias)
    return None if version is None else str(version)


def all_versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    versions: list[ModelVersion] = []
    token = None
    while True:
        page = client.search_model_versions(name_filter(name), page_token=token)
        versions.extend(page)
        token = page.token
        if not token:
            return versions


def source_run(client: MlflowClient, mv: ModelVersion):
    """The version's training run, or None when it is not in this store (deleted, or copied from elsewhere)."""
    if not mv.run_id:
        return None
    try:
        return client.get_run(mv.run_id)
    except MlflowException as exc:
        if exc.error_code != NOT_FOUND:
            raise
    return None


def evidence(client: MlflowClient, mv: ModelVersion) -> Evidence:
    """The version's KEY_METRICS from its source run, else from the version tags training wrote."""
    run = source_run(client, mv)
    run_metrics = run.data.metrics if run else {}
    metrics, sources = {}, []
    for key in KEY_METRICS:
        if key in run_metrics:
            metrics[key] = run_metrics[key]
            sources.append(f"run {mv.run_id}")
        elif is_number(mv.tags.get(key)):
            metrics[key] = float(mv.tags[key])
            sources.append("version tags")
    searched = f"run {mv.run_id} nor the version tags" if run else "the version tags nor a source run in this store"
    data_hash = mv.tags.get("data_hash") or (run.data.tags.get("data_hash", "") if run else "")
    run_status = run.info.status if run else None
    return Evidence(metrics, " and ".join(sorted(set(sources))), searched, data_hash, run_status)


def name_filter(name: str) -> str:
    """The search filter for one model's versions."""
    return equals("name", name)


def equals(field: str, value: str) -> str:
    """A search filter clause `field = 'value'`. MLflow's filter strings have no escape character; a value
    holding a single quote (it's) is quoted with double quotes instead."""
    quote = '"' if "'" in value else "'"
    return f"{field} = {quote}{value}{quote}"


def utc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def user() -> str:
    """Who runs the command: on a tracking server (http(s)), the username it authenticates every request with
    (MLFLOW_TRACKING_USERNAME, or the URI's user@), so a record cannot claim another; else the OS login. Never
    a password or a token."""
    uri = mlflow.get_tracking_uri()
    if uri.startswith(("http://", "https://")):
        username = os.environ.get("MLFLOW_TRACKING_USERNAME") or urlsplit(uri).username
        if username:
            return username
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # containers without a passwd entry
        return "unknown"


def is_number(text: str | None) -> bool:
    try:
        float(text)  # type: ignore[arg-type]  # None raises TypeError: not a number
    except (TypeError, ValueError):
        return False
    return True


def experiment_id(name: str, note: str = "") -> str:
    """The id of experiment `name`, created (with `note` as its description) if missing; a concurrent job
    creating it first is fine."""
    client = MlflowClient()
    if found := client.get_experiment_by_name(name):
        return found.experiment_id
    try:
        return client.create_experiment(name, tags={"mlflow.note.content": note} if note else None)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    return client.get_experiment_by_name(name).experiment_id  # type: ignore[union-attr]  # created just now


# The store the docs promise: explicit, because MLflow's own default depends on its version and on whether ./mlruns exists.
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


# MLflow retries an unreachable server for about 4 minutes (7 retries, backoff factor 2, 120 s timeout)
# before it fails with a traceback. These fail within seconds; a user may set any of them higher.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


def configure_store() -> None:
    """The tracking URI (sqlite:///mlflow.db unless MLFLOW_TRACKING_URI is set) and quick-failing HTTP defaults."""
    os.environ.setdefault("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


def redacted_uri(uri: str | None = None) -> str:
    """The tracking URI (or `uri`) with any password replaced by ***: safe to print."""
    return redact_uri(uri or mlflow.get_tracking_uri())


def store_error(exc: MlflowException) -> UserError:
    """A one-line UserError for an MLflow store failure, with credentials redacted from the URI and the message."""
    uri = mlflow.get_tracking_uri()
    message = one_line(exc)
    status = next((code for text, code in SERVER_FAILED.items() if text in message), None)
    if message.startswith("API request to") and status:
        return UserError(server_failed(redacted_uri(uri), status))
    if message.startswith("API request to"):  # the transport failed: requests' text repeats the URL
        return UserError(
            f"Cannot reach the MLflow tracking server at {redacted_uri(uri)}. Start it, or point "
            "MLFLOW_TRACKING_URI at a reachable one (MLFLOW_HTTP_REQUEST_MAX_RETRIES and "
            "MLFLOW_HTTP_REQUEST_TIMEOUT wait longer)."
        )
    secret = urlsplit(uri).password
    if secret:
        message = message.replace(secret, "***")
    return UserError(f"The MLflow store at {redacted_uri(uri)} failed: {message}.")


def check_store() -> None:
    """One cheap request to the tracking store, so an unreachable server fails before minutes of work.

    A local sqlite store is opened under an exclusive lock on its folder: MLflow creates and migrates the tables
    when a process first opens the store, and two jobs starting at once on a new store both did, the second
    failing with a traceback (`duplicate column name: step`). The lock makes the second wait for the first.
    """
    with sqlite_folder_locked(mlflow.get_tracking_uri()):
        mlflow.MlflowClient().search_experiments(max_results=1)


@contextmanager
def sqlite_folder_locked(uri: str) -> Iterator[None]:
    """An exclusive lock on the folder of the sqlite database `uri` (a no-op for other URIs): whoever opens a new
    database first creates its tables while the others wait."""
    database = make_url(uri).database if uri.startswith("sqlite:") else None
    if not database or database == ":memory:" or not Path(database).resolve().parent.is_dir():
        yield
        return
    import fcntl

    folder = os.open(Path(database).resolve().parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(folder)  # releases the lock
