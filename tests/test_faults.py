"""Every fault ends in one true message: a catalogue of faults, each met the way a user meets it.

Each fault is set up in a throwaway project (tests/test_failures.py's Project: tiny data, one tiny
arch) on top of everything its stage or script needs; then the stage or script runs as a
subprocess. Checked for every fault: a non-zero exit; exactly one `error:` or `params.yaml:` line,
first on stderr, naming the file or key and the fix; no traceback; no file outside the run's
declared outputs (dvc.yaml) changed or removed; and, once the fault is undone, the same run (for a
wrong argument: the right one) succeeds.

Faults live in files (damaged arrays, JSON, CSV, model files, params.yaml) or in the process: a
prelude patches one function before the stage starts, for a full disk (ENOSPC), a missing
permission (EACCES; the tests run as root, whom chmod does not stop, so a patch stands in for
it; the chmod test runs only for other users), a read-only file system and an out-of-memory error.
lr_range and train run with test_failures.py's stand-in keras_model (plus a stand-in training), so
no subprocess here starts TensorFlow.

Under `dvc repro` a user meets only some of these: DVC reruns a stage whose outputs were changed, so
damaged outputs are repaired rather than met. What remains (params.yaml and resources) runs under
real `dvc repro` in a tiny DVC project at the end.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml
from harness import (
    ARCH,
    DVC,
    FAKE_KERAS_MODEL,
    HEADER_DAMAGE,
    ROOT,
    SEED,
    Project,
    Result,
    declare_huge_kernel,
    edit_config,
    edit_weights,
    install_models,
    set_dense,
    snapshot,
    tiny_mnist,
    tiny_params,
    tiny_project,
    write_idx_folder,
    write_prepared,
    write_train_json,
)

from stages.lib.idx import encode_idx
from stages.plumbing import paths

RULE = "flat_center"  # the tests' params' lr_range.rule
NEEDS_STAND_IN = {"lr_range", "train"}  # what imports keras_model
MESSAGE_STARTS = ("error: ", "params.yaml: ")
FIX_MARKERS = ("`", "rerun", "usage:", "expected")  # a command to run, what to do, or what is expected


# --- running a stage or script, and checking what it did --------------------------------------------


def stand_in(model: Path) -> str:
    """The harness's stand-in keras_model (FAKE_KERAS_MODEL), plus a stand-in one-epoch training that saves the
    real tiny ``model``."""
    return FAKE_KERAS_MODEL + textwrap.dedent(f"""
        import shutil as _shutil, types as _types
        _row = {{"epoch": 0, "loss": 2.0, "accuracy": 0.3, "val_loss": 1.9, "val_accuracy": 0.35, "lr": 0.1}}
        fake.train = lambda *args, **kwargs: _types.SimpleNamespace(rows=[_row], best_epoch=0, failure=None)
        fake.save_model = lambda model, path: _shutil.copyfile({str(model)!r}, path)
        fake.evaluate = lambda model, x, y: {{"accuracy": 0.5, "loss": 1.5}}
    """)


def run(project: Project, made: Made, args: tuple[str, ...], patch: str = "") -> Result:
    prelude = (stand_in(made.models[SEED]) if args[0] in NEEDS_STAND_IN else "") + patch
    return project.script(prelude, *args) if prelude else project.stage(*args)


def declared_outputs(args: tuple[str, ...]) -> list[str]:
    """What this run may write or replace: its stage's outputs (paths.OUTPUTS, which test_paths holds against
    dvc.yaml)."""
    if "." in args[0]:
        return []  # the scripts behind make targets checked here write nothing when they fail
    return stage_outputs("@".join(args[:2]))


def assert_one_message(result: Result, code: int, expect: tuple[str, ...]) -> None:
    result.assert_clean_exit(code)  # this code, no traceback
    lines = result.stderr.splitlines()
    messages = [line for line in lines if line.startswith(MESSAGE_STARTS)]
    assert len(messages) == 1 and lines[0] == messages[0], result.stderr
    assert any(marker in result.stderr for marker in FIX_MARKERS), result.stderr
    for text in expect:
        assert text in result.stderr, f"{text!r} not in {result.stderr!r}"


def assert_only_outputs_changed(before: dict, after: dict, outputs: list[str]) -> None:
    """No file outside ``outputs`` changed, removed or added (folders may be created)."""
    def outside(rel: str) -> bool:
        return not any(rel == out or rel.startswith(out + "/") for out in outputs)
    changed = [rel for rel, data in before.items() if outside(rel) and after.get(rel, "removed") != data]
    added = [rel for rel, data in after.items() if outside(rel) and rel not in before and data is not None]
    assert changed == [] and added == [], (changed, added)


def restore(root: Path, good: dict, keep: tuple[str, ...] = ()) -> None:
    """Undo the fault: the project exactly as ``good`` (a snapshot) has it, except in folders ``keep``."""
    def kept(rel: str) -> bool:
        return any(rel == folder or rel.startswith(folder + "/") for folder in keep)
    for rel in sorted(set(snapshot(root)) - set(good), reverse=True):
        path = root / rel
        if not kept(rel):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for rel, data in good.items():
        if kept(rel):
            continue
        if data is None:
            (root / rel).mkdir(parents=True, exist_ok=True)
        else:
            (root / rel).write_bytes(data)


# --- the good state each run needs ----------------------------------------------------------------


@dataclass(frozen=True)
class Made:
    """Made once per module: the tiny models, and a tiny project the whole pipeline ran in."""
    models: dict[int, Path]
    pipeline: Path


@pytest.fixture(scope="module")
def made(tiny_models, dvc_project) -> Made:
    return Made(tiny_models, dvc_project.root)


def nothing(p: Project, made: Made) -> None:
    pass


def raw(p: Project, made: Made) -> None:
    write_idx_folder(p.root / "data" / "raw", tiny_mnist(seed=0))


def prepared(p: Project, made: Made) -> None:
    write_prepared(p.root, seed=0)


def for_evaluate(p: Project, made: Made) -> None:
    write_prepared(p.root, seed=0)
    write_train_json(p.root)
    install_models(p.root, made.models)


def for_train(p: Project, made: Made) -> None:
    """data/prepared and the range test's pick."""
    write_prepared(p.root, seed=0)
    path = p.root / "reports" / "lr_range" / f"{ARCH}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"arch": ARCH, "picks": {RULE: {"lr": 0.1, "step": 20}}}) + "\n")


