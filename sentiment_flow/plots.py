"""Figures logged with every training: the reference notebook's EDA and a normalised confusion matrix."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: figures are only ever written to files

# Loaded, though no figure here goes through it: wandb.Image(figure) compares its argument with
# matplotlib.pyplot, and fails if pyplot was never imported.
import matplotlib.pyplot
import numpy as np

# Figures made with Figure(), not pyplot: pyplot keeps every figure open until it is closed (three per
# training, "More than 20 figures have been opened"); these are freed once logged.
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay

from sentiment_flow.config import LABELS


def label_distribution(label_ids_by_split: dict[str, list[int]]):
    """Bar chart of rows per label in each split."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    width = 0.8 / len(label_ids_by_split)
    x = np.arange(len(LABELS))
    for i, (split, ids) in enumerate(label_ids_by_split.items()):
        counts = np.bincount(np.asarray(ids, dtype=int), minlength=len(LABELS))
        ax.bar(x + i * width, counts, width, label=split)
    ax.set_xticks(x + width * (len(label_ids_by_split) - 1) / 2, LABELS)
    ax.set_ylabel("rows")
    ax.set_title("Label distribution")
    ax.legend()
    fig.tight_layout()
    return fig


def length_by_label(lengths: list[int] | np.ndarray, label_ids: list[int] | np.ndarray, max_length: int):
    """Box plot of tokens per text for each label (train split), with the truncation length marked."""
    lengths = np.asarray(lengths)
    label_ids = np.asarray(label_ids)
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.boxplot([lengths[label_ids == i] for i in range(len(LABELS))], showfliers=False)
    ax.set_xticks(range(1, len(LABELS) + 1), LABELS)
    ax.axhline(max_length, color="tab:red", linestyle="--", label=f"max_length={max_length}")
    ax.set_ylabel("tokens per text")
    ax.set_title("Text length by label (train)")
    ax.legend()
    fig.tight_layout()
    return fig


def confusion_matrix(y_true, y_pred):
    """Row-normalised confusion matrix: each row shows where one true label's texts went."""
    fig = Figure(figsize=(5, 4.5))
    ax = fig.subplots()
    ConfusionMatrixDisplay.from_predictions(
        y_true,
        y_pred,
        labels=list(range(len(LABELS))),
        display_labels=LABELS,
        normalize="true",
        values_format=".2f",
        cmap="Blues",
        ax=ax,
        colorbar=False,
    )
    ax.set_title("Confusion matrix (test, normalised by true label)")
    fig.tight_layout()
    return fig


def compare_shares(names: list[str], expected, actual, title: str, psi: float):
    """Side-by-side bars of two histograms as shares: the training baseline and what a scoring job saw."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    x = np.arange(len(names))
    for offset, (label, counts) in zip((-0.2, 0.2), (("training", expected), ("scored", actual))):
        counts = np.asarray(counts, dtype=float)
        ax.bar(x + offset, counts / max(counts.sum(), 1), 0.4, label=label)
    ax.set_xticks(x, names)
    ax.set_ylabel("share of texts")
    ax.set_title(f"{title} (PSI {psi:.3f})")
    ax.legend()
    fig.tight_layout()
    return fig


def reliability_diagram(curves: dict[str, tuple], ece: dict[str, float]):
    """Accuracy against mean confidence per confidence bin, one line per curve name (e.g. before/after
    calibration), each point sized by its rows; `curves` maps a name to `(rows, mean confidence, accuracy)`."""
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    for name, (rows, confidence, accuracy) in curves.items():
        used = np.asarray(rows) > 0
        sizes = 200 * np.asarray(rows)[used] / max(np.sum(rows), 1)
        line = ax.plot(
            np.asarray(confidence)[used], np.asarray(accuracy)[used], marker="", label=f"{name} (ECE {ece[name]:.3f})"
        )
        ax.scatter(np.asarray(confidence)[used], np.asarray(accuracy)[used], s=sizes, color=line[0].get_color())
    ax.set_xlabel("mean confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("Reliability diagram (test split)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def over_time(times, rows, series: dict[str, list], thresholds: dict[str, float], estimate: dict[str, tuple]):
    """Three panels over the scoring runs' start `times`: rows per run; each PSI series (name -> values, NaN where
    not computed) with its alert threshold; estimated macro-F1 with ±1 std, realized macro-F1 and the reference
    (estimate: "estimated" -> (values, stds), "realized" -> (values,), "reference" -> (value,))."""
    fig = Figure(figsize=(9, 8))
    volume, psi, f1 = fig.subplots(3, 1, sharex=True)
    x = np.arange(len(times))
    volume.bar(x, rows, color="tab:grey")
    volume.set_ylabel("rows")
    volume.set_title("Scoring runs over time")
    for (name, values), color in zip(series.items(), ("tab:blue", "tab:orange", "tab:green")):
        psi.plot(x, values, marker="o", color=color, label=name)
        psi.axhline(thresholds[name], color=color, linestyle=":")
    psi.set_ylabel("PSI vs training (dotted: alert)")
    psi.legend(fontsize="small")
    values, stds = estimate["estimated"]
    f1.errorbar(x, values, yerr=stds, marker="o", capsize=3, label="estimated (CBPE, ±1 std)")
    f1.plot(x, estimate["realized"][0], marker="s", linestyle="", color="tab:red", label="realized (gold labels)")
    f1.axhline(estimate["reference"][0], color="tab:grey", linestyle="--", label="test split")
    f1.set_ylabel("macro-F1")
    f1.legend(fontsize="small")
    f1.set_xticks(x, times, rotation=45, ha="right", fontsize="small")
    fig.tight_layout()
    return fig
