"""Monitoring: how the data a model scores compares with what it was trained and tested on.

drift.py checks each scoring job as it runs; probabilities.py is what a job keeps of its probabilities;
`monitor` (monitor.py) reads the scoring runs of a version later, checks them (checks.py: drift, and estimate.py's
label-free performance estimate) and records one monitoring run with report.py's HTML report.
"""

from sentiment_flow.monitoring.monitor import MonitorResult, monitor

__all__ = ["MonitorResult", "monitor"]