def for_report(p: Project, made: Made) -> None:
    """What the whole pipeline (with the stand-in training) made for the same tiny data and arch."""
    for folder in ("data/prepared", "models", "reports"):
        shutil.copytree(made.pipeline / folder, p.root / folder, dirs_exist_ok=True)


def for_report_with_curves(p: Project, made: Made) -> None:
    """More than one epoch: the report reads the training histories too."""
    p.params["train"]["epochs"] = 2
    p.write_params()
    for_report(p, made)


# --- faults in files ----------------------------------------------------------------------------------


def put(rel: str, data: bytes | str) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        (root / rel).write_bytes(data.encode() if isinstance(data, str) else data)
    return damage


def edit_json(rel: str, change: Callable[[object], object]) -> Callable[[Path], None]:
    """``change`` edits the parsed file in place (what it returns is ignored); json.dumps writes NaN as NaN."""
    def damage(root: Path) -> None:
        data = json.loads((root / rel).read_text())
        change(data)
        (root / rel).write_text(json.dumps(data))
    return damage


def edit_text(rel: str, change: Callable[[str], str]) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        (root / rel).write_text(change((root / rel).read_text()))
    return damage


def edit_model(editor: Callable[[Path, Path], Path]) -> Callable[[Path], None]:
    """Rewrite models/<arch>/seed-<n>.keras with one of the harness's model-file editors."""
    def damage(root: Path) -> None:
        model = root / "models" / ARCH / f"seed-{SEED}.keras"
        original = root.parent / "original.keras"
        shutil.copyfile(model, original)
        editor(original, model)
        original.unlink()
    return damage


