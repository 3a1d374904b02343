"""Errors the user can fix; the CLI prints their message without a traceback."""

from urllib.parse import unquote, urlsplit, urlunsplit

# What MLflow's client says once it gave up retrying a server that answers with an error: mlflow server
# answers 503 when the tracking store's database fails, and 500 when the model registry's does.
SERVER_FAILED = {"too many 503 error responses": "503", "too many 500 error responses": "500"}


def server_failed(redacted_server_uri: str, status: str) -> str:
    """The message for a tracking server that answers, but with 503 or 500 (its database is down) to every try."""
    cause = "its database is down" if status == "503" else "most likely its database is down"
    return (
        f"The MLflow tracking server at {redacted_server_uri} answers, but {cause} (HTTP {status}). "
        "Ask whoever runs the server to check its log and restart it; `sentiment-flow server` exits when its "
        "PostgreSQL dies."
    )


# `monitor`'s exit code when a check crossed its threshold: neither success (0) nor a refusal (1) or bad input (2),
# so cron or CI can start a retraining on exactly this code.
ALERT_EXIT_CODE = 3


class UserError(Exception):
    """Bad input or environment, with a message that names what was found and how to fix it."""

    exit_code = 2


class Refused(UserError):
    """A gate or the registry's state refused the request (a failed promotion gate, an int8 variant that missed its
    gate, nothing to roll back to): nothing changed; exits 1, where bad input exits 2."""

    exit_code = 1


def one_line(exc: BaseException | str) -> str:
    """An exception's message (or a text) on one line, without a trailing period, for embedding in a UserError."""
    return " ".join(str(exc).split()).rstrip(".")


def redact_uri(uri: str) -> str:
    """`uri` with the password of user:password@ replaced by ***: safe to print."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    userinfo = parts.netloc.rpartition("@")[0]
    return uri.replace(f"{userinfo}@", f"{userinfo.partition(':')[0]}:***@", 1)


def split_credentials(uri: str) -> tuple[str, str | None, str | None]:
    """`uri` without user:password@, then the user and password (percent-decoded, as requests sends them).

    An http(s) URI without a password comes back unchanged with (None, None): only a password is a secret, and
    MLflow's basic auth needs both. Other schemes (sqlite, postgresql) too: MLflow's HTTP credentials cannot
    carry theirs.
    """
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or parts.password is None:
        return uri, None, None
    bare = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return bare, unquote(parts.username or ""), unquote(parts.password)
