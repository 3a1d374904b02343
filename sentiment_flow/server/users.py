"""Users of the team server (`--auth`): roles as data, adding a user with one, and what a refused request lacked.

A role is MLflow permissions on the team's experiments and on registered models: ROLES, the one table, so a
new role is one entry. `add_user` makes each role an MLflow role of the server (MLflow's own RBAC, named
`sentiment-flow-<role>`, visible in its UI) holding those grants, creates the user and assigns the role.
Roles are team-wide: an experiment added to a role is added for every user who has it.

With `default_permission = READ` a user with no role reads everything and writes nothing but experiments they
create (MLflow grants a creator MANAGE on it). Writing a run into the Default experiment, where `mlflow run .`
and `train` record, or a version of a model someone else created, takes EDIT. The governance app
(governance.py) adds: a new registered model takes a role's EDIT on registered models (ops, approver), and a
protected alias (champion) takes MANAGE on the model (approver).
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from sentiment_flow.errors import UserError, one_line

log = logging.getLogger(__name__)

EXPERIMENT, REGISTERED_MODEL = "experiment", "registered_model"  # MLflow's resource types (auth.permissions)
EVERY = "*"  # MLflow's pattern for every resource of a type, including ones created later
# MLflow's permissions, weakest first: what a grant of one allows is everything before it, too.
PERMISSIONS = ("READ", "USE", "EDIT", "MANAGE")
ROLE_PREFIX = "sentiment-flow-"  # an MLflow role `sentiment-flow-ops` is this project's role `ops`
WORKSPACE = "default"  # MLflow's only workspace unless the server enables workspaces
# The experiments the documented commands (docs/) write to, besides any the admin names with --experiment: `mlflow run .`,
# `train` and `optimize` record in Default (unless MLFLOW_EXPERIMENT_NAME says otherwise), `score` in
# config.SCORING_EXPERIMENT and `promote` its evaluations in registry.evaluations.EXPERIMENT.
DEFAULT_EXPERIMENT = "Default"
NEW_PASSWORD_VAR = "SENTIMENT_FLOW_NEW_USER_PASSWORD"  # noqa: S105 - a variable's name; `add-user` reads a new user's password here, else prompts

# The governance app (governance.py) inside `sentiment-flow server --auth`; its constants live here, where
# clients read them without importing the server.
PROTECTED_ALIASES_VAR = "SENTIMENT_FLOW_PROTECTED_ALIASES"  # the server's protected aliases, comma-separated
DEFAULT_PROTECTED_ALIASES = ("champion",)  # also what a client assumes of a server that does not publish them
GOVERNANCE_ENDPOINT = "/api/2.0/sentiment-flow/governance"  # GET -> {"protected_aliases": [...]}
# Registered-model tags the server keeps honest: registry.audit's records (AUDIT_PREFIX + ".") and pending
# approval requests. INT8_SUFFIX is int8.build's (importing that loads torch, too heavy for the server);
# tests pin both copies to their owners'.
AUDIT_TAG_PREFIX, APPROVAL_TAG_PREFIX = "audit.", "approval."
INT8_SUFFIX = "-int8"


@dataclass(frozen=True)
class Role:
    """What a role may do, and its permission on each resource type (on the team's experiments; on every
    registered model)."""

    description: str
    permissions: dict[str, str]


ROLES = {
    "viewer": Role(
        "reads the team's runs, models and aliases (status, mlflow models serve); writes nothing",
        {EXPERIMENT: "READ", REGISTERED_MODEL: "READ"},
    ),
    "ops": Role(
        "runs the documented commands: train (mlflow run .), score, optimize, copy, registers new models, "
        "promotes to unprotected aliases (challenger) and requests approval for protected ones (champion)",
        {EXPERIMENT: "EDIT", REGISTERED_MODEL: "EDIT"},
    ),
    "approver": Role(
        "what ops does, plus MANAGE on every registered model: sets and deletes protected aliases (champion), "
        "approves others' requests, rolls back",
        {EXPERIMENT: "EDIT", REGISTERED_MODEL: "MANAGE"},
    ),
}


@dataclass(frozen=True)
class AddedUser:
    """What `add_user` did: whether it created the user, the MLflow role it assigned and that role's grants."""

    username: str
    created: bool  # False: the user existed, and keeps its password
    role: str  # the MLflow role's name
    experiments: dict[str, str]  # name -> id of each experiment the role's experiment grant covers
    permissions: dict[str, str]  # resource type -> permission


def team_experiments(extra: Iterable[str] = ()) -> list[str]:
    """The experiments a role covers: the documented commands' (see DEFAULT_EXPERIMENT) and `extra`, in order, once."""
    from sentiment_flow.config import SCORING_EXPERIMENT
    from sentiment_flow.registry.evaluations import EXPERIMENT as EVALUATIONS_EXPERIMENT

    return list(dict.fromkeys([DEFAULT_EXPERIMENT, SCORING_EXPERIMENT, EVALUATIONS_EXPERIMENT, *extra]))