def edit_params(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        params = yaml.safe_load((root / "params.yaml").read_text())
        change(params)
        (root / "params.yaml").write_text(yaml.safe_dump(params))
    return damage


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def pop(key: str) -> Callable[[dict], None]:
    return lambda d: d.pop(key)


# --- faults in the process -----------------------------------------------------------------------------


def failing(target: str, when: str, error: str) -> str:
    """Prelude: ``target`` ("module:attribute", like "pathlib:Path.write_bytes") raises ``error`` when the
    expression ``when`` is true of its ``args`` and ``kwargs``, and works as before otherwise."""
    module, attribute = target.split(":")
    return textwrap.dedent(f"""
        import errno, os, {module} as _target
        _real = _target.{attribute}
        def _patched(*args, **kwargs):
            if {when}:
                raise {error}
            return _real(*args, **kwargs)
        _target.{attribute} = _patched
    """)


DISK_FULL = "OSError(errno.ENOSPC, 'No space left on device')"
NO_MEMORY = "MemoryError('Unable to allocate 2.92 GiB for an array with shape (10000, 78400) and data type float32')"


@dataclass(frozen=True)
class Fault:
    run: tuple[str, ...]  # the stage (or dotted script module) and its arguments
    inputs: Callable[[Project, Made], None]  # the good state the run needs
    expect: tuple[str, ...]  # what the message must say: the file or key, and the fix
    damage: Callable[[Path], None] | None = None  # the fault, in files
    patch: str = ""  # the fault, in the process
    code: int = 1
    fixed: tuple[str, ...] | None = None  # the right run, for a wrong argument


EVALUATE, TRAIN, LR_RANGE = ("evaluate", ARCH), ("train", ARCH), ("lr_range", ARCH)
REPORT, SPLIT = ("report",), ("split",)
PREPARED_FIX = "`dvc checkout data/prepared` or rebuild with `dvc repro -f split`"
MODEL = f"models/{ARCH}/seed-{SEED}.keras"
MODEL_FIX = f"`dvc checkout models/{ARCH}` or retrain with `dvc repro -f train@{ARCH}`"
TRAIN_JSON, LR_JSON = f"reports/train/{ARCH}.json", f"reports/lr_range/{ARCH}.json"
EVALUATION, ERRORS = f"reports/evaluation/{ARCH}.json", f"reports/errors/{ARCH}.json"
CURVE = f"reports/lr_range/{ARCH}.csv"
EVALUATE_FIX, TRAIN_FIX, LR_RANGE_FIX = (f"`dvc repro -f {stage}@{ARCH}`"
                                        for stage in ("evaluate", "train", "lr_range"))

FAULTS = {
    # -- data arrays: numpy used to raise tokenize.TokenError, MemoryError, ...; labels crashed the scoring
    "npy-header-that-does-not-parse": Fault(EVALUATE, for_evaluate, ("data/prepared/x_test.npy", PREPARED_FIX),
                                            put("data/prepared/x_test.npy", HEADER_DAMAGE["unclosed-parenthesis"])),
    "npy-header-declaring-280-GB": Fault(LR_RANGE, prepared, ("data/prepared/x_train.npy", "280,000,000,000 bytes"),
                                         put("data/prepared/x_train.npy", HEADER_DAMAGE["huge-shape"])),
    "npy-of-python-objects": Fault(TRAIN, for_train, ("data/prepared/y_val.npy", PREPARED_FIX),
                                   put("data/prepared/y_val.npy", HEADER_DAMAGE["object-dtype"])),
    "npy-of-an-unknown-format-version": Fault(EVALUATE, for_evaluate, ("data/prepared/x_val.npy", PREPARED_FIX),
                                              put("data/prepared/x_val.npy", HEADER_DAMAGE["unknown-version"])),
    "labels-that-are-not-digits": Fault(EVALUATE, for_evaluate,
                                        ("data/prepared/y_test.npy", "not digits", PREPARED_FIX),
                                        put("data/prepared/y_test.npy", npy(np.full(100, 12, np.uint8)))),
    "raw-images-that-are-not-28x28": Fault(SPLIT, raw, ("data/raw/t10k-images-idx3-ubyte: its sha256 is not "
                                                        "data.sha256's", "`dvc checkout data/raw`"),
                                           put("data/raw/t10k-images-idx3-ubyte",
                                               encode_idx(np.zeros((100, 784), np.uint8)))),
    # -- what an earlier stage wrote, valid JSON or CSV with the wrong content
    "train-record-with-no-runs": Fault(EVALUATE, for_evaluate, (f"{TRAIN_JSON}: runs has 0 entries", TRAIN_FIX),
                                       edit_json(TRAIN_JSON, lambda d: d.update(runs=[]))),  # was StopIteration
    "train-record-with-a-text-seed": Fault(EVALUATE, for_evaluate, (f"{TRAIN_JSON}: runs[0].seed is '42'", TRAIN_FIX),
                                           edit_json(TRAIN_JSON, lambda d: d["runs"][0].update(seed="42"))),
    "train-record-that-is-a-list": Fault(EVALUATE, for_evaluate,
                                         (f"{TRAIN_JSON}: the whole file is [], not a mapping", TRAIN_FIX),
                                         put(TRAIN_JSON, "[]")),
    "train-record-without-its-rate": Fault(EVALUATE, for_evaluate, (f"{TRAIN_JSON}: lr is missing", TRAIN_FIX),
                                           edit_json(TRAIN_JSON, pop("lr"))),
    "train-record-nested-too-deeply": Fault(EVALUATE, for_evaluate, (f"{TRAIN_JSON}: nested too deeply", TRAIN_FIX),
                                            put(TRAIN_JSON, "[" * 100_000 + "]" * 100_000)),  # was RecursionError
    "train-record-that-is-not-text": Fault(EVALUATE, for_evaluate, (f"{TRAIN_JSON}: not UTF-8 text", TRAIN_FIX),
                                           put(TRAIN_JSON, b'{"lr": \xff\xfe}')),
    "range-test-without-the-rules-pick": Fault(TRAIN, for_train, (f"{LR_JSON}: picks.{RULE} is missing", LR_RANGE_FIX),
                                               edit_json(LR_JSON, lambda d: d["picks"].clear())),
    "range-test-pick-that-is-text": Fault(TRAIN, for_train, (f"{LR_JSON}: picks.{RULE} is {{'lr': 'fast'",),
                                          edit_json(LR_JSON, lambda d: d["picks"][RULE].update(lr="fast"))),
    "range-test-pick-that-is-nan": Fault(TRAIN, for_train, (f"{LR_JSON}: picks.{RULE}.lr is nan", LR_RANGE_FIX),
                                         edit_json(LR_JSON, lambda d: d["picks"][RULE].update(lr=float("nan")))),
    "metrics-with-a-nan-accuracy": Fault(REPORT, for_report, (f"{EVALUATION}: test_accuracy is nan", EVALUATE_FIX),
                                         edit_json(EVALUATION, lambda d: d.update(test_accuracy=float("nan")))),
    "metrics-without-an-accuracy": Fault(REPORT, for_report, (f"{EVALUATION}: test_accuracy null for an arch that did "
                                                              "not fail", EVALUATE_FIX),
                                         edit_json(EVALUATION, lambda d: d.update(test_accuracy=None))),
    "curve-without-a-column": Fault(REPORT, for_report, (f"{CURVE}: its header", "has no column smoothed_loss",
                                                         LR_RANGE_FIX),
                                    edit_text(CURVE, lambda t: t.replace("smoothed_loss", "smoothed", 1))),
    "history-with-a-fractional-epoch": Fault(REPORT, for_report_with_curves,
                                             (f"reports/history/{ARCH}.csv: line 2, column epoch is '0.5'", TRAIN_FIX),
                                             edit_text(f"reports/history/{ARCH}.csv",
                                                       lambda t: t.replace(",0,", ",0.5,", 1))),
    "metrics-with-an-unscored-seed": Fault(REPORT, for_report, (f"{EVALUATION}: seeds.{SEED}.val_accuracy missing for "
                                                                "an arch that did not fail", EVALUATE_FIX),
                                           edit_json(EVALUATION, lambda d: d["seeds"][str(SEED)].pop("val_accuracy"))),
    "range-test-without-a-rules-pick": Fault(REPORT, for_report, (f"{LR_JSON}: picks.notebook is missing",
                                                                  LR_RANGE_FIX),
                                             edit_json(LR_JSON, lambda d: d["picks"].pop("notebook"))),
    # -- model files: sizes checked before anything is read
    "model-declaring-a-313-GB-kernel": Fault(EVALUATE, for_evaluate, (MODEL, "has shape (784, 100000000)", MODEL_FIX),
                                             edit_model(lambda src, dst: edit_weights(src, dst,
                                                                                      declare_huge_kernel(10**8)))),
    "model-config-of-a-billion-units": Fault(
        EVALUATE, for_evaluate, (MODEL, "(units=1000000000, activation='relu') in config.json, Dense 'hidden_0' "
                                 "(units=8, activation='relu') in params.yaml's arch", MODEL_FIX),
        edit_model(lambda src, dst: edit_config(src, dst, set_dense("units", 10**9)))),
    # -- resources
    "disk-full-writing-metrics": Fault(
        EVALUATE, for_evaluate, (f"error: {EVALUATION}: no space left on the device: free some space",),
        patch=failing("pathlib:Path.write_bytes", f"args[0].name.startswith('.{ARCH}.json.')", DISK_FULL)),
    "disk-full-writing-prepared-arrays": Fault(
        SPLIT, raw, ("error: data/prepared: no space left on the device",),
        patch=failing("numpy:save", "True", DISK_FULL)),
    "permission-denied-creating-a-temporary-file": Fault(
        LR_RANGE, prepared, (f"error: {CURVE}: permission denied: let this user read and write it",),
        patch=failing("tempfile:mkstemp", f"kwargs.get('prefix') == '.{ARCH}.csv.'",
                      "PermissionError(errno.EACCES, 'Permission denied', "
                      "os.path.join(str(kwargs['dir']), kwargs['prefix'] + 'a1b2c3' + kwargs['suffix']))")),
    "permission-denied-reading-prepared-arrays": Fault(
        EVALUATE, for_evaluate, ("error: data/prepared/x_val.npy: permission denied",),
        patch=failing("builtins:open", "str(args[0]).endswith('x_val.npy')",
                      "PermissionError(errno.EACCES, 'Permission denied', str(args[0]))")),
    "read-only-file-system": Fault(
        TRAIN, for_train, (f"error: reports/history/{ARCH}.csv: read-only file system",),
        patch=failing("os:replace", f"str(args[1]).endswith('history/{ARCH}.csv')",
                      "OSError(errno.EROFS, 'Read-only file system', str(args[0]), str(args[1]))")),
    "out-of-memory-scoring": Fault(EVALUATE, for_evaluate, ("error: out of memory (Unable to allocate 2.92 GiB",
                                                            "smaller"),
                                   patch=failing("stages.lib.mlp:Mlp.predict", "True", NO_MEMORY)),
    "out-of-memory-loading-arrays": Fault(LR_RANGE, prepared, ("error: out of memory",),
                                          patch=failing("numpy:load", "True", NO_MEMORY)),
    # -- params.yaml: exit 2, before anything is read or TensorFlow starts
    "params-arch-of-a-billion-units": Fault(LR_RANGE, prepared, ("params.yaml: archs.base.hidden: too big",
                                                                "at most 50,000,000 parameters"),
                                            edit_params(lambda p: p["archs"][ARCH].update(hidden=[10**9])), code=2),
    "params-arch-of-too-many-layers": Fault(SPLIT, raw, ("params.yaml: archs.base.hidden: too many hidden layers",),
                                            edit_params(lambda p: p["archs"][ARCH].update(hidden=[1] * 101)), code=2),
    "params-arch-name-too-long-for-a-file": Fault(
        SPLIT, raw, ("architecture name too long for file names", "at most 100 characters"),
        edit_params(lambda p: p["archs"].update({"a" * 230: {"hidden": [8]}})), code=2),
    "params-yes-for-a-seed": Fault(SPLIT, raw, ("params.yaml: seed: wrong type (got 'yes'",),
                                   edit_text("params.yaml", lambda t: t.replace("seed: 42", "seed: yes")), code=2),
    "params-duplicate-key": Fault(SPLIT, raw, ("params.yaml: seed: duplicate key (got it on lines",),
                                  edit_text("params.yaml", lambda t: t + "seed: 7\n"), code=2),
    "params-nan-smoothing": Fault(SPLIT, raw, ("params.yaml: lr_range.smoothing: out of range (got nan",),
                                  edit_text("params.yaml", lambda t: t.replace("smoothing: 0.98", "smoothing: .nan")),
                                  code=2),
    "params-tab-for-indentation": Fault(SPLIT, raw, ("params.yaml: not valid YAML: line 3, column 1", "rerun"),
                                        edit_text("params.yaml", lambda t: t.replace("\n  ", "\n\t", 1)), code=2),
    # -- wrong arguments to every script behind a make target (and a stage)
    "evaluate-without-its-arch": Fault(("evaluate",), for_evaluate, ("usage: python -m stages.evaluate <arch>",),
                                       fixed=EVALUATE),
    "compare-with-two-revisions": Fault(("scripts.compare", "main", "HEAD"), nothing,
                                        ("usage: python -m scripts.compare [REV]",),
                                        code=2, fixed=("scripts.compare", "--help")),
    "compare-with-no-such-revision": Fault(("scripts.compare", "no-such-branch"), nothing,
                                           ("'no-such-branch' is not a git branch, tag or commit here",),
                                           code=2, fixed=("scripts.compare", "--help")),
    "prune-with-an-unknown-option": Fault(("scripts.prune", "--force"), nothing,
                                          ("usage: python -m scripts.prune [--dry-run] (got '--force')",),
                                          code=2, fixed=("scripts.prune", "--dry-run")),
    "check-lock-with-an-argument": Fault(("scripts.check_lock", "--now"), nothing,
                                         ("usage: python -m scripts.check_lock (got '--now')",),
                                         code=2, fixed=("scripts.check_lock", "--help")),
    "prune-remote-with-an-unknown-option": Fault(("scripts.prune_remote", "--force"), nothing,
                                                 ("usage: python -m scripts.prune_remote [--dry-run] (got '--force')",),
                                                 code=2, fixed=("scripts.prune_remote", "--help")),
    "preflight-with-an-argument": Fault(("scripts.preflight", "now"), nothing,
                                        ("usage: python -m scripts.preflight (got 'now')",),
                                        code=2, fixed=("scripts.preflight", "--help")),
    "lanes-with-no-lane": Fault(("scripts.lanes", "-j", "0"), nothing,
                                ("-j (make's JOBS) takes a number of lanes, 1 or more (got '0')",), code=2,
                                fixed=("scripts.lanes", "--help")),
    "worker-with-a-shard-out-of-range": Fault(("scripts.worker", "--shard", "2/2"), nothing,
                                              ("--shard takes I/N with 0 <= I < N <= 1,000 (got '2/2')",),
                                              code=2, fixed=("scripts.worker", "--help")),
    "slurm-with-no-worker": Fault(("scripts.slurm", "--workers", "0"), nothing,
                                  ("WORKERS takes a whole number from 1 to 1,000 (got '0')",),
                                  code=2, fixed=("scripts.slurm", "--help")),
    "bench-slurm-with-an-argument": Fault(("bench.slurm", "--quick"), nothing,
                                          ("usage: python -m bench.slurm (got '--quick')",),
                                          code=2, fixed=("bench.slurm", "--help")),
    "bench-slurm-projection-with-workers-not-a-number": Fault(("bench.slurm_projection", "x"), nothing,
                                                              ("WORKERS from 1 to 1,000 (got 'x')",),
                                                              code=2, fixed=("bench.slurm_projection", "--help")),
    "bench-noop-with-an-argument": Fault(("bench.noop", "--quick"), nothing, ("usage: python -m bench.noop",),
                                         code=2, fixed=("bench.noop", "--help")),
    "plots-html-with-an-option": Fault(("scripts.plots_html", "--json"), nothing,
                                       ("usage: python -m scripts.plots_html [TARGET ...] (got '--json')",),
                                       code=2, fixed=("scripts.plots_html", "--help")),
    "bench-with-an-unknown-option": Fault(("bench.run", "--quick"), nothing, ("usage: python -m bench.run",),
                                          code=2, fixed=("bench.run", "--help")),
    "bench-numerics-with-epochs-not-a-number": Fault(("bench.numerics", ARCH, "two"), nothing,
                                                     ("usage: python -m bench.numerics [ARCH] [EPOCHS]",),
                                                     code=2, fixed=("bench.numerics", "--help")),
    "bench-numerics-with-an-unknown-arch": Fault(("bench.numerics", "nope"), nothing,
                                                 ("params.yaml: archs: no architecture named 'nope'",), code=2,
                                                 fixed=("bench.numerics", "--help")),
    "bench-variants-with-an-unknown-arch": Fault(("bench.variants", "nope"), nothing,
                                                 ("params.yaml: archs: no architecture named 'nope'",), code=2,
                                                 fixed=("bench.variants", "--help")),
    "bench-workers-with-an-argument": Fault(("bench.workers", "--now"), nothing, ("usage: python -m bench.workers",),
                                            code=2, fixed=("bench.workers", "--help")),
    "bench-notebook-with-an-argument": Fault(("bench.notebook", "base"), nothing,
                                             ("usage: python -m bench.notebook",), code=2,
                                             fixed=("bench.notebook", "--help")),
}


@pytest.mark.parametrize("name", FAULTS)
@pytest.mark.slow  # made: the tiny project `dvc repro` ran in
def test_a_fault_is_one_true_message_and_a_rerun_recovers(project, made, name):
    fault = FAULTS[name]
    fault.inputs(project, made)
    good = snapshot(project.root)
    if fault.damage is not None:
        fault.damage(project.root)
    before = snapshot(project.root)

    result = run(project, made, fault.run, fault.patch)

    assert_one_message(result, fault.code, fault.expect)
    assert_only_outputs_changed(before, snapshot(project.root), declared_outputs(fault.run))
    restore(project.root, good)
    run(project, made, fault.fixed or fault.run).assert_clean_exit(0)


def test_the_catalogue_covers_every_script_behind_a_make_target():
    scripts = {f"{folder}.{path.stem}" for folder in ("scripts", "bench") for path in (ROOT / folder).glob("*.py")
               if "\ndef main(" in path.read_text(encoding="utf-8")}  # entry points, not the modules they share
    assert scripts == {f.run[0] for f in FAULTS.values() if "." in f.run[0]}
    assert len(FAULTS) >= 40


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod: the permission-denied faults above "
                                             "patch the error in instead")
