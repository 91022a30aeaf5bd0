"""stages.lib.keras_model in-process, on tiny models and a few hundred tiny fake digits.

What the study's numbers rest on: the range test really applies start_lr * factor**step
at every batch, records each batch's own loss (not Keras' running mean) whatever
steps_per_execution is, stops on divergence, leaves the model that is trained
afterwards untouched; training keeps its best epoch; saved models are byte-stable
and a damaged model file fails with a message saying how to restore it.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import re
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from harness import tiny_mnist

from stages.lib import keras_model as km
from stages.lib.data import scale
from stages.lib.lr_finder import exponential_lrs, smooth
from stages.lib.schema import Arch, ComputeParams, LrRangeParams, TrainParams

SEED = 7
ARCH = Arch("tiny", (8,))
BATCH = 8
N_TRAIN = 300
STEPS = -(-N_TRAIN // BATCH)  # 38 batches per epoch, the last one partial
PLAIN = ComputeParams(steps_per_execution=1)


def sweep_params(start_lr: float = 0.01, factor: float = 1.05, *, epochs: int = 1, stop_factor: float = 4.0,
                 smoothing: float = 0.98) -> LrRangeParams:
    return LrRangeParams(start_lr=start_lr, factor=factor, batch_size=BATCH, epochs=epochs,
                         stop_factor=stop_factor, smoothing=smoothing, rule="flat_center")


def compute(steps_per_execution: int) -> ComputeParams:
    return ComputeParams(steps_per_execution=steps_per_execution)


@pytest.fixture(scope="module")
def xy() -> tuple[np.ndarray, np.ndarray]:
    arrays = tiny_mnist(n_train=N_TRAIN, n_test=50)
    return arrays["x_train"].astype(np.float32) / 255.0, arrays["y_train"].astype(np.int32)


@pytest.fixture(scope="module")
def split(xy) -> dict:
    x, y = xy
    return {"train": (x[50:], y[50:]), "val": (x[:50], y[:50])}


class Probe(keras.callbacks.Callback):
    """What the optimizer is about to use at each batch callback, and what Keras logs after it."""

    def __init__(self) -> None:
        super().__init__()
        self.begins: list[tuple[int, int, float]] = []  # (batch, optimizer.iterations, learning rate)
        self.logged: list[float] = []  # Keras' logs["loss"] at on_train_batch_end

    def on_train_batch_begin(self, batch, logs=None):
        opt = self.model.optimizer
        self.begins.append((batch, int(opt.iterations), float(opt.learning_rate)))

    def on_train_batch_end(self, batch, logs=None):
        self.logged.append(float(logs["loss"]))


def probed(model: keras.Model) -> Probe:
    """Add a Probe to the callbacks of the model's next fit (range_test takes none of its own)."""
    probe, fit = Probe(), model.fit

    def fit_with_probe(*args, callbacks=(), **kwargs):
        return fit(*args, callbacks=[*callbacks, probe], **kwargs)

    model.fit = fit_with_probe
    return probe


def weights_equal(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(a, b))


def quiet_train(*args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):  # train() fits with verbose=2
        return km.train(*args, **kwargs)


# --- the rate schedule ---------------------------------------------------------------------


@pytest.mark.parametrize("spe", [1, 4])
def test_optimizer_applies_start_lr_times_factor_pow_step_at_every_batch(xy, spe):
    x, y = xy
    p = sweep_params(0.01, 1.05, epochs=2)  # 76 batches, rates 0.01 .. 0.4: no divergence
    model = km.build_model(ARCH, SEED)
    probe = probed(model)
    sweep = km.range_test(model, x, y, p, SEED, compute(spe))

    total = 2 * STEPS
    assert sweep.curve.stop_step is None
    assert int(model.optimizer.iterations) == total  # every batch of both epochs ran once
    # Batch callbacks fire once per execution: at batches 0, spe, 2 spe, ... of each epoch.
    expected_steps = [epoch * STEPS + b for epoch in range(2) for b in range(0, STEPS, spe)]
    assert [it for _, it, _ in probe.begins] == expected_steps
    assert [b for b, _, _ in probe.begins] == [b for _ in range(2) for b in range(0, STEPS, spe)]
    applied = np.array([lr for _, _, lr in probe.begins])
    np.testing.assert_allclose(applied, exponential_lrs(0.01, 1.05, total)[expected_steps], rtol=1e-5)

    # The rates the sweep reports are the ones the optimizer used, one per recorded batch.
    assert len(sweep.curve.losses) == total
    np.testing.assert_array_equal(sweep.curve.lrs, exponential_lrs(0.01, 1.05, total))
    np.testing.assert_allclose(sweep.curve.lrs[expected_steps], applied, rtol=1e-5)


