#!/usr/bin/env python3
"""Gate a model version, then point an alias at it: `sentiment-flow promote` as a script."""

from sentiment_flow.cli import promote_command

if __name__ == "__main__":
    promote_command(prog_name="promote.py")