@pytest.mark.slow
def test_a_folder_without_write_permission(project, made):
    for_evaluate(project, made)
    folder = project.root / "reports" / "metrics"
    folder.mkdir(parents=True)
    folder.chmod(0o555)
    try:
        result = run(project, made, EVALUATE)
    finally:
        folder.chmod(0o755)
    assert_one_message(result, 1, (f"error: {EVALUATION}: permission denied",))
    run(project, made, EVALUATE).assert_clean_exit(0)


# --- no silent NaN, no silent cost --------------------------------------------------------------------


def nan_kernel(h5) -> None:
    h5["layers/dense/vars/0"][0, 0] = np.nan


@pytest.mark.slow
def test_a_model_with_nan_weights_fails_its_arch_instead_of_scoring_ten_percent(project, made):
    """Such a model's outputs are NaN, whose argmax is class 0: ~10 % accuracy, written as a result."""
    for_report(project, made)
    edit_model(lambda src, dst: edit_weights(src, dst, nan_kernel))(project.root)

    result = run(project, made, EVALUATE)

    result.assert_clean_exit(0)  # as for a failed training: the arch failed, the stage did its job
    reason = f"seed {SEED}: the model's outputs on the val set are not finite (NaN or infinite weights)"
    assert f"evaluate@{ARCH}: FAILED: {reason}" in result.stdout
    metrics = json.loads((project.root / EVALUATION).read_text(), parse_constant=lambda c: pytest.fail(c))
    assert metrics["failed"] == reason
    assert metrics["test_accuracy"] is None and metrics["val_accuracy"] is None
    assert metrics["seeds"] == {str(SEED): {"epochs_run": 1, "best_epoch": 0}}  # and no scores
    assert json.loads((project.root / ERRORS).read_text())["confusion"] is None
    report = run(project, made, REPORT)
    report.assert_clean_exit(1)  # the report is written, and the pipeline does not look green
    assert report.stderr == f"error: training failed for:\n  {ARCH}: {reason}\n"
    assert f"**{ARCH} failed**: {reason}." in (project.root / "reports" / "report.md").read_text()


