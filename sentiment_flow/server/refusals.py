"""What a request the team server refused (HTTP 403) lacked: the permission it takes, on what, and the smallest
role of `sentiment-flow add-user` (users.ROLES) that grants it, read from the refused request itself."""

from __future__ import annotations

import json
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from sentiment_flow.server.users import (
    EXPERIMENT,
    INT8_SUFFIX,
    PERMISSIONS,
    REGISTERED_MODEL,
    ROLES,
    team_experiments,
)


@dataclass(frozen=True)
class Refusal:
    """A request the server refused: the permission it takes and on what."""

    request: str  # "POST /api/2.0/mlflow/runs/create"
    permission: str  # READ, EDIT or MANAGE; "admin" for user and role management
    resource_type: str | None  # EXPERIMENT or REGISTERED_MODEL; None when the request names neither
    resource: str  # "experiment 'Default' (id 0)", "registered model 'sentiment-english'"
    experiment_name: str | None = None


def permission_denied(exc: BaseException) -> str:
    """The one-line message for a request the tracking server refused with HTTP 403: which user lacked which
    permission on which experiment or registered model, and which role would grant it."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME", "")
    refusal = refusal_of(exc)
    if refusal is None:
        return (
            f"The tracking server refused the request (HTTP 403): user {user!r} lacks permission for it; ask an "
            "admin of the server to grant it."
        )
    head = f"The tracking server refused {refusal.request} (HTTP 403): user {user!r}"
    if refusal.permission == "admin":
        return f"{head} is not an admin of the server, and only an admin manages users and roles."
    fix = "ask an admin of the server to grant it"
    role = _smallest_role(refusal.resource_type, refusal.permission)
    if role:
        team = refusal.resource_type != EXPERIMENT or refusal.experiment_name in team_experiments()
        fix += f" (the {role} role of `sentiment-flow add-user` does{'' if team else ', with that experiment added'})"
    return f"{head} lacks {refusal.permission} permission on {refusal.resource}; {fix}."


def _smallest_role(resource_type: str | None, permission: str) -> str | None:
    """The role in ROLES with the weakest grant on `resource_type` that still includes `permission` (of two
    alike, the one listed first: ROLES runs from weakest to strongest)."""
    if resource_type is None or permission not in PERMISSIONS:
        return None
    fits = [
        (PERMISSIONS.index(role.permissions[resource_type]), position, name)
        for position, (name, role) in enumerate(ROLES.items())
        if resource_type in role.permissions
        and PERMISSIONS.index(role.permissions[resource_type]) >= PERMISSIONS.index(permission)
    ]
    return min(fits)[2] if fits else None


def refusal_of(exc: BaseException | None) -> Refusal | None:
    """What the refused request needed, read from the request itself; None if `exc` carries none.

    MLflow's exception keeps only the endpoint and the body "Permission denied": the request (its JSON body
    names the experiment, run or model) is the 403 response's, in a frame the exception passed through.
    """
    import requests

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        for frame, _ in traceback.walk_tb(exc.__traceback__):
            for value in list(frame.f_locals.values()):
                if isinstance(value, requests.Response) and value.status_code == 403 and value.request is not None:
                    return _needed(value.request)
        exc = exc.__cause__ or exc.__context__
    return None


def _needed(request) -> Refusal:
    """The permission `request` (a requests.PreparedRequest) takes, and the resource, as MLflow's auth app
    checks it: reading takes READ, deleting MANAGE, any other change EDIT."""
    parts = urlsplit(request.url)
    path, method = parts.path, request.method
    params = dict(parse_qsl(parts.query))
    try:
        body = json.loads(request.body or "{}")
        params.update(body if isinstance(body, dict) else {})
    except (TypeError, ValueError):
        pass  # an artifact upload: the path names its experiment
    shown = f"{method} {path}"
    if "/mlflow/users/" in path or "/mlflow/roles/" in path:
        return Refusal(shown, "admin", None, "")
    permission = {"GET": "READ", "HEAD": "READ", "DELETE": "MANAGE"}.get(method, "EDIT")
    segments = path.strip("/").split("/")
    experiment_id = None
    if "mlflow-artifacts" in segments and "artifacts" in segments[segments.index("mlflow-artifacts") :]:
        rest = segments[segments.index("mlflow-artifacts") + 2 :]  # <experiment id>/<run id>/artifacts/...
        experiment_id = rest[0] if rest and rest[0].isdigit() else None
    elif "experiment_id" in params:
        experiment_id = str(params["experiment_id"])
    elif params.get("run_id") or params.get("run_uuid"):
        experiment_id = _lookup(
            lambda client: client.get_run(params.get("run_id") or params["run_uuid"]).info.experiment_id
        )
    elif "logged-models" in segments and segments.index("logged-models") + 1 < len(segments):
        model_id = segments[segments.index("logged-models") + 1]
        experiment_id = _lookup(lambda client: client.get_logged_model(model_id).experiment_id)
    if experiment_id is not None:
        name = _lookup(lambda client: client.get_experiment(experiment_id).name)
        resource = f"experiment {name!r} (id {experiment_id})" if name else f"experiment id {experiment_id}"
        return Refusal(shown, permission, EXPERIMENT, resource, name)
    if params.get("name") and ("registered-models" in path or "model-versions" in path):
        resource = f"registered model {params['name']!r}"
        from sentiment_flow.registry.identity import protected_aliases  # here: the CLI imports this module

        if path.endswith("/registered-models/alias") and params.get("alias") in protected_aliases():
            permission = "MANAGE"
            resource += f" (its alias {params['alias']!r} is protected)"
        name = str(params["name"])
        if path.endswith("/registered-models/create") and name.endswith(INT8_SUFFIX):
            resource += f" (and on {name.removesuffix(INT8_SUFFIX)!r}, whose int8 variant it is)"
        source = str(params.get("source", ""))
        if source.startswith("models:/") and "/model-versions/create" in path:
            copied = source.removeprefix("models:/").split("/")[0].split("@")[0]
            if copied != params["name"]:
                resource += f" (and READ on registered model {copied!r}, which it copies)"
        return Refusal(shown, permission, REGISTERED_MODEL, resource)
    return Refusal(shown, permission, None, "what it names")


def _lookup(read: Callable):
    """`read(MlflowClient())`, or None if the server refuses that too: the message names what it can."""
    from mlflow import MlflowClient

    try:
        return read(MlflowClient())
    except Exception:  # noqa: BLE001 - a name is a nicety in an error message, never a second error
        return None