# --- the recorded losses -------------------------------------------------------------------


def test_sweep_records_each_batch_own_loss_not_the_running_mean(xy):
    x, y = xy
    p = sweep_params(1e-9, 1.000001)  # the weights barely move during the sweep
    model = km.build_model(ARCH, SEED)
    probe = probed(model)
    sweep = km.range_test(model, x, y, p, SEED, PLAIN)

    initial = km.build_model(ARCH, SEED)  # same initial weights, same global seed for the shuffle
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    expected = np.array([float(loss_fn(yb, initial(xb, training=False)))
                         for xb, yb in km.batches(x, y, BATCH, shuffle_seed=SEED)])
    assert len(expected) == STEPS
    np.testing.assert_allclose(sweep.curve.losses, expected, rtol=0, atol=1e-4)

    # Keras' own per-batch log is the running mean of the epoch, which the sweep must not record.
    running_mean = np.cumsum(expected) / np.arange(1, STEPS + 1)
    np.testing.assert_allclose(probe.logged, running_mean, rtol=0, atol=1e-3)
    assert np.max(np.abs(sweep.curve.losses - running_mean)) > 0.05
    assert np.ptp(expected) > 0.05  # the batches' own losses really differ from batch to batch

    np.testing.assert_allclose(sweep.curve.smoothed, smooth(sweep.curve.losses, p.smoothing), rtol=1e-12)


def test_losses_identical_whatever_steps_per_execution(xy):
    x, y = xy
    p = sweep_params(0.01, 1.05)
    one = km.range_test(km.build_model(ARCH, SEED), x, y, p, SEED, compute(1)).curve
    four = km.range_test(km.build_model(ARCH, SEED), x, y, p, SEED, compute(4)).curve
    assert len(one.losses) == len(four.losses) == STEPS
    np.testing.assert_array_equal(one.losses, four.losses)
    np.testing.assert_array_equal(one.smoothed, four.smoothed)
    assert one.stop_step is four.stop_step is None


def test_the_curve_knows_its_batches_and_epochs(xy):
    """What the notebook and fastai rules read besides the losses: batch sizes, epoch length, planned length."""
    x, y = xy
    curve = km.range_test(km.build_model(ARCH, SEED), x, y, sweep_params(0.01, 1.01, epochs=2), SEED, PLAIN).curve
    assert (curve.steps_per_epoch, curve.planned_steps, len(curve.losses)) == (STEPS, 2 * STEPS, 2 * STEPS)
    per_epoch = [BATCH] * (STEPS - 1) + [N_TRAIN - BATCH * (STEPS - 1)]  # 37 batches of 8, then the last 4
    assert curve.batch_sizes.tolist() == per_epoch * 2


def test_two_sweeps_on_fresh_identical_models_are_identical(xy):
    x, y = xy
    p = sweep_params(0.01, 1.1)
    first = km.range_test(km.build_model(ARCH, SEED), x, y, p, SEED, PLAIN)
    second = km.range_test(km.build_model(ARCH, SEED), x, y, p, SEED, PLAIN)
    assert len(first.curve.losses) >= 20
    np.testing.assert_array_equal(first.curve.losses, second.curve.losses)
    np.testing.assert_array_equal(first.curve.smoothed, second.curve.smoothed)
    assert (first.curve.stop_step, first.stop_reason) == (second.curve.stop_step, second.stop_reason)


# --- stopping --------------------------------------------------------------------------------


def test_sweep_stops_early_once_the_loss_diverges(xy):
    x, y = xy
    p = sweep_params(0.001, 1.5)  # the rate reaches ~1e3 by the end of the epoch
    model = km.build_model(ARCH, SEED)
    sweep = km.range_test(model, x, y, p, SEED, PLAIN)

    assert sweep.curve.stop_step is not None and sweep.curve.stop_step < STEPS - 1
    assert "above" in sweep.stop_reason and "best" in sweep.stop_reason
    # No rows after the stop, and training itself stopped there.
    assert len(sweep.curve.lrs) == len(sweep.curve.losses) == len(sweep.curve.smoothed) == sweep.curve.stop_step + 1
    assert int(model.optimizer.iterations) == sweep.curve.stop_step + 1
    # It stopped on the first row where the rule holds, not before or after.
    s = sweep.curve.smoothed
    assert s[-1] > p.stop_factor * np.min(s)
    assert all(s[i] <= p.stop_factor * np.min(s[: i + 1]) for i in range(len(s) - 1))


