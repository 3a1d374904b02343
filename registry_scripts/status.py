#!/usr/bin/env python3
"""A registered model's versions, aliases, metrics and alias history: `sentiment-flow status` as a script."""

from sentiment_flow.cli import status_command

if __name__ == "__main__":
    status_command(prog_name="status.py")
