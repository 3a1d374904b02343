"""Errors the user can fix; the CLI prints their message without a traceback."""

from urllib.parse import unquote, urlsplit, urlunsplit


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
