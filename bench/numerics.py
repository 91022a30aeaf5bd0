"""What `compute.numerics` and `compute.threads` cost, and whether they change the model
(`python -m bench.numerics [arch] [epochs] [rounds]`, part of `make bench`).

Each setting trains the arch (default: the first in params.yaml) for a few epochs in its own
process, started as the train stage starts TensorFlow, and prints seconds per epoch and
the sha256 of the trained weights: equal hashes mean byte-identical models. The settings take
turns for several rounds and each keeps its fastest: a busy or stalling machine only ever
slows a run down. Compare ratios within one run.
"""

from __future__ import annotations

import json
import subprocess
import sys

from stages.plumbing.cli import refuse, run
from stages.plumbing.params import load_params

USAGE = "usage: python -m bench.numerics [ARCH] [EPOCHS] [ROUNDS]"
SETTINGS = [("portable", 1), ("portable", 2), ("native", 1), ("native", 2)]

CHILD = """
import dataclasses, hashlib, json, sys, time
from stages.lib.data import load_prepared
from stages.plumbing import paths
from stages.plumbing.params import load_params
from stages.lib.tf_runtime import load_keras_model
cfg = json.loads(sys.argv[1])
params = load_params()
compute = dataclasses.replace(params.compute, numerics=cfg["numerics"], threads=cfg["threads"])
train = dataclasses.replace(params.train, epochs=cfg["epochs"], patience=cfg["epochs"])
km = load_keras_model(compute)
data = load_prepared(paths.PREPARED_DIR, parts=("train", "val"))
model = km.build_model(params.archs[cfg["arch"]], params.seed)
started = time.perf_counter()
run = km.train(model, 0.1, data, train, params.seed, compute)
seconds = time.perf_counter() - started
digest = hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest()
print(json.dumps({"seconds_per_epoch": seconds / len(run.rows), "weights": digest}))
"""


def main(argv: list[str]) -> None:
    if len(argv) > 3 or not all(arg.isdigit() and int(arg) > 0 for arg in argv[1:]):
        raise refuse(USAGE, argv, "EPOCHS and ROUNDS whole numbers > 0")
    params = load_params()
    arch = params.arch(argv[0]).name if argv else next(iter(params.archs))
    epochs = int(argv[1]) if len(argv) > 1 else 2
    rounds = int(argv[2]) if len(argv) > 2 else 3
    print(f"bench.numerics: {arch}, {epochs} epoch(s) of batch-32 SGD per setting, fastest of {rounds} rounds")
    results: dict[tuple[str, int], dict] = {}
    for _ in range(rounds):
        for numerics, threads in SETTINGS:
            cfg = {"arch": arch, "epochs": epochs, "numerics": numerics, "threads": threads}
            out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True,
                                 encoding="utf-8")
            if out.returncode != 0:
                raise SystemExit(f"{numerics}, {threads} thread(s) failed: {out.stderr.strip().splitlines()[-1]}")
            run = json.loads(out.stdout.strip().splitlines()[-1])
            best = results.setdefault((numerics, threads), run)
            if run["weights"] != best["weights"]:
                raise SystemExit(f"{numerics}, {threads} thread(s): two runs gave different weights")
            best["seconds_per_epoch"] = min(best["seconds_per_epoch"], run["seconds_per_epoch"])
    reference = results[SETTINGS[0]]
    for (numerics, threads), r in results.items():
        same = "same weights" if r["weights"] == reference["weights"] else "other weights"
        print(f"  {numerics:<9} {threads} thread(s)  {r['seconds_per_epoch']:6.2f} s/epoch  "
              f"{r['seconds_per_epoch'] / reference['seconds_per_epoch']:5.2f}x  {same} ({r['weights'][:16]})")


if __name__ == "__main__":
    run(main, usage=USAGE)
