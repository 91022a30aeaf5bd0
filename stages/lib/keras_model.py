"""Everything that needs TensorFlow: building, sweeping, training and saving models.

Stages import this module through stages.lib.tf_runtime.load_keras_model, which fixes
the numerics before TensorFlow loads, and only after params.yaml has been validated,
so a typo never waits for TensorFlow to start.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from stages.ground.atomic import atomic_path
from stages.lib.lr_finder import Curve, Stopper, batch_sizes, exponential_lrs
from stages.lib.schema import IMAGE_SHAPE, Arch, ComputeParams, LrRangeParams, TrainParams

EVAL_BATCH_SIZE = 1000  # only speed depends on it: loss and accuracy are means over all images
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed entry date: same weights, same bytes


def use_threads(intra_op: int) -> None:
    """TensorFlow fixes its thread pools when it runs its first op: call this before."""
    tf.config.threading.set_intra_op_parallelism_threads(intra_op)


def set_seed(seed: int) -> None:
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def build_model(arch: Arch, seed: int, image_shape: tuple[int, ...] = IMAGE_SHAPE) -> keras.Model:
    """The Keras layers arch.layers names (schema.Layer: Flatten, Dense, ...) after an Input, seeded init."""
    set_seed(seed)
    layers = [keras.Input(image_shape)]
    layers += [getattr(keras.layers, layer.kind)(**layer.options, name=layer.name) for layer in arch.layers]
    return keras.Sequential(layers, name=arch.name)


def batches(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle_seed: int | None = None) -> tf.data.Dataset:
    """Batches gathered by index from the arrays in memory, reshuffled each epoch when a seed is given.

    Shuffling indices, not images, keeps tf.data's per-element work and its shuffle buffer
    small; the order is the same as shuffling the images with the same seed. uint8 images are
    scaled to float32 in [0, 1] per batch, exactly as data.scale does.
    """
    images, labels = tf.constant(x), tf.constant(y)
    ds = tf.data.Dataset.range(len(x))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)

    def gather(index):
        batch = tf.gather(images, index)
        if batch.dtype == tf.uint8:
            batch = tf.cast(batch, tf.float32) / 255.0
        return batch, tf.gather(labels, index)

    return ds.batch(batch_size).map(gather).prefetch(tf.data.AUTOTUNE)


class BatchLossRecorder(keras.metrics.Metric):
    """Keeps the real loss of every batch of the epoch.

    Keras 3 hands batch callbacks the running mean of the epoch, and with
    steps_per_execution > 1 only every n-th batch; this metric runs inside the
    train step, so it sees each batch's own loss whatever the callback cadence.
    """

    def __init__(self, capacity: int, name: str = "batch_loss"):
        super().__init__(name=name)
        self.loss_fn = keras.losses.SparseCategoricalCrossentropy()
        self.losses = self.add_variable(shape=(capacity,), initializer="zeros", name="losses")
        self.count = self.add_variable(shape=(), initializer="zeros", dtype="int32", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        loss = self.loss_fn(y_true, y_pred)
        index = keras.ops.reshape(self.count, (1, 1))
        self.losses.assign(keras.ops.scatter_update(self.losses, index, keras.ops.reshape(loss, (1,))))
        self.count.assign_add(1)

    def result(self):
        return self.losses[keras.ops.maximum(self.count - 1, 0)]


class RangeTestCallback(keras.callbacks.Callback):
    """Collects the recorder's losses and stops the sweep once the loss diverges."""

    def __init__(self, recorder: BatchLossRecorder, stopper: Stopper):
        super().__init__()
        self.recorder = recorder
        self.stopper = stopper
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self.stop_step: int | None = None
        self.stop_reason: str | None = None
        self._seen = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._seen = 0

    def on_train_batch_end(self, batch, logs=None):
        count = int(self.recorder.count.numpy())
        new = self.recorder.losses.numpy()[self._seen:count]
        self._seen = count
        for loss in new:
            if self.stop_step is not None:
                return  # batches run after the stop within one execution are not kept
            smoothed, reason = self.stopper.update(float(loss))
            self.losses.append(float(loss))
            self.smoothed.append(smoothed)
            if reason:
                self.stop_step, self.stop_reason = len(self.losses) - 1, reason
                self.model.stop_training = True


