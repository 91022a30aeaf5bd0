"""The report's figures: valid PNGs, written atomically, byte-identical for identical inputs."""

from __future__ import annotations

from functools import partial

import matplotlib.image as mpimg
import numpy as np
import pytest

from stages.lib.figures import (
    confident_errors_figure,
    confusion_figure,
    digit_grid_figure,
    learning_curves_figure,
    lr_rules_figure,
)
from stages.lib.lr_finder import RULES


def digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28)).astype(np.uint8), rng.integers(0, 10, n)


def confusion(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = rng.integers(0, 4, (10, 10)) * rng.integers(0, 2, (10, 10))  # sparse errors, some zero cells
    return m + np.diag(rng.integers(900, 1100, 10))


def errors(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"index": int(rng.integers(0, 20)), "label": int(rng.integers(0, 10)),
             "predicted": int(rng.integers(0, 10)), "confidence": float(rng.uniform(0.5, 1))} for _ in range(n)]


def history(seeds: tuple[int, ...], epochs: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"seed": s, "epoch": e, "loss": float(rng.uniform(0, 1)), "val_loss": float(rng.uniform(0, 1)),
             "accuracy": float(rng.uniform(0.8, 1)), "val_accuracy": float(rng.uniform(0.8, 1))}
            for s in seeds for e in range(epochs)]


def draw(tmp_path, name: str, figure, *args) -> tuple[bytes, tuple[int, ...]]:
    """Draw into its own folder; check it holds only a PNG (no temp files); return bytes and shape."""
    folder = tmp_path / name
    path = folder / "fig.png"
    figure(*args, path)
    assert [p.name for p in folder.iterdir()] == ["fig.png"]
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG")
    return data, mpimg.imread(path).shape


def sweep(n: int = 80) -> tuple[dict[str, np.ndarray], dict]:
    """(curve, range-test record) of a falling then diverging sweep; every rule picks, but fastai_slide."""
    lr = 0.001 * 1.1 ** np.arange(n)
    smoothed = 2.3 * np.exp(-np.arange(n) / 15) + 0.3 + np.where(np.arange(n) > 70, 0.3 * (np.arange(n) - 70), 0)
    picks = {rule: {"lr": float(lr[10 + 8 * k]), "step": 10 + 8 * k} for k, rule in enumerate(RULES)}
    picks["fastai_slide"] = {"error": "only 12 usable points"}
    return {"lr": lr, "loss": smoothed + 0.05, "smoothed_loss": smoothed}, {"stop_step": n - 1, "picks": picks}


IMAGES = digits(20)[0]
CURVE, SWEEP = sweep()
CASES = {
    "digit_grid": (digit_grid_figure, digits(12), (*digits(12)[:1], digits(12, seed=1)[1])),
    "confusion": (confusion_figure, ({"a": confusion(0), "b": confusion(1), "c": confusion(2)},),
                  ({"a": confusion(0), "b": confusion(1), "c": confusion(3)},)),
    "confident_errors": (confident_errors_figure, ({"a": errors(4), "b": errors(2, 1)}, IMAGES),
                         ({"a": errors(4), "b": errors(2, 2)}, IMAGES)),
    "learning_curves": (learning_curves_figure, ({"a": history((1, 2), 5), "b": history((1,), 5, 1)},),
                        ({"a": history((1, 2), 5), "b": history((1,), 5, 2)},)),
    # the rule an arch trained with is drawn larger; one with a fixed rate (None) has none
    "lr_rules": (lr_rules_figure, ({"a": CURVE}, {"a": SWEEP}, {"a": "flat_center"}),
                 ({"a": CURVE}, {"a": SWEEP}, {"a": None})),
}


@pytest.mark.parametrize("name", CASES)
def test_same_inputs_same_bytes_and_different_inputs_different_bytes(tmp_path, name):
    figure, args, other = CASES[name]
    first, _ = draw(tmp_path, "first", figure, *args)
    again, _ = draw(tmp_path, "again", figure, *args)
    changed, _ = draw(tmp_path, "changed", figure, *other)
    assert first == again
    assert first != changed


