"""The whole pipeline end to end: real `git` and `dvc repro` on tiny data in a temporary project.

One module-scoped fixture builds the project (this repo's stages/, scripts/ and dvc.yaml, the
tests' own params with tiny data, two tiny archs and one tiny study) and
builds it from nothing the way `make lr-study` then `make studies` do: the range tests, the
opt-in LR study, the rest, then the opt-in seed study and the report again.
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
import subprocess
import time
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ROOT, example_params, tiny_mnist, write_idx_folder
from stages.evaluate import CONFIDENT_ERRORS
from stages.lib.idx import parse_idx
from stages.lib.lr_finder import RULES, exponential_lrs
from stages.lib.params import IDX_FILES

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
DVC = str(BIN / "dvc")
ARCHS = {"a": {"hidden": [8]}, "b": {"hidden": [6, 4]}}
N_TRAIN, N_TEST, VAL_SIZE = 300, 100, 50
LR_RANGE = {"batch_size": 8, "epochs": 2, "factor": 1.15, "start_lr": 0.001}
TRAIN = {"epochs": 2, "batch_size": 16}
SEED = 42  # params.yaml's: the only training seed of the main pipeline (train.repeats 1)
STUDY = "two_seeds"
STUDIES = {STUDY: {"train.repeats": 2}}  # seeds 42 and 43
MIN_SWEEP_ROWS = 30  # the rules trim 10 rows at the start and 5 at the end and need 10
ALL_STAGES = {"download", "split", "report", *(f"{s}@{a}" for s in ("lr_range", "train", "evaluate") for a in ARCHS)}
STANDALONE_B = re.compile(r"(?<![\w`/.@-])b(?![\w`/.@-])")  # arch b's name, not a letter in a word
RUNNING = re.compile(r"Running stage '([^']+)'")
TIMEOUT_S = 1200


@dataclass
class Project:
    root: Path
    env: dict[str, str]
    first_repro: str
    after_study: list[str] | None = None  # the stages `dvc repro` ran after `python -m scripts.study`

    def run(self, *cmd: str, check: bool = True) -> str:
        done = subprocess.run(cmd, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=TIMEOUT_S)
        output = done.stdout + done.stderr
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {done.returncode} in {self.root}:\n{output}")
        return output

    def dvc(self, *args: str) -> str:
        return self.run(DVC, *args)

    def repro(self, *args: str) -> tuple[list[str], str]:
        """Run `dvc repro`; return the stages it ran, in order, and its output."""
        output = self.dvc("repro", *args)
        return RUNNING.findall(output), output

    def params(self) -> dict:
        return yaml.safe_load((self.root / "params.yaml").read_text())

    def write_params(self, params: dict) -> None:
        (self.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def status(self) -> dict:
        return json.loads(self.dvc("status", "--json"))

    def copy(self, dest: Path) -> Project:
        shutil.copytree(self.root, dest, symlinks=True)
        return Project(dest, self.env, self.first_repro)

    def read(self, rel: str) -> str:
        return (self.root / rel).read_text()

    def json(self, rel: str) -> dict:
        return json.loads(self.read(rel))


def isolated_env(base: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    for name in ("site_cache", "dvc_global", "dvc_system"):
        (base / name).mkdir()
    (base / "gitconfig").write_text("")
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # `python` in dvc.yaml is the venv's
        "VIRTUAL_ENV": str(BIN.parent),
        "DVC_NO_ANALYTICS": "1",
        "DVC_STUDIO_OFFLINE": "1",
        "DVC_SITE_CACHE_DIR": str(base / "site_cache"),
        "DVC_GLOBAL_CONFIG_DIR": str(base / "dvc_global"),
        "DVC_SYSTEM_CONFIG_DIR": str(base / "dvc_system"),
        "GIT_CONFIG_GLOBAL": str(base / "gitconfig"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "TMPDIR": str(base / "tmp"),  # the study's scratch copy, among others: not /tmp
    })
    (base / "tmp").mkdir()
    return env


def derived_params(idx_folder: Path, sums: dict[str, str]) -> dict:
    params = example_params()
    params["data"]["sources"] = [{"local": str(idx_folder)}]
    params["data"]["sha256"] = dict(sums)
    params["data"]["val_size"] = VAL_SIZE
    params["lr_range"].update(LR_RANGE)
    params["train"].update(TRAIN)
    params["archs"] = json.loads(json.dumps(ARCHS))
    params["lr_study"]["grid"] = [0.1]  # the opt-in study trains once per rate: keep it short
    params["studies"] = json.loads(json.dumps(STUDIES))
    return params


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> tuple[Path, dict[str, str], dict[str, np.ndarray]]:
    arrays = tiny_mnist(n_train=N_TRAIN, n_test=N_TEST)
    folder = tmp_path_factory.mktemp("mnist_idx")
    return folder, write_idx_folder(folder, arrays), arrays


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_data) -> Project:
    base = tmp_path_factory.mktemp("pipeline")
    root = base / "project"
    root.mkdir()
    for package in ("stages", "scripts"):
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "dvc.yaml", root / "dvc.yaml")
    (root / "reports" / "studies").mkdir(parents=True)  # committed: the report stage depends on it
    shutil.copy2(ROOT / "reports" / "studies" / "README.md", root / "reports" / "studies" / "README.md")
    folder, sums, _ = tiny_data
    p = Project(root, isolated_env(base), "")
    p.write_params(derived_params(folder, sums))
    (root / ".gitignore").write_text("__pycache__/\n")

    p.run("git", "init", "-q")
    p.run("git", "config", "user.name", "Pipeline Test")
    p.run("git", "config", "user.email", "pipeline-test@example.invalid")
    p.dvc("init", "-q")
    p.dvc("config", "core.analytics", "false")
    p.dvc("config", "core.check_update", "false")
    shutil.copytree(ROOT / ".dvc" / "plots", root / ".dvc" / "plots")  # the committed plot templates
    p.run("git", "add", "-A")
    p.run("git", "commit", "-q", "-m", "tiny study")
    # As `make lr-study` does: the report reads the study, which reads the range tests.
    _, before = p.repro("lr_range")
    lr_study = p.run(sys.executable, "-m", "scripts.lr_study")
    _, after = p.repro()
    # Then as `make studies` does: the seed study in a scratch copy, and the report again.
    study = p.run(sys.executable, "-m", "scripts.study")
    p.after_study, again = p.repro()
    p.first_repro = before + lr_study + after + study + again
    return p


def ran(output: str) -> list[str]:
    return RUNNING.findall(output)


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def table_rows(markdown: str, arch: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith(f"| {arch} |")]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every entry under ``folder`` with its bytes (None for folders)."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


# --- the first run ---------------------------------------------------------------------------


def test_first_repro_runs_every_stage(project):
    assert ALL_STAGES <= set(ran(project.first_repro)), project.first_repro
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

    rule = project.params()["lr_range"]["rule"]
    lr = project.json(f"reports/lr_range/{arch}.json")["picks"][rule]["lr"]

    header, rows = read_csv(reports / "history" / f"{arch}.csv")
    assert header == ["seed", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"]
    assert list(dict.fromkeys(int(r["seed"]) for r in rows)) == seeds
    assert all(float(r["lr"]) == pytest.approx(lr, rel=1e-5) for r in rows)

    metrics = load(f"metrics/{arch}.json")
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
    assert timings["seconds"] > 0 and timings["seconds_per_epoch"] > 0
    assert load(f"timings/{arch}.evaluate.json")["inference_ms_per_1000_images"] > 0


@pytest.mark.parametrize("arch", ARCHS)
def test_train_and_evaluate_outputs(project, arch):
    params = project.params()
    trained = project.json(f"reports/train/{arch}.json")
    rule = params["lr_range"]["rule"]
    assert trained["lr_chosen_by"] == rule and trained["failed"] is None
    assert [r["seed"] for r in trained["runs"]] == [SEED] and trained["runs"][0]["failed"] is None
    assert trained["lr"] == project.json(f"reports/lr_range/{arch}.json")["picks"][rule]["lr"]
    check_train_and_evaluate(project, project.root / "reports", arch, [SEED])
    metrics = project.json(f"reports/metrics/{arch}.json")
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
    # Learning curves: training runs 2 epochs (the main run's, and the study's).
    assert {f"figures/{name}.png" for name in ("lr_range", "lr_range_rules", "digits", "confusion",
                                                "confident_errors", "learning_curves")} <= set(figures), figures
    for rel in figures:
        assert (project.root / "reports" / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", rel
    # Every figure on disk is linked: the report removes the ones it no longer uses.
    assert sorted(f"figures/{p.name}" for p in (project.root / "reports" / "figures").iterdir()) == sorted(set(figures))


def test_study_results_and_report_section(project):
    """`python -m scripts.study` reran the pipeline with two seeds in a scratch copy: its results
    are in reports/studies/two_seeds/, and the report shows them as mean ± std."""
    folder = project.root / "reports" / "studies" / STUDY
    assert sorted(p.name for p in folder.iterdir()) == ["history", "metrics", "params.yaml", "timings"]
    made_with = yaml.safe_load((folder / "params.yaml").read_text())
    expected = project.params()
    expected["train"]["repeats"] = 2
    assert made_with == expected  # the project's params with the study's override, nothing else
    for arch in ARCHS:
        check_train_and_evaluate(project, folder, arch, [SEED, SEED + 1])
    # The scratch copy's models stayed there; the project's own results are still one seed.
    for arch in ARCHS:
        assert sorted(p.name for p in (project.root / "models" / arch).iterdir()) == [f"seed-{SEED}.keras"]
        assert project.json(f"reports/metrics/{arch}.json")["repeats"] == 1
    assert project.after_study == ["report"]  # only reports/studies changed

    report = project.read("reports/report.md")
    section = report.split(f"## Study `{STUDY}`: `train.repeats=2`", 1)
    assert len(section) == 2, report
    section = section[1].split("\n## ", 1)[0]
    assert "_Not shown" not in section, section
    for arch in ARCHS:
        metrics = json.loads((folder / "metrics" / f"{arch}.json").read_text())
        mean, std = 100 * metrics["test_accuracy"], 100 * metrics["test_accuracy_std"]
        rows = table_rows(section, arch)
        assert len(rows) == 1, section
        assert f"**{mean:.2f} ± {std:.2f} %**" in rows[0], rows[0]
        per_seed = ", ".join(f"{100 * metrics['seeds'][str(s)]['test_accuracy']:.2f}" for s in (SEED, SEED + 1))
        assert rows[0].endswith(f"| {per_seed} |"), rows[0]
    assert "Best mean test accuracy over 2 seeds" in section


# --- reruns ----------------------------------------------------------------------------------


def test_second_repro_runs_nothing(project):
    stages, output = project.repro()
    assert stages == [], output
    assert project.status() == {}


def test_changing_one_arch_reruns_only_that_arch_and_the_report(project, tmp_path):
    p = project.copy(tmp_path / "project")
    b_before = {rel: (p.root / rel).read_bytes()
                for rel in (f"models/b/seed-{SEED}.keras", "reports/lr_range/b.csv", "reports/metrics/b.json",
                            "reports/errors/b.json")}
    params = p.params()
    params["archs"]["a"]["hidden"] = [5]
    p.write_params(params)

    stages, output = p.repro()
    assert sorted(stages) == ["evaluate@a", "lr_range@a", "report", "train@a"], output
    assert stages[-1] == "report"
    for rel, data in b_before.items():
        assert (p.root / rel).read_bytes() == data, rel
    assert dense_units(p.root / "models" / "a" / f"seed-{SEED}.keras") == [5, 10]
    assert p.status() == {}


def test_removing_an_arch_drops_it_from_the_report(project, tmp_path):
    p = project.copy(tmp_path / "project")
    before = p.read("reports/report.md")
    assert len(table_rows(before, "b")) >= 2 and STANDALONE_B.search(before)
    params = p.params()
    del params["archs"]["b"]
    p.write_params(params)

    stages, output = p.repro()
    assert "report" in stages, output
    assert not any(s.endswith("@a") or s.endswith("@b") for s in stages), output
    report = p.read("reports/report.md")
    assert table_rows(report, "b") == [] and "**b**" not in report
    assert not STANDALONE_B.search(report), STANDALONE_B.search(report)
    assert len(table_rows(report, "a")) >= 2
    assert p.status() == {}
    # No leftovers a later step (or a reader of reports/) could pick up.
    for rel in ("models/b", "models/logs/b", "reports/lr_range/b.csv", "reports/lr_range/b.json", "reports/history/b.csv",
                "reports/train/b.json", "reports/metrics/b.json", "reports/errors/b.json",
                "reports/timings/b.train.json", "reports/timings/b.lr_range.json", "reports/timings/b.evaluate.json"):
        assert not (p.root / rel).exists(), rel
    assert (p.root / f"models/a/seed-{SEED}.keras").is_file()
    # The study's files are what `make studies` wrote (committed results): they stay, and a is still shown.
    assert (p.root / f"reports/studies/{STUDY}/metrics/b.json").is_file()
    assert len(table_rows(report.split(f"## Study `{STUDY}`", 1)[1].split("\n## ", 1)[0], "a")) == 1


@dataclass
class Forced:
    """A copy of the project after `dvc repro -f train@a` with nothing changed, then `dvc repro`."""
    p: Project
    before: dict[str, bytes]  # a's results before the forced retrain
    retrained: list[str]  # stages `dvc repro -f train@a` ran
    retrain_output: str
    after_retrain: dict[str, bytes]  # what train@a rewrote, right after it
    status_after_retrain: dict
    rerun: list[str]  # stages the following `dvc repro` ran
    rerun_output: str
    after: dict[str, bytes]  # a's results after that


TRAIN_RESULTS_A = (f"models/a/seed-{SEED}.keras", "reports/train/a.json", "reports/history/a.csv")
RESULTS_A = (*TRAIN_RESULTS_A, "reports/metrics/a.json", "reports/errors/a.json")


@pytest.fixture(scope="module")
def forced(project, tmp_path_factory) -> Forced:
    p = project.copy(tmp_path_factory.mktemp("forced") / "project")

    def read(rels: tuple[str, ...]) -> dict[str, bytes]:
        return {rel: (p.root / rel).read_bytes() for rel in rels}

    before = read(RESULTS_A)
    retrained, retrain_output = p.repro("-f", "train@a")
    after_retrain, status_after_retrain = read(TRAIN_RESULTS_A), p.status()
    rerun, rerun_output = p.repro()
    return Forced(p, before, retrained, retrain_output, after_retrain, status_after_retrain, rerun, rerun_output,
                  read(RESULTS_A))


def test_forced_retrain_writes_a_byte_identical_model(forced):
    assert "train@a" in forced.retrained, forced.retrain_output
    for rel, data in forced.after_retrain.items():  # the model, and the run's facts and history
        assert data == forced.before[rel], rel


def test_after_a_forced_identical_retrain_no_result_changes(forced):
    for rel, data in forced.after.items():
        assert data == forced.before[rel], rel
    assert "report" in forced.rerun, forced.rerun_output
    assert forced.p.status() == {}


def test_after_a_forced_identical_retrain_only_the_report_reruns(forced):
    # The timings changed (the report shows them); nothing a result depends on did.
    assert "models/a" not in json.dumps(forced.status_after_retrain), forced.status_after_retrain
    assert forced.rerun == ["report"], forced.rerun_output


def test_training_that_diverges_is_reported_as_failed_and_fails_the_pipeline(project, tmp_path):
    p = project.copy(tmp_path / "project")
    params = p.params()
    params["archs"]["b"]["lr"] = 1e12  # a fixed rate far too high: the loss becomes NaN
    p.write_params(params)

    output = p.run(DVC, "repro", check=False)
    assert "training failed for:" in output and f"b: seed {SEED}: loss became nan" in output, output
    assert "Traceback" not in output
    trained = p.json("reports/train/b.json")
    assert trained["runs"][0]["failed"].startswith("loss became nan")
    metrics = p.json("reports/metrics/b.json")
    assert metrics["failed"].startswith(f"seed {SEED}: loss became nan")
    assert metrics["test_accuracy"] is None and metrics["val_accuracy"] is None
    assert metrics["test_accuracy_std"] is None and "test_accuracy" not in metrics["seeds"][str(SEED)]
    assert p.json("reports/errors/b.json")["confusion"] is None
    report = p.read("reports/report.md")
    assert f"**failed**: seed {SEED}: loss became nan" in table_rows(report, "b")[0]
    assert "- **b failed**" in report
    assert "Best test accuracy: **a**" in report  # the other arch still reports
    assert "nan %" not in report.lower()
    assert "report" in json.dumps(p.status())  # not marked done: the next repro says so again


# --- the DVC workflows users came for ---------------------------------------------------------


def committed(p: Project, message: str) -> str:
    """Commit everything; return the branch name."""
    p.run("git", "add", "-A")
    p.run("git", "commit", "-q", "-m", message)
    return p.run("git", "rev-parse", "--abbrev-ref", "HEAD").strip()


def arch_of(path: str) -> str:
    return Path(path).name.split(".")[0]


def test_branches_differing_in_one_arch_diff_only_that_arch(project, tmp_path):
    p = project.copy(tmp_path / "project")
    main = committed(p, "results")
    p.run("git", "checkout", "-q", "-b", "wider")
    params = p.params()
    params["archs"]["a"]["hidden"] = [12]
    p.write_params(params)
    p.repro()
    committed(p, "wider a")

    metrics = json.loads(p.dvc("metrics", "diff", "--json", main, "wider"))
    assert metrics, "no metric changed"
    assert {arch_of(path) for path in metrics} == {"a"}, sorted(metrics)
    changed = metrics["reports/metrics/a.json"]
    # Nested metrics show up as dotted keys; a new network changes its size and every loss.
    assert {"params", "size_bytes", "test_loss", "val_loss", f"seeds.{SEED}.test_loss",
            f"seeds.{SEED}.val_loss"} <= set(changed), sorted(changed)
    assert changed["params"]["new"] == 784 * 12 + 12 + 12 * 10 + 10

    params_diff = json.loads(p.dvc("params", "diff", "--json", main, "wider"))
    # dvc reports list values as their YAML text
    assert params_diff == {"params.yaml": {"archs.a.hidden": {"old": "[8]", "new": "[12]"}}}

    plots = json.loads(p.dvc("plots", "diff", "--json", main, "wider"))
    assert not plots.get("errors"), plots.get("errors")
    curve = plots["data"]["reports/lr_range/a.csv"][0]["content"]
    assert curve["encoding"]["x"]["scale"] == {"type": "log"}  # the committed log-x template
    assert {row["rev"] for row in curve["data"]["values"]} == {main, "wider"}

    comparison = p.run(sys.executable, "-m", "scripts.compare", main)
    assert "| `archs.a.hidden` | [8] | [12] |" in comparison
    assert "| a | params | 6370 | 9550 |" in comparison
    assert not re.search(r"^\| b \|.*\| (test_accuracy|params) \|", comparison, re.M)


def test_exp_run_with_one_arch_changed_reruns_only_that_arch(project, tmp_path):
    p = project.copy(tmp_path / "project")
    committed(p, "results")
    output = p.dvc("exp", "run", "-S", "archs.a.hidden=[5]")
    assert sorted(ran(output)) == ["evaluate@a", "lr_range@a", "report", "train@a"], output
    table = json.loads(p.dvc("exp", "show", "--json"))
    assert "[5]" in json.dumps(table)


def test_push_then_clone_and_pull_is_up_to_date_without_running_anything(project, tmp_path):
    p = project.copy(tmp_path / "project")
    p.dvc("remote", "add", "-d", "shared", str(tmp_path / "remote"))
    committed(p, "results and remote")
    p.dvc("push")

    clone = Project(tmp_path / "clone", p.env, "")
    p.run("git", "clone", "-q", str(p.root), str(clone.root))
    clone.dvc("pull")
    assert clone.status() == {}
    stages, output = clone.repro()
    assert stages == [], output
    for arch in ARCHS:
        assert snapshot(clone.root / "models" / arch) == snapshot(p.root / "models" / arch), arch

    other = Project(tmp_path / "other", p.env, "")
    p.run("git", "clone", "-q", str(p.root), str(other.root))
    stages, output = other.repro("--pull")
    assert stages == [], output
    assert (other.root / "data/prepared/x_train.npy").is_file()


def test_queued_experiments_run_two_at_a_time(project, tmp_path):
    p = project.copy(tmp_path / "project")
    committed(p, "results")
    for hidden in ("[5]", "[7]"):
        p.dvc("exp", "run", "--queue", "-S", f"archs.a.hidden={hidden}")
    # `dvc queue start` may stay attached to its workers after the queue drains: do not wait on it.
    starter = subprocess.Popen([DVC, "queue", "start", "-j", "2"], cwd=p.root, env=p.env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            status = p.dvc("queue", "status")
            if len(re.findall(r"\b(Success|Failed)\b", status)) == 2:
                break
            time.sleep(3)
        else:
            pytest.fail(f"queue still busy after 600 s:\n{status}")
    finally:
        p.run(DVC, "queue", "stop", "--kill", check=False)
        try:
            starter.wait(timeout=60)
        except subprocess.TimeoutExpired:
            starter.kill()

    assert len(re.findall(r"\bSuccess\b", status)) == 2 and "Failed" not in status, status
    shown = json.dumps(json.loads(p.dvc("exp", "show", "--json")))
    for hidden in ([5], [7]):
        assert f'"hidden": {json.dumps(hidden)}' in shown, shown[:2000]
