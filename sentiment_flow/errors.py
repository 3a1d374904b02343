"""Errors the user can fix; the CLI prints their message without a traceback."""

from urllib.parse import urlsplit

# mlflow server answers 503 when its backend store fails; MLflow's client retries, then gives up with this text.
SERVER_UNAVAILABLE = "too many 503 error responses"


def database_down(redacted_server_uri: str) -> str:
    """The message for a tracking server that answers but whose database does not (HTTP 503)."""
    return (
        f"The MLflow tracking server at {redacted_server_uri} answers, but its database is down (HTTP 503). "
        "Ask whoever runs the server to restart it; `sentiment-flow server` exits when its PostgreSQL dies."
    )


class UserError(Exception):
    """Bad input or environment, with a message that names what was found and how to fix it."""

    exit_code = 2


def one_line(exc: BaseException) -> str:
    """An exception's message on one line, without a trailing period, for embedding in a UserError."""
    return " ".join(str(exc).split()).rstrip(".")


def redact_uri(uri: str) -> str:
    """`uri` with the password of user:password@ replaced by ***: safe to print."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    userinfo = parts.netloc.rpartition("@")[0]
    return uri.replace(f"{userinfo}@", f"{userinfo.partition(':')[0]}:***@", 1)