def test_divergence_stop_is_the_same_whatever_steps_per_execution(xy):
    x, y = xy
    p = sweep_params(0.001, 1.5)
    one = km.range_test(km.build_model(ARCH, SEED), x, y, p, SEED, compute(1))
    four = km.range_test(km.build_model(ARCH, SEED), x, y, p, SEED, compute(4))
    assert one.curve.stop_step is not None and one.curve.stop_step % 4 != 3  # the stop falls inside an execution
    assert four.curve.stop_step == one.curve.stop_step and four.stop_reason == one.stop_reason
    np.testing.assert_array_equal(four.curve.losses, one.curve.losses)  # batches run after the stop are dropped
    np.testing.assert_array_equal(four.curve.lrs, one.curve.lrs)


def test_non_finite_loss_stops_the_sweep(xy):
    x, y = xy
    # The first update at 1e20 overflows the weights; a huge stop_factor leaves only the NaN rule.
    # (A start_lr of 1e6 gives losses around 1e11 on this data, still finite.)
    p = sweep_params(1e20, 1.2, stop_factor=1e300)
    model = km.build_model(ARCH, SEED)
    sweep = km.range_test(model, x, y, p, SEED, PLAIN)

    assert sweep.curve.stop_step is not None and "non-finite" in sweep.stop_reason
    assert len(sweep.curve.losses) == sweep.curve.stop_step + 1 < STEPS
    assert not np.isfinite(sweep.curve.losses[-1])
    assert np.all(np.isfinite(sweep.curve.losses[:-1]))
    assert int(model.optimizer.iterations) == sweep.curve.stop_step + 1


# --- the model trained afterwards --------------------------------------------------------------


def test_sweep_does_not_change_the_model_built_for_training(xy):
    x, y = xy
    original = km.build_model(ARCH, SEED).get_weights()
    assert weights_equal(km.build_model(ARCH, SEED).get_weights(), original)
    assert not weights_equal(km.build_model(ARCH, SEED + 1).get_weights(), original)  # the seed matters

    swept = km.build_model(ARCH, SEED)
    km.range_test(swept, x, y, sweep_params(0.01, 1.05), SEED, PLAIN)
    assert not weights_equal(swept.get_weights(), original)  # the sweep did train its copy

    assert weights_equal(km.build_model(ARCH, SEED).get_weights(), original)


# --- training ----------------------------------------------------------------------------------


def batch_arrays(ds) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in ds))
    return np.concatenate(xs), np.concatenate(ys)


def test_batches_of_uint8_images_are_the_scaled_float_batches():
    arrays = tiny_mnist(n_train=100, n_test=10, seed=5)
    x, y = arrays["x_train"], arrays["y_train"].astype(np.int32)
    from_uint8 = batch_arrays(km.batches(x, y, 16, shuffle_seed=3))
    from_float = batch_arrays(km.batches(scale(x), y, 16, shuffle_seed=3))
    assert from_uint8[0].dtype == np.float32
    np.testing.assert_array_equal(from_uint8[0], from_float[0])
    np.testing.assert_array_equal(from_uint8[1], from_float[1])


def test_batches_come_in_the_order_shuffling_the_images_themselves_gives():
    """Shuffling indices must not change which images a batch holds: results stay as before."""
    arrays = tiny_mnist(n_train=100, n_test=10, seed=5)
    x, y = scale(arrays["x_train"]), arrays["y_train"].astype(np.int32)
    keras.utils.set_random_seed(7)
    ours = km.batches(x, y, 16, shuffle_seed=3)
    shuffled_images = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=3).batch(16)
    for _ in range(2):  # and again on the next epoch's reshuffle
        np.testing.assert_array_equal(batch_arrays(ours)[0], batch_arrays(shuffled_images)[0])