@pytest.mark.slow
def test_a_long_training_says_what_it_will_cost_before_it_starts(project, made):
    project.params["train"]["repeats"] = 1000
    project.write_params()
    for_train(project, made)
    timings = project.root / "reports" / "timings" / f"{ARCH}.train.json"
    timings.parent.mkdir(parents=True)
    timings.write_text('{"seconds": 4.38, "cpu_seconds_per_epoch": 4.38}\n')
    before = snapshot(project.root)
    stop_at_the_first_training = "def _stop(*args, **kwargs):\n    raise KeyboardInterrupt\nfake.train = _stop\n"

    result = run(project, made, TRAIN, stop_at_the_first_training)

    result.assert_clean_exit(130)
    assert result.stdout.splitlines() == [
        f"train@{ARCH}: up to 1 epoch(s) × 16 steps × 1,000 seed(s); about 73 min at most, at the last run's "
        f"4.38 CPU s/epoch (reports/timings/{ARCH}.train.json)"]
    assert_only_outputs_changed(before, snapshot(project.root), [])  # nothing written (but empty folders)


# --- the faults a user meets under `dvc repro` -----------------------------------------------------------

# Imported by every Python process started with the tiny DVC project's environment: for the stages
# that would start TensorFlow it installs the stand-in, and for the module TEST_FAULT_MODULE names
# it runs the patch in the file TEST_FAULT_PATCH names. DVC's own process matches neither.
SITECUSTOMIZE = textwrap.dedent("""
    import os as _os, sys as _sys
    _argv = getattr(_sys, "orig_argv", [])
    _module = _argv[2] if len(_argv) > 2 and _argv[1] == "-m" else None
    if _module in ("stages.lr_range", "stages.train"):
        exec(compile(open(_os.environ["TEST_STAND_IN"]).read(), "stand-in", "exec"))
    if _module is not None and _module == _os.environ.get("TEST_FAULT_MODULE"):
        exec(compile(open(_os.environ["TEST_FAULT_PATCH"]).read(), "fault", "exec"))
""")


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory, tiny_models) -> Project:
    """This repo's stages and dvc.yaml in a tiny git + DVC project (the stage project's params), `dvc repro`
    run once with the stand-in training and committed."""
    base = tmp_path_factory.mktemp("dvc")
    source = base / "mnist"
    site = base / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    (site / "stand_in.py").write_text(stand_in(tiny_models[SEED]))
    p = tiny_project(base, tiny_params(source, write_idx_folder(source, tiny_mnist(seed=0))),
                     env={"PYTHONPATH": f"{site}{os.pathsep}{base / 'project'}", "PYTHONDONTWRITEBYTECODE": "1",
                          "TEST_STAND_IN": str(site / "stand_in.py")})
    p.dvc("repro")
    p.commit("tiny project, reproduced")
    return p