def add_user(username: str, role: str, password: Callable[[], str], experiments: Iterable[str] = ()) -> AddedUser:
    """Create `username` (with `password()`, asked only for a new user) on the tracking server and give it `role`.

    Run as the server's admin (MLFLOW_TRACKING_USERNAME/PASSWORD). Creates the team experiments that are
    missing and the MLflow role with ROLES[role]'s grants; safe to run again (for an existing user it only
    adds the role). Raises UserError, having changed nothing, for a bad role, password or tracking URI.
    """
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client
    from mlflow.utils.validation import _validate_password

    from sentiment_flow.store import experiment_id

    if role not in ROLES:
        raise UserError(f"Unknown role {role!r}: choose one of {', '.join(ROLES)}.")
    uri = mlflow.get_tracking_uri()
    if not uri.startswith(("http://", "https://")):
        raise UserError(
            f"add-user adds a user to a team server: set MLFLOW_TRACKING_URI to its URL (http://...), and "
            f"MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to its admin; it is {uri!r}."
        )
    client = get_app_client("basic-auth", tracking_uri=uri)
    try:
        client.get_user(username)
        new_password = None
    except MlflowException as exc:
        if exc.error_code == "ENDPOINT_NOT_FOUND" or "error code 404" in str(exc):
            raise UserError(
                f"The server at {uri} has no users: it runs without authentication. Start it with "
                f"`sentiment-flow server --auth`."
            ) from None
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        new_password = password()
        try:
            _validate_password(new_password)  # the server's own policy, checked before anything changes
        except MlflowException as invalid:
            raise UserError(f"The password for {username!r} is refused: {one_line(invalid)}.") from None

    ids = {name: experiment_id(name) for name in team_experiments(experiments)}
    granted = ROLES[role].permissions
    wanted = {(EXPERIMENT, ids[name]): granted[EXPERIMENT] for name in ids}
    wanted[(REGISTERED_MODEL, EVERY)] = granted[REGISTERED_MODEL]
    mlflow_role = _ensure_role(client, ROLE_PREFIX + role, ROLES[role].description, wanted)
    if new_password is not None:
        client.create_user(username, new_password)
    if mlflow_role.id not in {assigned.id for assigned in client.list_user_roles(username)}:
        client.assign_role(username, mlflow_role.id)
    return AddedUser(username, new_password is not None, mlflow_role.name, ids, dict(granted))


def _ensure_role(client, name: str, description: str, wanted: dict[tuple[str, str], str]):
    """The MLflow role `name`, created if missing, holding each (resource type, pattern) -> permission of
    `wanted` (its other grants are kept)."""
    role = next((r for r in client.list_roles(WORKSPACE) if r.name == name), None)
    if role is None:
        role = client.create_role(WORKSPACE, name, description)
    held = {(p.resource_type, p.resource_pattern): p for p in client.list_role_permissions(role.id)}
    for (resource_type, pattern), permission in wanted.items():
        existing = held.get((resource_type, pattern))
        if existing is None:
            client.add_role_permission(role.id, resource_type, pattern, permission)
        elif existing.permission != permission:
            client.update_role_permission(existing.id, permission)
    return role


# ---------------------------------------------------------------------------------------------------------
# What a refused (HTTP 403) request lacked


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
        if path.endswith("/registered-models/alias") and params.get("alias") in published_protected_aliases():
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


def published_protected_aliases() -> tuple[str, ...]:
    """The aliases the tracking server protects (only MANAGE holders set or delete them), as it publishes them;
    DEFAULT_PROTECTED_ALIASES for a server that publishes none (plain basic-auth) or cannot be asked."""
    import mlflow
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    try:
        reply = http_request(
            get_default_host_creds(mlflow.get_tracking_uri()), GOVERNANCE_ENDPOINT, "GET", max_retries=0, timeout=10
        )
        if reply.status_code == 200:
            return tuple(reply.json()["protected_aliases"])
    except Exception:
        log.debug("No protected aliases published", exc_info=True)
    return DEFAULT_PROTECTED_ALIASES


def _lookup(read: Callable):
    """`read(MlflowClient())`, or None if the server refuses that too: the message names what it can."""
    from mlflow import MlflowClient

    try:
        return read(MlflowClient())
    except Exception:  # noqa: BLE001 - a name is a nicety in an error message, never a second error
        return None


AUTH_CACHE_TTL_SECONDS = 60  # with --auth: credentials checked once a minute per worker, not on every request


def write_auth_config(data_dir: Path, database_uri: str) -> Path:
    """basic_auth.ini for MLflow's auth app; no password in it (MLflow reads the admin's from the environment)."""
    path = data_dir / "basic_auth.ini"
    text = (
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {database_uri.replace('%', '%%')}\n"
        "admin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # Without it every request pays a PBKDF2 password check (about 1 s per request with 8 promotions
        # polling at once on 2 cores). A changed password may still be accepted by other workers for this long.
        f"auth_cache_ttl_seconds = {AUTH_CACHE_TTL_SECONDS}\n"
    )
    # Owner-only: a production database URI may carry the database user's password.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    return path
