"""Scores from predicted class probabilities. Pure numpy: the evaluate stage needs no TensorFlow."""

from __future__ import annotations

import numpy as np

from stages.lib.schema import NUM_CLASSES

EPSILON = 1e-7  # Keras' probability clip in cross-entropy


def scores(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy and mean sparse categorical cross-entropy, as Keras computes them from probabilities."""
    p_true = np.clip(probs[np.arange(len(labels)), labels].astype(np.float64), EPSILON, 1 - EPSILON)
    return {"accuracy": float(np.mean(probs.argmax(axis=1) == labels)), "loss": float(-np.mean(np.log(p_true)))}


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Counts, rows = true digit, columns = predicted digit."""
    matrix = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def confident_errors(probs: np.ndarray, labels: np.ndarray, count: int) -> list[dict]:
    """The ``count`` wrong predictions with the highest probability on the wrong class (ties: lower index)."""
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    confidence = probs[wrong, predicted[wrong]]
    order = np.lexsort((wrong, -confidence))[:count]
    return [{"index": int(wrong[i]), "label": int(labels[wrong[i]]), "predicted": int(predicted[wrong[i]]),
             "confidence": round(float(confidence[i]), 6)} for i in order]


def summarize(per_seed: dict[str, dict]) -> dict:
    """Means over seeds of val/test accuracy and loss, and the test accuracy's standard deviation
    (None for one seed); all None when no seed has scores (a failed arch)."""
    out = {}
    for key in ("val_accuracy", "val_loss", "test_accuracy", "test_loss"):
        values = np.array([entry[key] for entry in per_seed.values() if key in entry], dtype=np.float64)
        mean = float(values.mean()) if len(values) else None
        std = float(values.std(ddof=1)) if len(values) >= 2 else None
        out[key] = None if mean is None else round(mean, 6)
        if key == "test_accuracy":
            out["test_accuracy_std"] = None if std is None else round(std, 6)
    return out
