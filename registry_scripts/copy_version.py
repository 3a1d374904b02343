#!/usr/bin/env python3
"""Copy a model version to another registered name, e.g. sentiment-english-prod: `sentiment-flow copy` as a script.

Not named copy.py: Python puts this folder first on sys.path, where a copy.py would shadow the
standard library's `copy` for every script here.
"""

from sentiment_flow.cli import copy_command

if __name__ == "__main__":
    copy_command(prog_name="copy_version.py")
