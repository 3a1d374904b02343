#!/usr/bin/env python3
"""Gate a model version, then point an alias at it: `sentiment-flow promote` as a script."""
from sentiment_flow.cli import promote

if __name__ == "__main__":
    promote(prog_name="promote.py")
