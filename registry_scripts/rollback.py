#!/usr/bin/env python3
"""Point an alias back at the version that held it before: `sentiment-flow rollback` as a script."""

from sentiment_flow.cli import rollback_command

if __name__ == "__main__":
    rollback_command(prog_name="rollback.py")
