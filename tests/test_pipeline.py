"""The whole pipeline end to end: real `git` and `dvc repro` on tiny data in a temporary project.

One module-scoped fixture builds the project (this repo's stages/, scripts/ and dvc.yaml, the
tests' own params with tiny data and two tiny archs) and builds it from nothing with `dvc repro`.
The params include the evidence section (params are checked whole), but the evidence pipeline
(evidence/dvc.yaml) is tests/test_evidence_pipeline.py's: its file is not in this project, so no test
here can start its costly stages.
Checks that change the project work on their own copy of it, so they do not depend on each other.
No network: the only data source is a local folder of tiny IDX files, and DVC's analytics,
update check and Studio are switched off.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from harness import (
    COMMAND_TIMEOUT_S,
    COMPARING_BLOCKS,
    COMPARING_DOC,
    DVC,
    ROOT,
    RUNNING,
    VAL_SIZE,
    WITH_DEFAULT_SIGINT,
    Command,
    Project,
    as_after_make_setup,
    bash_blocks,
    kill_group,
    ran,
    read_until,
    results,
    snapshot,
    tiny_mnist,
    tiny_params,
    tiny_project,
    wait_for,
    write_idx_folder,
)

from stages.evaluate import CONFIDENT_ERRORS
from stages.lib.idx import IDX_FILES, parse_idx
from stages.lib.lr_finder import RULES, exponential_lrs
from stages.lib.shapes import METRIC_KEYS
from stages.plumbing import paths

pytestmark = pytest.mark.slow

# base: the arch docs/comparing.md's commands use, and example params' evidence.long_rules.arch
ARCHS = {"base": {"hidden": [8]}, "b": {"hidden": [6, 4]}}
N_TRAIN, N_TEST = 300, 100
LR_RANGE = {"batch_size": 8, "epochs": 2, "factor": 1.15, "start_lr": 0.001}
TRAIN = {"epochs": 2, "batch_size": 16}
SEED = 42  # params.yaml's: the only training seed of the main pipeline (train.repeats 1)
MIN_SWEEP_ROWS = 30  # the rules trim 10 rows at the start and 5 at the end and need 10
ALL_STAGES = {"download", "split", "report", *(f"{s}@{a}" for s in ("lr_range", "train", "evaluate") for a in ARCHS)}
STANDALONE_B = re.compile(r"(?<![\w`/.@-])b(?![\w`/.@-])")  # arch b's name, not a letter in a word
TRAINING_STARTED_S = 600  # from `dvc repro` to Keras' first epoch line: a few seconds of TensorFlow start


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> tuple[Path, dict[str, str], dict[str, np.ndarray]]:
    arrays = tiny_mnist(n_train=N_TRAIN, n_test=N_TEST)
    folder = tmp_path_factory.mktemp("mnist_idx")
    return folder, write_idx_folder(folder, arrays), arrays


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_data) -> tuple[Project, str]:
    """The tiny project, and the output of the `dvc repro` that built it from nothing."""
    folder, sums, _ = tiny_data
    p = tiny_project(tmp_path_factory.mktemp("pipeline"),
                     tiny_params(folder, sums, ARCHS, lr_range=LR_RANGE, train=TRAIN))
    return p, p.dvc("repro")


@pytest.fixture(scope="module")
def project(built) -> Project:
    return built[0]


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def table_rows(markdown: str, arch: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith(f"| {arch} |")]


# --- the first run ---------------------------------------------------------------------------


def test_first_repro_runs_every_stage_and_no_other(built):
    project, output = built
    assert sorted(ran(output)) == sorted(ALL_STAGES), output
    assert project.status() == {}


def test_data_outputs(project, tiny_data):
    _, _, arrays = tiny_data
    raw = project.root / "data" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(IDX_FILES)
    for key, name in zip(("x_train", "y_train", "x_test", "y_test"), IDX_FILES):
        np.testing.assert_array_equal(parse_idx((raw / name).read_bytes(), name), arrays[key])

    prepared = project.root / "data" / "prepared"
    sizes = {"train": N_TRAIN - VAL_SIZE, "val": VAL_SIZE, "test": N_TEST}
    assert sorted(p.name for p in prepared.iterdir()) == sorted(f"{k}_{part}.npy" for k in "xy" for part in sizes)
    for part, n in sizes.items():
        x = np.load(prepared / f"x_{part}.npy", allow_pickle=False)
        y = np.load(prepared / f"y_{part}.npy", allow_pickle=False)
        assert x.shape == (n, 28, 28) and x.dtype == np.uint8 and y.shape == (n,)
    # Validation is the first val_size training images.
    np.testing.assert_array_equal(np.load(prepared / "x_val.npy"), arrays["x_train"][:VAL_SIZE])
    np.testing.assert_array_equal(np.load(prepared / "x_train.npy"), arrays["x_train"][VAL_SIZE:])


def dense_units(model: Path) -> list[int]:
    with zipfile.ZipFile(model) as z:
        layers = json.loads(z.read("config.json"))["config"]["layers"]
    return [layer["config"]["units"] for layer in layers if layer["class_name"] == "Dense"]


@pytest.mark.parametrize("arch", ARCHS)
def test_model_outputs(project, arch):
    folder = project.root / "models" / arch  # one DVC output per arch: a model per seed
    assert sorted(p.name for p in folder.iterdir()) == [f"seed-{SEED}.keras"]
    model = folder / f"seed-{SEED}.keras"
    with zipfile.ZipFile(model) as z:
        assert z.testzip() is None
        assert "date_saved" not in json.loads(z.read("metadata.json"))
    assert dense_units(model) == [*ARCHS[arch]["hidden"], 10]
    logs = project.root / "models" / "logs" / arch  # apart: event file names hold the time
    assert sorted(p.name for p in logs.iterdir()) == [f"seed-{SEED}"]
    assert any(p.is_file() for p in (logs / f"seed-{SEED}").rglob("*"))
    assert not (project.root / "models" / f"{arch}.keras").exists()  # the old layout is gone


@pytest.mark.parametrize("arch", ARCHS)
def test_lr_range_outputs(project, arch):
    header, rows = read_csv(project.root / "reports" / "lr_range" / f"{arch}.csv")
    assert header == ["step", "lr", "loss", "smoothed_loss"]
    assert [int(r["step"]) for r in rows] == list(range(len(rows)))
    lrs = np.array([float(r["lr"]) for r in rows])
    np.testing.assert_allclose(lrs, exponential_lrs(LR_RANGE["start_lr"], LR_RANGE["factor"], len(rows)), rtol=1e-5)
    for r in rows[:MIN_SWEEP_ROWS]:
        assert np.isfinite(float(r["loss"])) and np.isfinite(float(r["smoothed_loss"]))

    summary = project.json(f"reports/lr_range/{arch}.json")
    assert {"picks", "stop_step", "stop_reason", "steps", "min_smoothed_loss", "lr_at_min"} <= set(summary)
    assert summary["steps"] == len(rows)
    usable = len(rows) if summary["stop_step"] is None else summary["stop_step"]
    assert usable >= MIN_SWEEP_ROWS, "the tiny sweep stopped too early for the rules to have enough points"
    if summary["stop_step"] is not None:
        assert summary["stop_step"] == len(rows) - 1  # no rows after the stop
    assert set(summary["picks"]) == set(RULES)
    for rule, pick in summary["picks"].items():
        assert "error" not in pick, (rule, pick)
        assert lrs[0] <= pick["lr"] <= lrs[-1] and 0 <= pick["step"] < usable


def n_params(hidden: list[int]) -> int:
    sizes = [28 * 28, *hidden, 10]
    return sum(a * b + b for a, b in zip(sizes, sizes[1:]))


def check_train_and_evaluate(project: Project, reports: Path, arch: str, seeds: list[int]) -> None:
    """An arch's history, metrics and timings under ``reports`` (the project's, or a study's copy),
    trained once per seed at the rate its range test picked."""
    def load(rel: str) -> dict:
        return json.loads((reports / rel).read_text())

    rule = project.read_params()["lr_range"]["rule"]
    lr = project.json(f"reports/lr_range/{arch}.json")["picks"][rule]["lr"]

    header, rows = read_csv(reports / "history" / f"{arch}.csv")
    assert header == ["seed", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"]
    assert list(dict.fromkeys(int(r["seed"]) for r in rows)) == seeds
    assert all(float(r["lr"]) == pytest.approx(lr, rel=1e-5) for r in rows)

    metrics = load(f"evaluation/{arch}.json")
    assert load(f"metrics/{arch}.json") == {key: metrics[key] for key in METRIC_KEYS}  # the headline alone
    assert metrics["failed"] is None and metrics["repeats"] == len(seeds)
    assert metrics["lr"] == lr and metrics["lr_chosen_by"] == rule
    assert metrics["params"] == n_params(ARCHS[arch]["hidden"])
    assert (metrics["n_train"], metrics["n_test"]) == (N_TRAIN - VAL_SIZE, N_TEST)
    assert sorted(metrics["seeds"]) == sorted(str(s) for s in seeds)
    for seed in seeds:
        run = metrics["seeds"][str(seed)]
        seed_rows = [r for r in rows if int(r["seed"]) == seed]
        assert [int(r["epoch"]) for r in seed_rows] == list(range(run["epochs_run"]))
        assert 1 <= run["epochs_run"] <= TRAIN["epochs"] and 0 <= run["best_epoch"] < run["epochs_run"]
        assert 0 <= run["test_accuracy"] <= 1 and 0 <= run["val_accuracy"] <= 1 and np.isfinite(run["test_loss"])
        # The saved model is the best epoch's: numpy's val_loss on it is what Keras logged for that epoch.
        assert run["val_loss"] == pytest.approx(float(seed_rows[run["best_epoch"]]["val_loss"]), rel=1e-4)
    for key in ("test_accuracy", "test_loss", "val_accuracy", "val_loss"):
        assert metrics[key] == pytest.approx(np.mean([metrics["seeds"][str(s)][key] for s in seeds]), abs=2e-6), key
    if len(seeds) == 1:
        assert metrics["test_accuracy_std"] is None
    else:
        per_seed = [metrics["seeds"][str(s)]["test_accuracy"] for s in seeds]
        assert metrics["test_accuracy_std"] == pytest.approx(np.std(per_seed, ddof=1), abs=2e-6)
    timings = load(f"timings/{arch}.train.json")
    assert timings["seconds"] > 0 and timings["seconds_per_epoch"] > 0 and timings["cpu_seconds_per_epoch"] > 0
    assert load(f"timings/{arch}.evaluate.json")["inference_ms_per_1000_images"] > 0


@pytest.mark.parametrize("arch", ARCHS)
def test_train_and_evaluate_outputs(project, arch):
    params = project.read_params()
    trained = project.json(f"reports/train/{arch}.json")
    rule = params["lr_range"]["rule"]
    assert trained["lr_chosen_by"] == rule and trained["failed"] is None
    assert [r["seed"] for r in trained["runs"]] == [SEED] and trained["runs"][0]["failed"] is None
    assert trained["lr"] == project.json(f"reports/lr_range/{arch}.json")["picks"][rule]["lr"]
    check_train_and_evaluate(project, project.root / "reports", arch, [SEED])
    metrics = project.json(f"reports/evaluation/{arch}.json")
    assert metrics["seeds"][str(SEED)]["epochs_run"] == trained["runs"][0]["epochs_run"]
    assert metrics["seeds"][str(SEED)]["best_epoch"] == trained["runs"][0]["best_epoch"]
    assert metrics["size_bytes"] == (project.root / "models" / arch / f"seed-{SEED}.keras").stat().st_size

    errors = project.json(f"reports/errors/{arch}.json")
    confusion = np.array(errors["confusion"])
    assert errors["seed"] == SEED and confusion.shape == (10, 10) and confusion.sum() == N_TEST
    assert np.trace(confusion) == round(metrics["test_accuracy"] * N_TEST)
    wrong = errors["confident_errors"]
    assert len(wrong) == min(CONFIDENT_ERRORS, N_TEST - np.trace(confusion))
    assert all(e["label"] != e["predicted"] for e in wrong)
    assert [e["confidence"] for e in wrong] == sorted((e["confidence"] for e in wrong), reverse=True)


def test_report_output(project):
    report = project.read("reports/report.md")
    for arch in ARCHS:
        assert len(table_rows(report, arch)) >= 2, arch  # at least the results and range-test tables
    figures = re.findall(r"\]\((figures/[^)]+)\)", report)
    # Learning curves: training runs 2 epochs.
    assert {f"figures/{name}.png" for name in ("lr_range", "lr_range_rules", "digits", "confusion",
                                                "confident_errors", "learning_curves")} <= set(figures), figures
    for rel in figures:
        assert (project.root / "reports" / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", rel
    # Every figure on disk is linked: the report removes the ones it no longer uses.
    assert sorted(f"figures/{p.name}" for p in (project.root / "reports" / "figures").iterdir()) == sorted(set(figures))


# --- reruns ----------------------------------------------------------------------------------


def test_second_repro_runs_nothing(project):
    stages, output = project.repro()
    assert stages == [], output
    assert project.status() == {}


def test_changing_one_arch_reruns_only_that_arch_and_the_report(project, tmp_path):
    p = project.copy(tmp_path / "project")
    b_before = {rel: (p.root / rel).read_bytes()
                for rel in (f"models/b/seed-{SEED}.keras", "reports/lr_range/b.csv", "reports/metrics/b.json",
                            "reports/evaluation/b.json", "reports/errors/b.json", "reports/predictions/b.csv")}
    params = p.read_params()
    params["archs"]["base"]["hidden"] = [5]
    p.write_params(params)

    stages, output = p.repro()
    assert sorted(stages) == ["evaluate@base", "lr_range@base", "report", "train@base"], output
    assert stages[-1] == "report"
    for rel, data in b_before.items():
        assert (p.root / rel).read_bytes() == data, rel
    assert dense_units(p.root / "models" / "base" / f"seed-{SEED}.keras") == [5, 10]
    assert p.status() == {}


def test_removing_an_arch_drops_it_from_the_report(project, tmp_path):
    p = project.copy(tmp_path / "project")
    before = p.read("reports/report.md")
    assert len(table_rows(before, "b")) >= 2 and STANDALONE_B.search(before)
    params = p.read_params()
    del params["archs"]["b"]
    p.write_params(params)
    # What a user keeps beside the outputs: the report stage once deleted both
    shutil.copytree(p.root / "models" / "base", p.root / "models" / "base-backup")
    (p.root / "models" / "pretrained").mkdir()

    stages, output = p.repro()
    assert "report" in stages, output
    assert not any(s.endswith("@base") or s.endswith("@b") for s in stages), output
    report = p.read("reports/report.md")
    assert table_rows(report, "b") == [] and "**b**" not in report
    assert not STANDALONE_B.search(report), STANDALONE_B.search(report)
    assert len(table_rows(report, "base")) >= 2
    assert p.status() == {}
    # The stages delete nothing they do not own: b's outputs stay until `make prune` removes them.
    b_outputs = [path.as_posix() for path in paths.arch_outputs("b")]
    assert all((p.root / rel).exists() for rel in b_outputs)
    assert "`make prune` lists and removes them" in output
    b_stages = [f"{stage}@b" for stage in ("evaluate", "lr_range", "train")]
    assert set(b_stages) <= set(yaml.safe_load(p.read("dvc.lock"))["stages"])  # DVC keeps them (treeverse/dvc#5293)
    lock_before = p.read("dvc.lock")
    pruned = p.run(sys.executable, "-m", "scripts.prune").splitlines()
    assert pruned[-1] == ("prune: removed dvc.lock's entries of 3 stage(s) its pipeline no longer has: "
                          f"{', '.join(b_stages)}")
    assert sorted(line.removeprefix("prune: removed ") for line in pruned[:-1]) == sorted(b_outputs)
    # only those entries went, the rest of the lock line for line as DVC wrote it
    before, after = yaml.safe_load(lock_before)["stages"], yaml.safe_load(p.read("dvc.lock"))["stages"]
    assert after == {stage: entry for stage, entry in before.items() if stage not in b_stages}
    lines = iter(lock_before.splitlines())
    assert all(line in lines for line in p.read("dvc.lock").splitlines())  # in order, none changed
    assert not any((p.root / rel).exists() for rel in b_outputs)
    assert (p.root / f"models/base/seed-{SEED}.keras").is_file()
    assert p.repro()[0] == ["report"]  # its deps are the reports/ folders, as `make prune` knows
    assert p.status() == {}
    assert (p.root / f"models/base-backup/seed-{SEED}.keras").is_file() and (p.root / "models/pretrained").is_dir()


def test_changing_a_default_in_schema_marks_the_stages_it_shapes_as_changed(project, tmp_path):
    """An arch without `activation` trains with Arch's default: editing it makes the results stale."""
    p = project.copy(tmp_path / "project")
    schema = p.root / "stages" / "lib" / "schema.py"
    default = 'default="relu"'
    assert schema.read_text().count(default) == 1
    schema.write_text(schema.read_text().replace(default, 'default="tanh"'))
    changed = set(p.status())
    for arch in ARCHS:
        assert {f"lr_range@{arch}", f"train@{arch}"} <= changed, changed


