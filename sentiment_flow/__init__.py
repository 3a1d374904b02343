"""Fine-tune transformer sentiment classifiers and run them in production through MLflow."""

__version__ = "0.1.0"
