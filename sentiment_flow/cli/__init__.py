"""`sentiment-flow`: a thin click layer over the library; the only package that reads argv or prints results.

group.py holds the group and what every command shares; jobs.py (train, score, optimize), monitoring.py
(monitor), registry.py (status, promote, rollback, copy), server.py (server, add-user), serving.py (serve),
tuning.py (tune) and webhooks.py (webhook add|list|test|remove) add their commands to it; syntax.py writes
messages in the user's syntax (CLI options, or MLproject parameters under `mlflow run`).
"""

from sentiment_flow.cli import jobs, monitoring, registry, server, serving, tuning, webhooks  # noqa: F401 - importing them adds their commands
from sentiment_flow.cli.group import cli, main, user_errors
from sentiment_flow.cli.registry import copy_command, promote_command, rollback_command, status_command
from sentiment_flow.cli.syntax import in_user_syntax

__all__ = [
    "cli",
    "copy_command",
    "in_user_syntax",
    "main",
    "promote_command",
    "rollback_command",
    "status_command",
    "user_errors",
]