# Faults of the catalogue above as a user meets them under `dvc repro`: the stage that meets each, and
# the command (a resource fault needs a stage that runs: the one its fix would rerun).
DVC_SUBSET = {
    "params-arch-of-a-billion-units": (f"lr_range@{ARCH}", ("repro",)),
    "params-arch-of-too-many-layers": (f"lr_range@{ARCH}", ("repro",)),
    "params-arch-name-too-long-for-a-file": (f"lr_range@{'a' * 230}", ("repro",)),
    "params-yes-for-a-seed": (f"lr_range@{ARCH}", ("repro",)),
    "params-nan-smoothing": (f"lr_range@{ARCH}", ("repro",)),
    "disk-full-writing-metrics": (f"evaluate@{ARCH}", ("repro", "-f", f"evaluate@{ARCH}")),
    "disk-full-writing-prepared-arrays": ("split", ("repro", "-f", "split")),
    "permission-denied-reading-prepared-arrays": (f"evaluate@{ARCH}", ("repro", "-f", f"evaluate@{ARCH}")),
    "out-of-memory-scoring": (f"evaluate@{ARCH}", ("repro", "-f", f"evaluate@{ARCH}")),
}


def stage_outputs(stage: str) -> list[str]:
    """``stage``'s outputs; none for a stage dvc.yaml does not have (like evaluate without its arch)."""
    return [path.as_posix() for path in paths.stage_outputs(stage) or {}]


