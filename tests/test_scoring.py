"""Scores from class probabilities, checked on hand-made predictions."""

from __future__ import annotations

import math

import numpy as np

from stages.lib.scoring import confident_errors, confusion_matrix, scores, summarize


def probs_for(rows: list[dict[int, float]]) -> np.ndarray:
    """Probabilities with the given mass on some digits and the rest spread evenly."""
    out = np.zeros((len(rows), 10), dtype=np.float32)
    for i, row in enumerate(rows):
        rest = (1 - sum(row.values())) / (10 - len(row))
        out[i] = rest
        for digit, p in row.items():
            out[i, digit] = p
    return out


def test_accuracy_and_cross_entropy():
    probs = probs_for([{3: 0.9}, {1: 0.6, 7: 0.3}, {5: 0.5}])
    labels = np.array([3, 7, 5])
    result = scores(probs, labels)
    assert result["accuracy"] == 2 / 3
    assert math.isclose(result["loss"], -(math.log(0.9) + math.log(0.3) + math.log(0.5)) / 3, rel_tol=1e-6)


def test_a_zero_probability_on_the_truth_is_clipped_like_keras():
    probs = np.zeros((1, 10), dtype=np.float32)
    probs[0, 2] = 1.0
    assert math.isclose(scores(probs, np.array([4]))["loss"], -math.log(1e-7), rel_tol=1e-6)


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    matrix = confusion_matrix(np.array([1, 1, 2, 9]), np.array([1, 7, 2, 9]))
    assert matrix.shape == (10, 10) and matrix.sum() == 4
    assert matrix[1, 1] == 1 and matrix[1, 7] == 1 and matrix[2, 2] == 1 and matrix[9, 9] == 1


def test_confident_errors_most_confident_first_ties_by_index():
    probs = probs_for([{0: 0.99}, {4: 0.8}, {2: 0.95}, {5: 0.8}, {6: 0.9}])
    labels = np.array([0, 1, 3, 8, 6])  # rows 1, 2 and 3 are wrong
    errors = confident_errors(probs, labels, count=2)
    assert errors == [
        {"index": 2, "label": 3, "predicted": 2, "confidence": 0.95},
        {"index": 1, "label": 1, "predicted": 4, "confidence": 0.8},
    ]
    assert [e["index"] for e in confident_errors(probs, labels, count=10)] == [2, 1, 3]


def test_no_errors_no_confident_errors():
    probs = probs_for([{0: 0.9}, {1: 0.9}])
    assert confident_errors(probs, np.array([0, 1]), count=5) == []


def test_summarize_gives_means_and_the_test_accuracy_spread():
    per_seed = {"1": {"val_accuracy": 0.9, "val_loss": 0.3, "test_accuracy": 0.8, "test_loss": 0.5},
                "2": {"val_accuracy": 0.7, "val_loss": 0.1, "test_accuracy": 0.9, "test_loss": 0.3}}
    out = summarize(per_seed)
    assert out == {"val_accuracy": 0.8, "val_loss": 0.2, "test_accuracy": 0.85, "test_accuracy_std": 0.070711,
                   "test_loss": 0.4}


def test_summarize_one_seed_has_no_spread_and_a_failed_arch_has_nothing():
    assert summarize({"1": {"val_accuracy": 0.9, "val_loss": 0.3, "test_accuracy": 0.8, "test_loss": 0.5}}
                     )["test_accuracy_std"] is None
    assert set(summarize({"1": {"epochs_run": 1}}).values()) == {None}


def test_summarize_spread_is_the_sample_standard_deviation_by_hand():
    # test accuracies 0.1 .. 0.4: squared deviations 0.0225 + 0.0025 + 0.0025 + 0.0225 = 0.05 over n - 1 = 3
    per_seed = {str(s): {"val_accuracy": 0.5, "val_loss": 1.0, "test_accuracy": a, "test_loss": 1.0}
                for s, a in enumerate([0.1, 0.2, 0.3, 0.4])}
    out = summarize(per_seed)
    assert out["test_accuracy"] == 0.25
    assert out["test_accuracy_std"] == round(math.sqrt(0.05 / 3), 6) == 0.129099