@dataclass
class Forced:
    """A copy of the project after `dvc repro -f train@base` with nothing changed, then `dvc repro`."""
    p: Project
    before: dict[str, bytes]  # base's results before the forced retrain
    retrained: list[str]  # stages `dvc repro -f train@base` ran
    retrain_output: str
    after_retrain: dict[str, bytes]  # what train@base rewrote, right after it
    status_after_retrain: dict
    rerun: list[str]  # stages the following `dvc repro` ran
    rerun_output: str
    after: dict[str, bytes]  # base's results after that


TRAIN_RESULTS_BASE = (f"models/base/seed-{SEED}.keras", "reports/train/base.json", "reports/history/base.csv")
RESULTS_BASE = (*TRAIN_RESULTS_BASE, "reports/metrics/base.json", "reports/evaluation/base.json",
                "reports/errors/base.json", "reports/predictions/base.csv")


@pytest.fixture(scope="module")
def forced(project, tmp_path_factory) -> Forced:
    p = project.copy(tmp_path_factory.mktemp("forced") / "project")

    def read(rels: tuple[str, ...]) -> dict[str, bytes]:
        return {rel: (p.root / rel).read_bytes() for rel in rels}

    before = read(RESULTS_BASE)
    retrained, retrain_output = p.repro("-f", "train@base")
    after_retrain, status_after_retrain = read(TRAIN_RESULTS_BASE), p.status()
    rerun, rerun_output = p.repro()
    return Forced(p, before, retrained, retrain_output, after_retrain, status_after_retrain, rerun, rerun_output,
                  read(RESULTS_BASE))


