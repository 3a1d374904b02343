#!/usr/bin/env python3
"""Approve a pending request to move a protected alias (team server with --auth): `sentiment-flow approve` as a
script."""

from sentiment_flow.cli.registry import approve_command

if __name__ == "__main__":
    approve_command(prog_name="approve.py")