@pytest.mark.slow
@pytest.mark.parametrize("name", DVC_SUBSET)
def test_a_fault_under_dvc_repro_is_one_true_message_and_a_rerun_recovers(dvc_project, tmp_path, name):
    fault, (stage, command) = FAULTS[name], DVC_SUBSET[name]
    p = dvc_project.copy(tmp_path / "project")
    env = dict(p.env, PYTHONPATH=p.env["PYTHONPATH"].replace(str(dvc_project.root), str(p.root)))
    good = snapshot(p.root)
    if fault.damage is not None:
        fault.damage(p.root)
    faulty_env = env
    if fault.patch:
        (tmp_path / "patch.py").write_text(fault.patch)
        faulty_env = dict(env, TEST_FAULT_MODULE=f"stages.{stage.partition('@')[0]}",
                          TEST_FAULT_PATCH=str(tmp_path / "patch.py"))
    before = snapshot(p.root)

    done = p.call(DVC, *command, env=faulty_env)

    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "Traceback" not in output, output
    ours = [line for line in output.splitlines() if line.startswith(MESSAGE_STARTS)]
    assert len(ours) == 1, output
    for text in fault.expect:
        assert text in output, output
    assert f"ERROR: failed to reproduce '{stage}'" in output, output  # and DVC names the stage
    after = snapshot(p.root)
    removed = [rel for rel in before if rel not in after and not rel.startswith((".dvc/", ".git/"))]
    assert all(rel.startswith(tuple(stage_outputs(stage))) for rel in removed), removed
    # The outputs are in the state the message gives: exactly the ones it calls missing are.
    state = [line for line in output.splitlines() if line.startswith(f"`dvc repro` removed {stage}'s outputs")]
    assert len(state) == 1, output
    named = re.search(r", so (.+?) (?:is|are) missing: ", state[0]).group(1).split(", ")
    assert sorted(named) == sorted(rel for rel in stage_outputs(stage) if not (p.root / rel).exists()), state[0]
    restore(p.root, good, keep=(".git", ".dvc"))  # DVC's own records stay as the failed run left them
    done = p.call(DVC, *command, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