def test_forced_retrain_writes_a_byte_identical_model(forced):
    assert "train@base" in forced.retrained, forced.retrain_output
    for rel, data in forced.after_retrain.items():  # the model, and the run's facts and history
        assert data == forced.before[rel], rel


def test_after_a_forced_identical_retrain_no_result_changes(forced):
    for rel, data in forced.after.items():
        assert data == forced.before[rel], rel
    assert forced.p.status() == {}


def test_after_a_forced_identical_retrain_nothing_downstream_reruns(forced):
    # Only the timings and TensorBoard logs changed, and neither is a DVC output: nothing is stale.
    assert forced.status_after_retrain == {}, forced.status_after_retrain
    assert forced.rerun == [], forced.rerun_output


def test_training_that_diverges_is_reported_as_failed_and_fails_the_pipeline(project, tmp_path):
    p = project.copy(tmp_path / "project")
    params = p.read_params()
    params["archs"]["b"]["lr"] = 1e12  # a fixed rate far too high: the loss becomes NaN
    p.write_params(params)

    output = p.run(DVC, "repro", check=False)
    assert "training failed for:" in output and f"b: seed {SEED}: loss became nan" in output, output
    assert "Traceback" not in output
    trained = p.json("reports/train/b.json")
    assert trained["runs"][0]["failed"].startswith("loss became nan")
    metrics = p.json("reports/evaluation/b.json")
    assert metrics["failed"].startswith(f"seed {SEED}: loss became nan")
    assert metrics["test_accuracy"] is None and metrics["val_accuracy"] is None
    assert metrics["test_accuracy_std"] is None and "test_accuracy" not in metrics["seeds"][str(SEED)]
    assert p.json("reports/errors/b.json")["confusion"] is None
    report = p.read("reports/report.md")
    assert f"**failed**: seed {SEED}: loss became nan" in table_rows(report, "b")[0]
    assert "- **b failed**" in report
    assert "Highest validation accuracy in this run: **base**" in report  # the other arch still reports
    assert "nan %" not in report.lower()
    assert "report" in json.dumps(p.status())  # not marked done: the next repro says so again


