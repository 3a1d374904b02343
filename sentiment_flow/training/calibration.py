"""Calibration at training: one temperature fitted on the validation split and folded into the classifier head, so
the logged model's softmax scores are calibrated probabilities (what `monitor`'s label-free estimate reads) while
its labels stay exactly the same (dividing every logit by one T > 0 keeps their order).

Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks"): one parameter, fitted by
minimising the validation negative log-likelihood; the test split measures the expected calibration error (ECE)
before and after.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

# Equal-width confidence bins of the ECE and the reliability diagram: Guo et al.'s 15.
ECE_BINS = 15
# The searched range of ln(T): T from 0.05 to 20, far past any temperature a fine-tuned classifier needs.
LOG_TEMPERATURE_BOUNDS = (-3.0, 3.0)


def softmax(logits, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of `logits / temperature`."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(logits, labels) -> float:
    """The temperature T > 0 minimising the negative log-likelihood of softmax(logits / T) on `labels`."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    z, y = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=int)

    def nll(log_t: float) -> float:
        return float(-log_softmax(z / np.exp(log_t), axis=1)[np.arange(len(y)), y].mean())

    found = minimize_scalar(nll, bounds=LOG_TEMPERATURE_BOUNDS, method="bounded", options={"xatol": 1e-4})
    return float(np.exp(found.x))


def reliability(probs, labels, bins: int = ECE_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width confidence bin: rows, mean confidence and accuracy (NaN where a bin is empty)."""
    probs, labels = np.asarray(probs), np.asarray(labels, dtype=int)
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    # Bin i holds (i/bins, (i+1)/bins]; a confidence is at least 1/classes, never 0.
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    rows = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, confidence, bins) / rows
        accuracy = np.bincount(index, correct.astype(float), bins) / rows
    return rows, mean_confidence, accuracy


def ece(probs, labels, bins: int = ECE_BINS) -> float:
    """Expected calibration error: the row-weighted mean |accuracy - confidence| over equal-width bins."""
    rows, confidence, accuracy = reliability(probs, labels, bins)
    used = rows > 0
    return float(np.sum(rows[used] * np.abs(accuracy[used] - confidence[used])) / max(rows.sum(), 1))


def classifier_head(model):
    """The last torch Linear layer producing one logit per label: the one the temperature is folded into."""
    import torch

    heads = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == model.num_labels]
    if not heads:
        raise ValueError(f"{type(model).__name__} has no Linear layer with {model.num_labels} outputs")
    return heads[-1]


def fold_temperature(model, temperature: float) -> None:
    """Divide the classifier head's weights and bias by `temperature`: the model then outputs logits / T."""
    import torch

    head = classifier_head(model)
    with torch.no_grad():
        head.weight.div_(temperature)
        if head.bias is not None:
            head.bias.div_(temperature)


def calibrate(trainer, validation) -> float:
    """Fit the temperature on `validation` (a tokenized split) with the trained model and fold it into the model
    `trainer` holds; returns T."""
    prediction = trainer.predict(validation)
    temperature = fit_temperature(prediction.predictions, prediction.label_ids)
    fold_temperature(trainer.model, temperature)
    log.info("Calibrated: temperature %.4f folded into the classifier head", temperature)
    return temperature


def calibration_metrics(logits, labels, temperature: float) -> dict[str, float]:
    """The test split's calibration metrics, from the calibrated model's test logits (the uncalibrated logits are
    those times `temperature`): ECE before and after, and the temperature."""
    return {
        "test_ece_uncalibrated": ece(softmax(logits, 1 / temperature), labels),
        "test_ece": ece(softmax(logits), labels),
        "temperature": temperature,
    }


def log_test_calibration(logits, labels, temperature: float) -> dict[str, float]:
    """Log the test split's calibration to MLflow and W&B: `calibration_metrics`, a reliability diagram before and
    after, and the calibrated probabilities' stats (`monitor`'s baseline); returns the metrics."""
    from sentiment_flow import plots
    from sentiment_flow.monitoring import probabilities
    from sentiment_flow.training import tracking

    found = calibration_metrics(logits, labels, temperature)
    tracking.log_metrics(found)
    before, after = softmax(logits, 1 / temperature), softmax(logits)
    curves = {"uncalibrated": reliability(before, labels), "calibrated": reliability(after, labels)}
    ece_by_curve = {"uncalibrated": found["test_ece_uncalibrated"], "calibrated": found["test_ece"]}
    tracking.log_figure(plots.reliability_diagram(curves, ece_by_curve), "reliability_diagram.png")
    tracking.log_dict(probabilities.to_json(probabilities.of(after)), probabilities.ARTIFACT)
    return found