def test_train_returns_one_row_per_epoch_and_keeps_the_best_epoch(split, tmp_path):
    model = km.build_model(ARCH, SEED)
    lr = 50.0  # far too high: validation loss is best after the first epoch and worse after
    run = quiet_train(model, lr, split, TrainParams(epochs=3, batch_size=16, patience=20), SEED,
                      PLAIN, tmp_path / "logs")
    rows, best = run.rows, run.best_epoch
    assert run.failure is None

    assert [row["epoch"] for row in rows] == [0, 1, 2]
    for row in rows:
        assert {"loss", "accuracy", "val_loss", "val_accuracy", "lr"} <= set(row)
        assert row["lr"] == lr
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["val_accuracy"] <= 1
    val_losses = [row["val_loss"] for row in rows]
    assert best == int(np.argmin(val_losses))
    assert best != len(rows) - 1 and val_losses[-1] > 1.05 * val_losses[best]  # restoring matters here

    final = km.evaluate(model, *split["val"])
    assert final["loss"] == pytest.approx(val_losses[best], rel=1e-5)
    assert final["accuracy"] == pytest.approx(rows[best]["val_accuracy"], abs=1e-6)
    assert any(p.is_file() for p in (tmp_path / "logs").rglob("*"))  # TensorBoard wrote its log


def test_training_that_blows_up_to_nan_fails_and_keeps_the_last_finite_epoch(split):
    model = km.build_model(ARCH, SEED)
    run = quiet_train(model, 1e12, split, TrainParams(epochs=3, batch_size=16, patience=20), SEED, PLAIN)
    val_losses = np.array([row["val_loss"] for row in run.rows])
    if not np.isfinite(val_losses[0]):
        pytest.fail(f"precondition: expected a finite first epoch, got {val_losses}")
    assert len(run.rows) == 2 and not np.isfinite(run.rows[1]["loss"])  # stopped in the first NaN epoch
    assert run.failure.startswith("loss became nan") and "in epoch 2" in run.failure
    assert run.best_epoch == 0
    assert km.evaluate(model, *split["val"])["loss"] == pytest.approx(val_losses[0], rel=1e-5)


def test_training_with_dropout_drops_and_repeats_exactly(split):
    dropped = Arch("tiny", ARCH.hidden, dropout=0.5)
    x = split["train"][0][:20]
    model = km.build_model(dropped, SEED)
    assert np.array_equal(model(x, training=False), model.predict(x, verbose=0))
    assert not np.allclose(model(x, training=True), model(x, training=False))  # it drops, in training only
    runs = []
    for _ in range(2):
        model = km.build_model(dropped, SEED)
        quiet_train(model, 0.1, split, TrainParams(epochs=1, batch_size=16, patience=20), SEED, compute(4))
        runs.append(model.get_weights())
    assert weights_equal(*runs)  # seeded: the same units are dropped each time


# --- progress lines ------------------------------------------------------------------------------

SWEEP_LINE = re.compile(r"^lr_range@tiny: batch (\d+)/(\d+), rate (\S+), loss (\S+)$")
TRAIN_LINE = re.compile(r"^train@tiny seed 7: epoch (\d+)/2, batch (\d+)/(\d+), loss (\S+)$")