# --- the DVC workflows users came for, as docs/comparing.md writes them -------------------------------

QUEUE_TIMEOUT_S = 240  # two tiny experiments, two at a time: 50 s here (10 s of it: idle workers stopping)


def comparing_doc() -> str:
    return (ROOT / COMPARING_DOC).read_text(encoding="utf-8")


def doc_block(first: str) -> list[Command]:
    """The ```bash block of docs/comparing.md whose first command starts with ``first`` (one of COMPARING_BLOCKS,
    which tests/test_docs.py checks are all its blocks)."""
    assert first in COMPARING_BLOCKS, f"{first!r} is not in COMPARING_BLOCKS"
    blocks = [block for block in bash_blocks(comparing_doc()) if block and block[0].text.startswith(first)]
    assert len(blocks) == 1, f"{COMPARING_DOC}: expected one ```bash block starting with {first!r}"
    return blocks[0]


def substituted(block: list[Command], substitutions: dict[str, str]) -> list[Command]:
    """``block`` with what cannot run here (paths on another machine, installing) replaced; each
    replacement must be used, so the doc's text and this test cannot drift apart unnoticed."""
    out, unused = [], set(substitutions)
    for command in block:
        text = command.text
        for old, new in substitutions.items():
            if old in text:
                text = text.replace(old, new)
                unused.discard(old)
        out.append(Command(text, command.comment))
    assert not unused, f"{COMPARING_DOC} no longer contains {sorted(unused)}: update this test"
    return out