class Progress(keras.callbacks.Callback):
    """A line each time a tenth more of the batches is done, for a fit that runs long in silence.

    Training counts batches per epoch (``train@base seed 42: epoch 1/1, batch 200/422, loss 0.41``: the epoch's
    running mean, as Keras' epoch line gives it); a sweep, given ``rate`` (its rate at a batch), counts them over
    all its epochs, as its rate grows with each (``lr_range@base: batch 120/469, rate 0.031, loss 1.92``: that
    batch's own loss). It reads only the logs Keras hands on and its counts: nothing is added to the train step,
    so no number changes, and the lines depend on nothing but those counts.

    With steps_per_execution > 1 Keras calls back once per execution, with the index of its last batch (which
    the epoch's last, partial execution overshoots): a line comes at the first call past each tenth.
    """

    PARTS = 10

    def __init__(self, label: str, loss_key: str = "loss", rate: Callable[[int], float] | None = None):
        super().__init__()
        self.label, self.loss_key, self.rate = label, loss_key, rate
        self._epoch = 0
        self._parts_shown = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if self.rate is None:
            self._parts_shown = 0

    def on_train_batch_end(self, batch, logs=None):
        steps = self.params["steps"]
        if not steps or self.model.stop_training:
            return  # a dataset of unknown length (not batches()'), or batches run after a stop, which are not kept
        done = min(batch + 1, steps) + (self._epoch * steps if self.rate else 0)
        total = steps * self.params["epochs"] if self.rate else steps
        part = done * self.PARTS // total
        if part <= self._parts_shown or part >= self.PARTS:  # the end has its own line: Keras' or the stage's
            return
        self._parts_shown = part
        where = (f"batch {done}/{total}, rate {self.rate(done - 1):.3g}" if self.rate else
                 f"epoch {self._epoch + 1}/{self.params['epochs']}, batch {done}/{total}")
        print(f"{self.label}: {where}, loss {float(logs[self.loss_key]):.3g}", flush=True)


@dataclass
class Sweep:
    curve: Curve  # every batch run, the one the stop rule fired on last
    stop_reason: str | None


def range_test(model: keras.Model, x: np.ndarray, y: np.ndarray, p: LrRangeParams, seed: int,
               compute: ComputeParams, progress: str | None = None) -> Sweep:
    """SGD with the rate growing by ``factor`` every batch; the schedule lives in the optimizer.

    Args:
        progress: the label of the progress lines (Progress) printed while it runs; None for none.
    """
    steps_per_epoch = -(-len(x) // p.batch_size)
    schedule = keras.optimizers.schedules.ExponentialDecay(p.start_lr, decay_steps=1, decay_rate=p.factor)
    recorder = BatchLossRecorder(steps_per_epoch)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=schedule),
                  loss=keras.losses.SparseCategoricalCrossentropy(), metrics=[recorder],
                  steps_per_execution=compute.steps_per_execution)
    callback = RangeTestCallback(recorder, Stopper(p.smoothing, p.stop_factor))
    callbacks = [callback]
    if progress is not None:
        callbacks.append(Progress(progress, recorder.name,
                                  lambda step: exponential_lrs(p.start_lr, p.factor, step + 1)[-1]))
    model.fit(batches(x, y, p.batch_size, shuffle_seed=seed), epochs=p.epochs, callbacks=callbacks,
              shuffle=False, verbose=0)  # the dataset shuffles itself
    n = len(callback.losses)
    curve = Curve(exponential_lrs(p.start_lr, p.factor, n), np.array(callback.losses), np.array(callback.smoothed),
                  batch_sizes(len(x), p.batch_size, n), steps_per_epoch, steps_per_epoch * p.epochs,
                  callback.stop_step, p.smoothing, p.stop_factor)
    return Sweep(curve, callback.stop_reason)


@dataclass
class Training:
    rows: list[dict]  # one per epoch: loss, accuracy, val_loss, val_accuracy, lr
    best_epoch: int | None  # the epoch whose weights the model ends with; None if none was finite
    failure: str | None  # why the run has no usable result, or None


class AfterEachEpoch(keras.callbacks.Callback):
    """Calls ``scores(model)`` at the end of every epoch, before early stopping restores the best weights."""

    def __init__(self, scores: Callable[[keras.Model], dict[str, float]]):
        super().__init__()
        self.scores = scores
        self.rows: list[dict[str, float]] = []

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append(self.scores(self.model))


