"""What a team server with `--auth` says about the user running a command: who they are (as the server
authenticated them), whether they hold MANAGE on a registered model, and which aliases it protects.

Every look-up is one GET to an endpoint of MLflow's auth app (or of the server's governance app); nothing here
decides on a string the user could declare. A store that is not an http(s) server, or a server without users,
has no identity: `current()` returns None and promotion works as on one machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import mlflow
from mlflow.exceptions import MlflowException

from sentiment_flow.config import DEFAULT_PROTECTED_ALIASES, GOVERNANCE_ENDPOINT

CURRENT_USER = "/api/2.0/mlflow/users/current"  # MLflow's auth app: {"user": {"username", "is_admin"}}
CURRENT_PERMISSIONS = "/api/3.0/mlflow/users/current/permissions"  # {"is_admin", "permissions": [grant rows]}
REGISTERED_MODEL = "registered_model"  # MLflow's resource type of a grant on a registered model


@dataclass(frozen=True)
class Identity:
    """The user the tracking server authenticated for this process's requests."""

    username: str
    is_admin: bool


def current() -> Identity | None:
    """The authenticated user of the tracking server; None for a local store or a server without `--auth`."""
    uri = mlflow.get_tracking_uri()
    if not uri.startswith(("http://", "https://")) or not os.environ.get("MLFLOW_TRACKING_USERNAME"):
        return None
    found = _get(CURRENT_USER)
    if found is None:  # no auth app: the server has no users, and every request is anonymous
        return None
    user = found["user"]
    return Identity(username=user["username"], is_admin=bool(user.get("is_admin")))


def protected_aliases() -> tuple[str, ...]:
    """The aliases only a MANAGE holder may move, as the server publishes them (a plain basic-auth server: champion)."""
    # MLflow's auth app refuses a route it does not know to anyone but an admin (fail-closed), and answers 404 to
    # an admin: both mean no governance app. Falling back is safe, as the server enforces its own set.
    found = _get(GOVERNANCE_ENDPOINT, absent=(403, 404))
    return DEFAULT_PROTECTED_ALIASES if found is None else tuple(found.get("protected_aliases", ()))


def holds_manage(name: str) -> bool:
    """Whether the authenticated user is an admin or holds MANAGE on registered model `name` (a role's grant,
    a direct one, or a pattern such as `*`), resolved as MLflow's auth app resolves it."""
    found = _get(CURRENT_PERMISSIONS)
    return found is not None and manages(found, name)


def manages(permissions: dict, name: str) -> bool:
    """Whether the reply of CURRENT_PERMISSIONS grants MANAGE on registered model `name`.

    MLflow's own fold: the highest grant of the matching rows wins, a DENY among them vetoes, and a MANAGE on
    the workspace is MANAGE on everything in it. The server's default_permission is not in the reply; it only
    matters where it is MANAGE, which no team server sets.
    """
    if permissions.get("is_admin"):
        return True
    # Imported here: importing mlflow.server takes about 2 s, which only a team server's non-admins pay.
    from mlflow.server.auth.permissions import MANAGE, GrantLoadKey
    from mlflow.server.auth.requirements import fold_grants_for_key, is_workspace_admin_grant
    from mlflow.server.auth.sqlalchemy_store import RoleGrantRow

    grants = [
        RoleGrantRow(row["resource_type"], row["resource_pattern"], row["permission"])
        for row in permissions.get("permissions", [])
    ]
    if any(is_workspace_admin_grant(grant) for grant in grants):
        return True
    return fold_grants_for_key(grants, GrantLoadKey(REGISTERED_MODEL, name)) == MANAGE


def _get(endpoint: str, absent: tuple[int, ...] = (404,)) -> dict | None:
    """The JSON reply of GET `endpoint` on the tracking server, with this process's credentials; None when the
    status is one of `absent` (the endpoint is not there)."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request, verify_rest_response

    response = http_request(get_default_host_creds(mlflow.get_tracking_uri()), endpoint, "GET")
    if response.status_code in absent:
        return None
    try:
        return verify_rest_response(response, endpoint).json()
    except ValueError:  # a 200 that is not JSON: something else answers at that path
        raise MlflowException(f"{endpoint} answered with something that is not JSON") from None
