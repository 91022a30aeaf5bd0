"""The reference way, as the original notebook did it, for `make bench` to time.

One process: for each arch, an LR range test with a per-batch callback that sets the
rate and logs Keras' `loss`, a pick (lowest logged loss, halved), then plain `fit` at
batch 32 with early stopping and `evaluate`, all on float64 arrays.
Usage: python -m bench.notebook   (needs data/raw from `dvc repro download`)
"""

from __future__ import annotations

import time

started = time.perf_counter()

import numpy as np  # noqa: E402

from stages.lib.data import read_raw, split_train_val  # noqa: E402
from stages.plumbing import paths  # noqa: E402
from stages.plumbing.cli import refuse, run  # noqa: E402
from stages.plumbing.params import load_params  # noqa: E402

USAGE = "usage: python -m bench.notebook"


def main(argv: list[str]) -> None:
    if argv:
        raise refuse(USAGE, argv, "no arguments")
    notebook()


def notebook() -> None:
    import keras  # as the notebook did: within the timed run, after the arguments are checked

    class RangeTest(keras.callbacks.Callback):
        def __init__(self, start_lr: float, factor: float):
            super().__init__()
            self.lr, self.factor, self.rates, self.losses = start_lr, factor, [], []

        def on_train_batch_end(self, batch, logs=None):
            self.rates.append(self.lr)
            self.losses.append(logs["loss"])
            self.lr *= self.factor
            self.model.optimizer.learning_rate = self.lr

    def build(hidden: tuple[int, ...], activation: str) -> keras.Model:
        return keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(),
                                 *(keras.layers.Dense(h, activation=activation) for h in hidden),
                                 keras.layers.Dense(10, activation="softmax")])

    params = load_params()
    full_train, test = read_raw(paths.RAW_DIR)
    train, val = split_train_val(full_train, params.data.val_size)
    x_train, x_val, x_test = (part.x / 255.0 for part in (train, val, test))  # float64, as in the notebook
    for name, arch in params.archs.items():
        keras.utils.set_random_seed(params.seed)
        model = build(arch.hidden, arch.activation)
        model.compile(optimizer=keras.optimizers.SGD(params.lr_range.start_lr),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        sweep = RangeTest(params.lr_range.start_lr, params.lr_range.factor)
        model.fit(x_train, train.y, batch_size=params.lr_range.batch_size, epochs=1, callbacks=[sweep], verbose=0)
        losses = np.array(sweep.losses)
        lr = sweep.rates[int(np.nanargmin(losses))] / 2

        keras.utils.set_random_seed(params.seed)
        model = build(arch.hidden, arch.activation)
        model.compile(optimizer=keras.optimizers.SGD(lr), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        model.fit(x_train, train.y, batch_size=params.train.batch_size, epochs=params.train.epochs,
                  validation_data=(x_val, val.y), verbose=0,
                  callbacks=[keras.callbacks.EarlyStopping(patience=params.train.patience,
                                                           restore_best_weights=True)])
        accuracy = model.evaluate(x_test, test.y, verbose=0)[1]
        print(f"notebook: {name}: lr {lr:.4g}, test accuracy {accuracy:.4f}, "
              f"{time.perf_counter() - started:.1f} s since start", flush=True)


if __name__ == "__main__":
    run(main, usage=USAGE)