def train(model: keras.Model, lr: float, data: dict, p: TrainParams, seed: int, compute: ComputeParams,
          log_dir: Path | None = None, epoch_scores: Callable[[keras.Model], dict[str, float]] | None = None,
          progress: str | None = None) -> Training:
    """Plain SGD at ``lr`` with early stopping on val_loss; the model ends at its best epoch.

    A NaN or infinite loss stops training at once and is reported as the failure.

    Args:
        log_dir: where TensorBoard's logs go; None for none.
        epoch_scores: called with the model after every epoch; what it returns joins that epoch's row
            (the evidence's test scores per epoch: recorded, never used to choose).
        progress: the label of the progress lines (Progress) printed within each epoch; None for none.
    """
    (x_train, y_train), (x_val, y_val) = data["train"], data["val"]
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"],
                  steps_per_execution=compute.steps_per_execution)
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=p.patience, restore_best_weights=True),
    ]
    if log_dir is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(log_dir), profile_batch=0, write_graph=False))
    if progress is not None:
        callbacks.append(Progress(progress))
    after_epoch = AfterEachEpoch(epoch_scores or (lambda model: {}))
    callbacks.insert(0, after_epoch)  # first: EarlyStopping may restore the best weights in its own epoch end
    history = model.fit(batches(x_train, y_train, p.batch_size, shuffle_seed=seed), epochs=p.epochs,
                        validation_data=batches(x_val, y_val, EVAL_BATCH_SIZE),
                        callbacks=callbacks, shuffle=False, verbose=2)  # the dataset shuffles itself
    rows = [
        {"epoch": epoch, **{key: float(values[epoch]) for key, values in history.history.items()}, "lr": lr,
         **after_epoch.rows[epoch]}
        for epoch in range(len(history.epoch))
    ]
    return Training(rows, best_epoch(rows), training_failure(rows, lr))


def best_epoch(rows: list[dict]) -> int | None:
    """The epoch EarlyStopping keeps: lowest finite val_loss (NaN epochs never count)."""
    val_losses = np.array([row["val_loss"] for row in rows], dtype=np.float64)
    finite = np.isfinite(val_losses)
    return int(np.argmin(np.where(finite, val_losses, np.inf))) if finite.any() else None


def training_failure(rows: list[dict], lr: float) -> str | None:
    for row in rows:
        if not (np.isfinite(row["loss"]) and np.isfinite(row["val_loss"])):
            return (f"loss became {row['loss']:g} (val_loss {row['val_loss']:g}) in epoch {row['epoch'] + 1} "
                    f"at rate {lr:.4g}: the rate is too high for this network")
    return None


def layer_weights(model: keras.Model) -> tuple[tuple[np.ndarray, ...], ...]:
    """Each layer's weights after the Input, in Keras' order (a Dense layer's kernel and bias): mlp.Mlp's weights."""
    return tuple(tuple(weight.numpy() for weight in layer.weights) for layer in model.layers)


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Loss and accuracy over all of (x, y)."""
    scores = model.evaluate(batches(x, y, EVAL_BATCH_SIZE), return_dict=True, verbose=0)
    return {key: float(value) for key, value in scores.items()}


def save_model(model: keras.Model, path: Path) -> None:
    """Save a .keras file whose bytes depend only on the model, not on when it was saved."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".save.") as work:
        raw = Path(work) / "model.keras"
        model.save(raw)
        with atomic_path(path) as tmp:
            normalize_keras_archive(raw, tmp)


def normalize_keras_archive(src: Path, dst: Path) -> None:
    """Copy a .keras zip minus what changes from save to save of the same model.

    That is: zip entry dates, the save date in metadata.json, and the memory
    addresses Keras uses as shared_object_id in config.json (renumbered 0, 1, ...).
    """
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "metadata.json":
                meta = json.loads(data)
                meta.pop("date_saved", None)
                data = json.dumps(meta, sort_keys=True).encode()
            elif info.filename == "config.json":
                data = json.dumps(_renumber_shared_ids(json.loads(data), {}), sort_keys=True).encode()
            entry = zipfile.ZipInfo(info.filename, date_time=ZIP_EPOCH)
            entry.compress_type = info.compress_type
            entry.external_attr = 0o644 << 16
            zout.writestr(entry, data)


def _renumber_shared_ids(node, ids: dict):
    if isinstance(node, dict):
        return {
            key: ids.setdefault(value, len(ids)) if key == "shared_object_id" else _renumber_shared_ids(value, ids)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_renumber_shared_ids(item, ids) for item in node]
    return node
