"""Errors the user can fix; the CLI prints their message without a traceback."""


class UserError(Exception):
    """Bad input or environment, with a message that names what was found and how to fix it."""

    exit_code = 2


def one_line(exc: BaseException) -> str:
    """An exception's message on one line, without a trailing period, for embedding in a UserError."""
    return " ".join(str(exc).split()).rstrip(".")