def test_overwriting_leaves_only_the_figure(tmp_path):
    path = tmp_path / "fig.png"
    digit_grid_figure(*digits(3), path)
    digit_grid_figure(*digits(3, seed=1), path)
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]


def test_digit_grid_rows_follow_the_image_count(tmp_path):
    _, one = draw(tmp_path, "one", digit_grid_figure, *digits(1))
    _, row = draw(tmp_path, "row", digit_grid_figure, *digits(10))
    _, rows = draw(tmp_path, "rows", digit_grid_figure, *digits(21))  # 3 rows, the last with one digit
    assert one[0] == row[0] < rows[0]
    assert one[1] < row[1] == rows[1]  # a lone digit does not get nine blank columns


def test_digit_grid_columns(tmp_path):
    _, wide = draw(tmp_path, "wide", digit_grid_figure, *digits(12))
    _, narrow = draw(tmp_path, "narrow", partial(digit_grid_figure, columns=4), *digits(12))
    assert narrow[0] > wide[0] and narrow[1] < wide[1]


def test_confusion_single_arch_is_one_panel(tmp_path):
    _, one = draw(tmp_path, "one", confusion_figure, {"a": confusion(0)})
    _, two = draw(tmp_path, "two", confusion_figure, {"a": confusion(0), "b": confusion(1)})
    _, three = draw(tmp_path, "three", confusion_figure, {"a": confusion(0), "b": confusion(1), "c": confusion(2)})
    assert one[1] < two[1] == three[1]
    assert one[0] == two[0] < three[0]


def test_confusion_without_errors(tmp_path):
    draw(tmp_path, "perfect", confusion_figure, {"a": np.diag(np.full(10, 1000))})


def test_confident_errors_with_an_arch_without_errors(tmp_path):
    _, both = draw(tmp_path, "both", confident_errors_figure, {"a": errors(3), "b": []}, IMAGES)
    _, alone = draw(tmp_path, "alone", confident_errors_figure, {"a": errors(3)}, IMAGES)
    assert both[0] > alone[0] and both[1] == alone[1]
    draw(tmp_path, "none", confident_errors_figure, {"a": [], "b": []}, IMAGES)


def test_confident_errors_row_grows_with_the_most_errors(tmp_path):
    _, few = draw(tmp_path, "few", confident_errors_figure, {"a": errors(2), "b": errors(1, 1)}, IMAGES)
    _, many = draw(tmp_path, "many", confident_errors_figure, {"a": errors(2), "b": errors(6, 1)}, IMAGES)
    assert many[1] > few[1]


def test_learning_curves_one_epoch_and_several_seeds(tmp_path):
    draw(tmp_path, "one_epoch", learning_curves_figure, {"a": history((0,), 1)})
    draw(tmp_path, "seeds", learning_curves_figure, {"a": history((3, 1, 2), 4), "b": history((1, 2), 4, 1)})


def test_learning_curves_later_seeds_are_drawn(tmp_path):
    base = history((1,), 4)
    extra = history((2,), 4, seed=5)
    alone, _ = draw(tmp_path, "alone", learning_curves_figure, {"a": base})
    with_seed, _ = draw(tmp_path, "with_seed", learning_curves_figure, {"a": base + extra})
    assert alone != with_seed


def test_lr_rules_one_panel_per_arch(tmp_path):
    _, one = draw(tmp_path, "one", lr_rules_figure, {"a": CURVE}, {"a": SWEEP}, {"a": "notebook"})
    _, three = draw(tmp_path, "three", lr_rules_figure, {k: CURVE for k in "abc"}, {k: SWEEP for k in "abc"},
                    {"a": "notebook", "b": None, "c": "lightning"})
    assert one[0] < three[0] and one[1] < three[1]
