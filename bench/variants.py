"""Which training settings make a batch-32 SGD epoch fast here (`python -m bench.variants`).

Each variant runs in its own process (TensorFlow's thread settings are fixed at start-up)
and trains one epoch of an arch from params.yaml on data/prepared, as the train stage
does; it prints seconds per epoch and the test-free final training loss, so settings
that change results show up too. Figures from one run on a possibly busy machine.
"""

from __future__ import annotations

import json
import subprocess
import sys

from stages.plumbing.cli import run
from stages.plumbing.params import load_params

USAGE = "usage: python -m bench.variants [ARCH ...]"
VARIANTS = {
    "spe=1": {"spe": 1},
    "spe=32": {"spe": 32},
    "spe=128": {"spe": 128},
    "spe=32, 1 inter-op thread": {"spe": 32, "inter": 1},
    "spe=128, 1 inter-op thread": {"spe": 128, "inter": 1},
    "spe=32, 1 intra-op thread": {"spe": 32, "intra": 1},
    "spe=32, 1+1 threads": {"spe": 32, "intra": 1, "inter": 1},
    "spe=32, jit_compile": {"spe": 32, "jit": True},
}

CHILD = """
import json, os, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
cfg = json.loads(sys.argv[1])
import tensorflow as tf
if "intra" in cfg:
    tf.config.threading.set_intra_op_parallelism_threads(cfg["intra"])
if "inter" in cfg:
    tf.config.threading.set_inter_op_parallelism_threads(cfg["inter"])
import keras
from stages.lib import keras_model as km
from stages.lib.data import load_prepared
from stages.plumbing import paths
from stages.plumbing.params import load_params
params = load_params()
(x, y), = load_prepared(paths.PREPARED_DIR, parts=("train",)).values()
model = km.build_model(params.archs[cfg["arch"]], params.seed)
model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy",
              steps_per_execution=cfg["spe"], jit_compile=cfg.get("jit", False))
data = km.batches(x, y, 32, shuffle_seed=params.seed)
model.fit(data.take(64), epochs=1, verbose=0)  # tracing and warm-up, not timed
started = time.perf_counter()
history = model.fit(data, epochs=1, verbose=0)
print(json.dumps({"seconds": time.perf_counter() - started, "loss": history.history["loss"][-1]}))
"""


def main(argv: list[str]) -> None:
    params = load_params()
    archs = [params.arch(name).name for name in argv or ["base", "wide3"]]
    for arch in archs:
        print(f"{arch}: one epoch of batch-32 SGD")
        for name, cfg in VARIANTS.items():
            out = subprocess.run([sys.executable, "-c", CHILD, json.dumps({**cfg, "arch": arch})],
                                 capture_output=True, text=True, encoding="utf-8")
            if out.returncode != 0:
                print(f"  {name:<28} failed: {out.stderr.strip().splitlines()[-1]}")
                continue
            result = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  {name:<28} {result['seconds']:6.2f} s   loss {result['loss']:.6f}", flush=True)


if __name__ == "__main__":
    run(main, usage=USAGE)