def shell(p: Project, command: Command) -> str:
    return p.run("bash", "-c", command.text)


def uncovered(command: Command) -> None:
    pytest.fail(f"{COMPARING_DOC} has a command this test does not run: {command.text}")


def arch_of(path: str) -> str:
    return Path(path).name.split(".")[0]


@pytest.fixture(scope="module")
def branches(project, tmp_path_factory) -> Project:
    """A copy of the project with docs/comparing.md's branches: the results on `main`, and on `my-branch`
    base widened to [12] and rebuilt. Tests that write to it work on their own copy."""
    p = project.copy(tmp_path_factory.mktemp("branches") / "project")
    p.commit("results")
    p.run("git", "branch", "-M", "main")
    p.run("git", "checkout", "-q", "-b", "my-branch")
    params = p.read_params()
    params["archs"]["base"]["hidden"] = [12]
    p.write_params(params)
    p.repro()
    p.commit("wider base")
    return p


def test_branches_differing_in_one_arch_diff_only_that_arch(branches):
    p = branches
    metrics = json.loads(p.dvc("metrics", "diff", "--json", "main", "my-branch"))
    assert metrics, "no metric changed"
    assert {arch_of(path) for path in metrics} == {"base"}, sorted(metrics)
    changed = metrics["reports/metrics/base.json"]
    # Only the headline: a new network changes its size and every loss.
    assert {"params", "test_loss", "val_loss"} <= set(changed) <= set(METRIC_KEYS), sorted(changed)
    assert changed["params"]["new"] == 784 * 12 + 12 + 12 * 10 + 10

    params_diff = json.loads(p.dvc("params", "diff", "--json", "main", "my-branch"))
    # dvc reports list values as their YAML text
    assert params_diff == {"params.yaml": {"archs.base.hidden": {"old": "[8]", "new": "[12]"}}}

    plots = json.loads(p.dvc("plots", "diff", "--json", "main", "my-branch"))
    assert not plots.get("errors"), plots.get("errors")
    curve = plots["data"]["reports/lr_range/base.csv"][0]["content"]
    assert curve["encoding"]["x"]["scale"] == {"type": "log"}  # the committed log-x template
    assert {row["rev"] for row in curve["data"]["values"]} == {"main", "my-branch"}
    confusion = plots["data"]["reports/predictions/base.csv"][0]["content"]
    # the committed template: a symlog colour scale, so that off-diagonal cells are not lost against the diagonal
    assert confusion["spec"]["layer"][0]["encoding"]["color"]["scale"]["type"] == "symlog"

    comparison = p.run(sys.executable, "-m", "scripts.compare", "main")
    assert "| `archs.base.hidden` | [8] | [12] |" in comparison
    assert "| base | params | 6370 | 9550 |" in comparison
    assert not re.search(r"^\| b \|.*\| (test_accuracy|params) \|", comparison, re.M)


def test_doc_comparison_commands_run_as_written(branches, tmp_path):
    p = branches.copy(tmp_path / "project")
    as_after_make_setup(p)
    for command in doc_block("dvc metrics diff"):
        output = shell(p, command)
        if command.text.startswith("dvc metrics diff "):
            # "only the archs whose results changed show up"
            assert "reports/metrics/base.json" in output and "params" in output, output
            assert not re.search(r"\bb\.(json|csv)", output), output
        elif command.text.startswith("dvc params diff "):
            assert re.search(r"archs\.base\.hidden\s+\[8\]\s+\[12\]", output), output
        elif command.text.startswith("dvc plots diff "):
            html = (p.root / "dvc_plots" / "index.html").read_text()
            assert "reports/lr_range/base.csv" in html and "reports/history/base.csv" in html
        elif command.text.startswith("make compare "):
            comparison = (p.root / "compare.md").read_text()
            assert "| `archs.base.hidden` | [8] | [12] |" in comparison, comparison
        else:
            uncovered(command)