def printed(run):
    """(what ``run()`` returns, the lines it printed)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = run()
    return result, out.getvalue().splitlines()


def test_the_sweep_prints_a_line_per_tenth_with_its_batch_rate_and_own_loss(xy):
    x, y = xy
    p = sweep_params(0.01, 1.01)
    quiet = km.range_test(km.build_model(ARCH, SEED), x, y, p, SEED, PLAIN).curve
    sweep, lines = printed(lambda: km.range_test(km.build_model(ARCH, SEED), x, y, p, SEED, PLAIN,
                                                 progress="lr_range@tiny"))
    assert len(quiet.losses) == STEPS and np.array_equal(sweep.curve.losses, quiet.losses)  # the lines change nothing
    matches = [SWEEP_LINE.match(line) for line in lines]
    assert all(matches), lines
    done = [int(m[1]) for m in matches]
    assert done == [4, 8, 12, 16, 19, 23, 27, 31, 35]  # the first batch past each tenth of 38; none at the end
    for m, batch in zip(matches, done):
        assert int(m[2]) == STEPS
        assert m[3] == f"{0.01 * 1.01 ** (batch - 1):.3g}" and m[4] == f"{quiet.losses[batch - 1]:.3g}"


@pytest.mark.parametrize("spe", [4, 32])
def test_with_several_batches_per_execution_the_lines_come_per_execution_within_the_sweep(xy, spe):
    x, y = xy
    p = sweep_params(0.01, 1.01, epochs=2)
    _, lines = printed(lambda: km.range_test(km.build_model(ARCH, SEED), x, y, p, SEED, compute(spe),
                                             progress="lr_range@tiny"))
    done = [int(SWEEP_LINE.match(line)[1]) for line in lines]
    # calls come after batches spe, 2 spe, ... of each epoch, the last partial one capped at the epoch's end
    calls = [epoch * STEPS + min(k, STEPS) for epoch in range(2) for k in range(spe, STEPS + spe, spe)]
    assert done and set(done) <= set(calls) and done == sorted(done) and max(done) < 2 * STEPS
    tenths = [d * 10 // (2 * STEPS) for d in done]
    assert len(set(tenths)) == len(tenths)  # at most one line per tenth
    assert all(int(SWEEP_LINE.match(line)[2]) == 2 * STEPS for line in lines)


def test_no_line_speaks_of_batches_run_after_the_sweep_stopped(xy):
    """Within its last execution a sweep runs past its stop; those batches are not kept, and not shown."""
    x, y = xy
    sweep, lines = printed(lambda: km.range_test(km.build_model(ARCH, SEED), x, y, sweep_params(0.001, 1.5), SEED,
                                                 compute(8), progress="lr_range@tiny"))
    kept = len(sweep.curve.losses)
    assert kept < STEPS and kept % 8  # it stopped inside an execution
    done = [int(SWEEP_LINE.match(line)[1]) for line in lines]
    assert done and max(done) <= kept and max(done) + 8 > kept  # every execution before the stop, not the last


def test_training_prints_lines_per_epoch_and_trains_the_same(split):
    params = TrainParams(epochs=2, batch_size=16, patience=20)
    quiet = km.build_model(ARCH, SEED)
    quiet_train(quiet, 0.1, split, params, SEED, PLAIN)
    model = km.build_model(ARCH, SEED)
    _, lines = printed(lambda: km.train(model, 0.1, split, params, SEED, PLAIN, progress="train@tiny seed 7"))
    assert weights_equal(model.get_weights(), quiet.get_weights())
    ours = [TRAIN_LINE.match(line) for line in lines if line.startswith("train@")]
    steps = -(-(N_TRAIN - 50) // 16)  # 16 batches per epoch
    assert [(int(m[1]), int(m[2])) for m in ours] == [(epoch, b) for epoch in (1, 2) for b in (2, 4, 5, 7, 8, 10, 12,
                                                                                              13, 15)]
    assert all(int(m[3]) == steps and float(m[4]) > 0 for m in ours)


# --- saving and loading ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(split, tmp_path_factory):
    model = km.build_model(ARCH, SEED)
    quiet_train(model, 0.1, split, TrainParams(epochs=1, batch_size=16, patience=20), SEED, PLAIN)
    path = tmp_path_factory.mktemp("saved") / "tiny.keras"
    km.save_model(model, path)
    return model, path


def a_year_later(monkeypatch) -> None:
    """Move the clocks a save reads (the save date in metadata.json, zip entry dates) a year ahead."""
    shift = 366 * 24 * 3600
    real_time, real_datetime = time.time, datetime.datetime

    class Later(real_datetime):
        @classmethod
        def now(cls, tz=None):
            return real_datetime.now(tz) + datetime.timedelta(seconds=shift)

    monkeypatch.setattr(time, "time", lambda: real_time() + shift)
    monkeypatch.setattr(datetime, "datetime", Later)


def test_save_model_writes_the_same_bytes_for_the_same_model(trained, tmp_path, monkeypatch):
    model, first = trained
    raw_now = tmp_path / "raw-now.keras"
    model.save(raw_now)
    a_year_later(monkeypatch)  # rather than waiting for the clock to move
    raw_later = tmp_path / "raw-later.keras"
    model.save(raw_later)
    assert raw_now.read_bytes() != raw_later.read_bytes()  # control: Keras' own file records when it was saved
    second = tmp_path / "again.keras"
    km.save_model(model, second)
    assert first.read_bytes() == second.read_bytes()
    assert not list(tmp_path.glob(".*"))  # no temporary files left beside the model


def test_the_saved_file_loads_back_in_keras_with_the_same_predictions(trained, split):
    """Users may load models/<arch>/seed-<n>.keras themselves: the normalised archive must stay valid."""
    model, path = trained
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = split["val"][0]
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert weights_equal(loaded.get_weights(), model.get_weights())
