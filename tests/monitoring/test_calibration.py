"""Calibration at training (training/calibration.py): the temperature, its folding into the head, and ECE."""

import numpy as np
import pytest
import torch

from sentiment_flow.training import calibration

from test_registry import NAME, add_version, outcomes  # noqa: F401 - add_version is a fixture


def calibrated_sample(rows: int, temperature: float, seed: int = 0):
    """Logits whose softmax at `temperature` is calibrated: labels drawn from those probabilities."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.5, size=(rows, 3))
    probs = calibration.softmax(logits, temperature)
    labels = np.array([rng.choice(3, p=p) for p in probs])
    return logits, labels


def test_folding_the_temperature_divides_the_logits_and_keeps_every_label(tiny_model_dir):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()
    inputs = torch.randint(5, model.config.vocab_size, (64, 12))
    with torch.no_grad():
        before = model(input_ids=inputs).logits
        calibration.fold_temperature(model, 2.5)
        after = model(input_ids=inputs).logits
    assert torch.allclose(after, before / 2.5, atol=1e-6)
    assert torch.equal(after.argmax(-1), before.argmax(-1))


def test_the_fitted_temperature_is_the_one_that_calibrates_and_it_lowers_ece():
    logits, labels = calibrated_sample(4000, temperature=2.0)
    found = calibration.fit_temperature(logits, labels)
    assert found == pytest.approx(2.0, rel=0.1)
    metrics = calibration.calibration_metrics(logits / found, labels, found)
    assert metrics["test_ece"] < 0.03 < 0.1 < metrics["test_ece_uncalibrated"]


def test_ece_is_the_row_weighted_gap_between_accuracy_and_confidence():
    probs = np.tile([0.8, 0.1, 0.1], (10, 1))
    assert calibration.ece(probs, [0] * 8 + [1] * 2) == pytest.approx(0.0)  # 80 % right at 0.8
    assert calibration.ece(probs, [0] * 10) == pytest.approx(0.2)
    mixed = np.vstack([probs, np.tile([0.1, 0.1, 0.8], (10, 1)), np.tile([0.5, 0.3, 0.2], (20, 1))])
    labels = [0] * 10 + [1] * 10 + [0] * 5 + [1] * 15
    # One bin by confidence, whatever the class: the 0.8 bin is right on 10 of 20 rows, the 0.5 bin on 5 of 20.
    assert calibration.ece(mixed, labels) == pytest.approx((20 * 0.3 + 20 * 0.25) / 40)


def test_promote_refuses_a_candidate_above_max_ece_and_one_without_a_measured_ece(add_version):  # noqa: F811 - the fixture
    from mlflow import MlflowClient

    from sentiment_flow import registry
    from sentiment_flow.config import PromotionConfig

    calibrated, uncalibrated = add_version(0.7), add_version(0.7)
    run_id = MlflowClient().get_model_version(NAME, calibrated).run_id
    MlflowClient().log_metric(run_id, "test_ece", 0.08)

    assert "max_ece" not in outcomes(registry.promote(NAME, calibrated, "champion", dry_run=True))  # off by default
    refused = registry.promote(NAME, calibrated, "champion", config=PromotionConfig(max_ece=0.05))
    assert refused.failed == ("max_ece",)
    assert next(g for g in refused.gates if g.gate == "max_ece").candidate == "0.0800"
    assert registry.promote(NAME, calibrated, "champion", config=PromotionConfig(max_ece=0.1)).promoted
    missing = registry.promote(NAME, uncalibrated, "challenger", config=PromotionConfig(max_ece=0.1))
    assert missing.failed == ("max_ece",)
    assert "trained before calibration" in next(g for g in missing.gates if g.gate == "max_ece").note


def test_max_ece_outside_0_1_is_refused():
    from sentiment_flow.config import PromotionConfig
    from sentiment_flow.errors import UserError

    with pytest.raises(UserError, match="max_ece must be above 0 and at most 1"):
        PromotionConfig(max_ece=0)
