"""Training: fine-tune a Hugging Face model on the sentiment splits, evaluate it, record one MLflow run and one
W&B run, and register the transformers-flavor model.

steps.py runs the steps; device.py decides how a device trains; model.py finds and loads the base model;
tracking.py records the training in both trackers.
"""

from sentiment_flow.training.steps import Extras, TrainResult, train

__all__ = ["Extras", "TrainResult", "train"]