def run_queue(p: Project, command: Command) -> str:
    """Run the doc's `dvc queue start` and wait until its workers are done; return `dvc queue status`.

    The workers inherit the command's stdout, so the pipe closes once the last one has exited,
    which a worker does after the queue has drained (and 10 s idle)."""
    starter = subprocess.Popen(["bash", "-c", command.text], cwd=p.root, env=p.env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        starter.communicate(timeout=QUEUE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        status = p.dvc("queue", "status")
        p.run(DVC, "queue", "stop", "--kill", check=False)
        pytest.fail(f"the queue's workers still ran {QUEUE_TIMEOUT_S} s after `{command.text}`:\n{status}")
    finally:
        kill_group(starter)
    return p.dvc("queue", "status")


def test_doc_experiment_commands_run_as_written(project, tmp_path):
    p = project.copy(tmp_path / "project")
    p.commit("results")
    queued = 0
    for command in doc_block("dvc exp run"):
        if command.text.startswith("dvc exp run -S "):
            output = shell(p, command)  # "reruns only base's stages and the report"
            assert sorted(ran(output)) == ["evaluate@base", "lr_range@base", "report", "train@base"], output
        elif command.text.startswith("dvc exp run --queue "):
            queued = shell(p, command).count("Queued experiment")
            assert queued == 2, command.text
        elif command.text.startswith("dvc queue start "):
            status = run_queue(p, command)
            assert len(re.findall(r"\bSuccess\b", status)) == queued and "Failed" not in status, status
        elif command.text.startswith("dvc exp show "):
            table = shell(p, command)
            header = table.splitlines()[0]
            assert re.search(r"\| Experiment\s+\| Created\s+\|", header), header
            assert "test_accuracy" in header and "archs.base.hidden" in header and "archs.base.lr" in header, header
            # only what differs, and of the metrics only the headline scores
            assert "train.epochs" not in header and "evidence" not in header and "seeds" not in header, header
            assert "size_bytes" not in header and "seconds" not in header, header
            assert "models/base " not in header and "reports/train " not in header, header  # no deps' hashes
            columns = header.count("|") - 1
            assert columns <= 15, f"{columns} columns: {header}"  # fits a terminal, queue's State and Executor too
            rows = [line for line in table.splitlines() if "[256, 128]" in line]
            assert len(rows) >= 3, table  # the first experiment, the workspace it left, the queued ones
            assert any("| 0.1 " in row for row in rows) and any("| 0.2 " in row for row in rows), table
        else:
            uncovered(command)
    assert queued == 2


def test_doc_sharing_commands_run_as_written(project, tmp_path):
    p = project.copy(tmp_path / "project")
    p.commit("results")
    remote, colleague = tmp_path / "remote", Project(tmp_path / "colleague", p.env)
    block = substituted(doc_block("dvc remote add"), {
        "/mnt/team/mnist-lr-study": str(remote),
        "git clone <repo> && cd <repo>": f"git clone -q {p.root} {colleague.root}",
        " && make setup && source .venv/bin/activate": "",  # this test runs in the set-up venv
    })
    at = p
    for command in block:
        if command.text.startswith("git clone "):
            shell(p, command)
            at = colleague  # the colleague's commands run in their clone
        elif command.text == "dvc repro":
            stages, output = at.repro()
            assert stages == [], output  # "runs nothing"
        else:
            output = shell(at, command)
            if command.text.startswith("dvc pull"):
                assert "Data and pipelines are up to date." in output, output  # as the doc's comment says
            elif command.text.startswith("dvc remote add "):
                assert remote.as_posix() in p.dvc("remote", "list")
            elif command.text.startswith("dvc remote modify shared verify true"):
                assert "verify = true" in (p.root / ".dvc" / "config").read_text(encoding="utf-8")
            elif command.text == "dvc push":
                assert any(remote.rglob("*")), "dvc push wrote nothing"
            elif not command.text.startswith("git add .dvc/config"):
                uncovered(command)
    assert at is colleague, f"{COMPARING_DOC} no longer shows the colleague's side"
    for arch in ARCHS:
        assert snapshot(colleague.root / "models" / arch) == snapshot(p.root / "models" / arch), arch

    assert "`dvc repro --pull` does both at once" in comparing_doc()
    other = Project(tmp_path / "other", p.env)
    p.run("git", "clone", "-q", str(p.root), str(other.root))
    stages, output = other.repro("--pull")
    assert stages == [], output
    assert (other.root / "data/prepared/x_train.npy").is_file()


def committed_copy(project: Project, dest: Path) -> Project:
    """A copy whose current results are committed, as a user's would be."""
    p = project.copy(dest)
    p.commit("results")
    return p


def test_ctrl_c_during_training_under_dvc_repro_says_what_dvc_removed_and_how_to_get_it_back(project, tmp_path):
    p = committed_copy(project, tmp_path / "project")
    params = p.read_params()
    params["train"].update(repeats=3, epochs=100_000, patience=100_000)  # still training when the signal comes
    p.write_params(params)
    # One stream, unbuffered: Keras' epoch lines reach the test as they are printed, and no unread pipe
    # can fill up and stop the stage.
    proc = subprocess.Popen([*WITH_DEFAULT_SIGINT, DVC, "repro", "-s", "train@base"], cwd=p.root,
                            env={**p.env, "PYTHONUNBUFFERED": "1"},
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # Keras prints a line per epoch: training is under way
        seen = read_until(proc, lambda line: "val_loss" in line, "epoch line (val_loss)", TRAINING_STARTED_S)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
        rest, _ = proc.communicate(timeout=COMMAND_TIMEOUT_S)
    finally:
        kill_group(proc)
    output = "".join(seen) + rest
    assert proc.returncode != 0 and "Traceback" not in output, output
    ours = [line for line in output.splitlines() if line.startswith("interrupted:")]
    assert len(ours) == 1, output
    outputs = ("models/base", "reports/train/base.json", "reports/history/base.csv")
    assert f"so {', '.join(outputs)} are missing" in ours[0]
    assert not any((p.root / rel).exists() for rel in outputs)  # as the message says
    # The message's own commands bring the last good results back.
    assert "`dvc checkout train@base` restores models/base, reports/train/base.json from the cache" in ours[0]
    assert f"`git checkout -- {outputs[2]}` the committed results" in ours[0]
    p.dvc("checkout", "train@base")
    p.run("git", "checkout", "--", outputs[2])
    p.write_params(project.read_params())
    assert p.status() == {}
    assert p.run("git", "status", "--porcelain") == ""


def test_a_params_error_under_dvc_repro_says_which_outputs_dvc_removed(project, tmp_path):
    p = committed_copy(project, tmp_path / "project")
    params = p.read_params()
    params["archs"]["base"]["hidden"] = [0]
    p.write_params(params)
    done = subprocess.run([DVC, "repro", "-s", "lr_range@base"], cwd=p.root, env=p.env, capture_output=True,
                          text=True, timeout=COMMAND_TIMEOUT_S)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "params.yaml: archs.base.hidden: not a list of positive layer sizes" in done.stderr
    outputs = ("reports/lr_range/base.csv", "reports/lr_range/base.json")
    assert f"`dvc repro` removed lr_range@base's outputs before running it, so {', '.join(outputs)} are missing: " \
           f"`git checkout -- {' '.join(outputs)}` the committed results" in done.stderr
    assert not any((p.root / rel).exists() for rel in outputs)
    p.write_params(project.read_params())
    p.run("git", "checkout", "--", *outputs)
    assert p.status() == {}


# --- make repro on several lanes (scripts/lanes.py) --------------------------------------------------


@pytest.fixture(scope="module")
def two_lanes(tmp_path_factory, tiny_data) -> tuple[Project, str]:
    """Another tiny project like `built`'s, built from nothing by `make repro JOBS=2`; and its output."""
    folder, sums, _ = tiny_data
    p = tiny_project(tmp_path_factory.mktemp("lanes"), tiny_params(folder, sums, ARCHS, lr_range=LR_RANGE, train=TRAIN))
    as_after_make_setup(p)
    return p, p.run("make", "repro", "JOBS=2")


def test_make_repro_on_two_lanes_runs_every_stage_once_two_at_a_time_each_line_marked(two_lanes):
    p, output = two_lanes
    assert sorted(ran(output)) == sorted(ALL_STAGES), output
    assert re.search(rf"lanes: {len(ALL_STAGES)} stages in [\d.]+ s, up to 2 at once", output), output
    stage_lines = [line for line in output.splitlines() if RUNNING.search(line)]
    assert all(line == f"[{stage}] Running stage '{stage}':" for line in stage_lines
               for stage in RUNNING.findall(line)), stage_lines
    # quiet: DVC's lines after every stage are left out, their `git add` paths said once at the end
    assert "auto staging" not in output and "dvc push" not in output and "up to date" not in output, output
    hints = [line for line in output.splitlines() if "git add" in line]
    assert len(hints) == 1 and hints[0].startswith("To track the changes with git: git add ") and \
        "dvc.lock" in hints[0].split(), hints
    closing = re.findall(rf"^\[(\d+)/{len(ALL_STAGES)}\] (\S+): ran, [\d.]+ s$", output, re.M)
    assert sorted(stage for _, stage in closing) == sorted(ALL_STAGES), output
    assert sorted(int(k) for k, _ in closing) == list(range(1, len(ALL_STAGES) + 1)), output
    assert p.status() == {}
    assert "Data and pipelines are up to date." in p.run("make", "repro", "JOBS=2")


def test_a_no_op_make_repro_answers_without_dvc_once_dvc_said_so_and_asks_it_again_after_any_change(two_lanes):
    p, _ = two_lanes
    without_dvc = "Data and pipelines are up to date. (Nothing changed since DVC last said so.)"
    p.run("make", "repro", "JOBS=2")  # DVC says up to date, and lanes records what DVC looked at
    assert without_dvc in p.run("make", "repro", "JOBS=2")
    params = p.root / "params.yaml"
    text = params.read_text(encoding="utf-8")
    params.write_text(text + "# a comment: no value changed\n", encoding="utf-8")
    output = p.run("make", "repro", "JOBS=2")
    assert "Data and pipelines are up to date." in output and without_dvc not in output, output
    params.write_text(text, encoding="utf-8")
    (p.root / "reports/report.md").unlink()
    output = p.run("make", "repro", "JOBS=2")
    assert re.search(r"\] report: (ran|restored from the run cache), ", output), output
    assert without_dvc not in output and p.status() == {}


def test_make_repro_gives_the_same_bytes_on_two_lanes_as_on_one(project, two_lanes):
    assert results(two_lanes[0]) == results(project)
    assert len(results(project)) > 20  # the results are there to compare


def test_ctrl_c_stops_every_lane_and_each_stage_says_what_became_of_its_outputs(project, tmp_path):
    p = committed_copy(project, tmp_path / "project")
    params = p.read_params()
    params["train"].update(repeats=3, epochs=100_000, patience=100_000)  # still training when the signal comes
    p.write_params(params)
    proc = subprocess.Popen([*WITH_DEFAULT_SIGINT, sys.executable, "-m", "scripts.lanes", "-j", "2"], cwd=p.root,
                            env=p.env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    training = set()

    def both_training(line: str) -> bool:
        if "val_loss" in line:
            training.add(line.partition("]")[0].lstrip("["))
        return training == {f"train@{arch}" for arch in ARCHS}

    try:
        seen = read_until(proc, both_training, "epoch lines of both trainings", TRAINING_STARTED_S)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
        rest, _ = proc.communicate(timeout=COMMAND_TIMEOUT_S)
    finally:
        kill_group(proc)
    output = "".join(seen) + rest
    assert proc.returncode == 130 and "Traceback" not in output, output
    last = output.splitlines()[-1]
    assert re.fullmatch(r"interrupted: stopped train@\w+, train@\w+ \(each says above what became of its "
                        r"outputs\); no stage had finished; rerun the same command to do the rest",
                        last), output
    for arch in ARCHS:
        assert f"train@{arch}" in last
        # the stage's own line, under DVC: what DVC removed, and how to get it back
        assert re.search(rf"^\[train@{arch}\] interrupted: `dvc repro` removed train@{arch}'s outputs", output,
                         re.MULTILINE), output
        assert not (p.root / f"models/{arch}").exists()


def test_lanes_stop_before_dvc_deletes_files_a_user_put_in_a_folder_output(project, tmp_path):
    p = committed_copy(project, tmp_path / "project")
    mine = [p.root / "reports/figures/my plot.png", p.root / "reports/figures/notes/draft.png"]
    mine[1].parent.mkdir()
    for path in mine:
        path.write_bytes(b"a user's figure")
    stale_figure = p.root / "reports/figures/.digits.png.x1y2z3.tmp"  # what a killed write leaves: the stage's
    stale_figure.write_bytes(b"half a figure")
    params = p.read_params()
    params["report"]["tie_margin"] = 0.01  # report reruns, nothing else
    p.write_params(params)
    # only the stages that run are looked at: train@base is current, and report does not run
    assert p.run(sys.executable, "-m", "scripts.lanes", "-j", "2", "train@base").splitlines() == [
        "Data and pipelines are up to date."]
    done = p.call(sys.executable, "-m", "scripts.lanes", "-j", "2")
    assert done.returncode == 1 and done.stdout == "", done.stdout + done.stderr
    assert done.stderr.splitlines() == [
        "error: reports/figures holds reports/figures/my plot.png, reports/figures/notes/draft.png, which report "
        "does not write, and `dvc repro` deletes reports/figures whole before report runs: move these files to a "
        "folder no stage writes (such as notes/), then rerun"]
    assert all(path.read_bytes() == b"a user's figure" for path in mine) and stale_figure.exists()
    assert set(p.status()) == {"report"}  # nothing ran
    for path in mine:
        path.unlink()
    p.run(sys.executable, "-m", "scripts.lanes", "-j", "2")
    assert p.status() == {} and not stale_figure.exists()


LANES_STOPPED = re.compile(r"interrupted: stopped train@\w+, train@\w+ \(each says above what became of its "
                           r"outputs\); no stage had finished; rerun the same command to do the rest")


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_sigterm_to_make_repros_process_group_waits_for_lanes_closing_line(two_lanes, tmp_path):
    """A scheduler's cancel: SIGTERM to every process of make's group. lanes gets it twice: from the group, and from
    make, which passes it on to its child (lanes: no shell between them) and waits for it. The second one used to
    come while lanes stopped the stages and, once in four runs, ended them without lanes' closing line
    (tests/test_lanes.py sends it exactly then)."""
    p = committed_copy(two_lanes[0], tmp_path / "project")
    params = p.read_params()
    params["train"].update(repeats=3, epochs=100_000, patience=100_000)  # still training when the signal comes
    p.write_params(params)
    log = tmp_path / "make.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(["make", "repro", "JOBS=2"], cwd=p.root, env=p.env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: all(re.search(rf"^\[train@{arch}\] .*val_loss", log.read_text(), re.M) for arch in ARCHS),
                 "epoch lines of both trainings", TRAINING_STARTED_S)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(COMMAND_TIMEOUT_S)
        at_makes_end = log.read_text()
    finally:
        try:  # lanes, stopping the stages, may outlive make: let it end
            wait_for(lambda: LANES_STOPPED.search(log.read_text()) or group_gone(proc.pid), "lanes to end",
                     COMMAND_TIMEOUT_S)
        finally:
            kill_group(proc)
    lines = [line for line in at_makes_end.splitlines() if not line.startswith("make: ")]  # make's own error line
    assert LANES_STOPPED.fullmatch(lines[-1]), at_makes_end
    assert "Traceback" not in at_makes_end
    for arch in ARCHS:
        assert re.search(rf"^\[train@{arch}\] interrupted: `dvc repro` removed train@{arch}'s outputs", at_makes_end,
                         re.M), at_makes_end


def test_make_repro_on_one_lane_checks_what_lanes_check_before_plain_dvc_repro(two_lanes, tmp_path):
    p = committed_copy(two_lanes[0], tmp_path / "project")
    mine = p.root / "reports/figures/mine.png"
    mine.write_bytes(b"a user's figure")
    done = p.call("make", "repro", "JOBS=1")
    assert done.returncode != 0, done.stdout + done.stderr
    assert ("error: reports/figures holds reports/figures/mine.png, which report does not write, and `dvc repro` "
            "deletes reports/figures whole before report runs: move these files to a folder no stage writes (such "
            "as notes/), then rerun") in done.stderr.splitlines(), done.stderr
    assert mine.read_bytes() == b"a user's figure" and set(p.status()) == {"report"}  # nothing ran
