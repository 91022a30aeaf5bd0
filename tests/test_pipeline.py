"""The whole pipeline end to end: real `git` and `dvc repro` on tiny data in a temporary project.

One module-scoped fixture builds the project (this repo's stages/, scripts/ and dvc.yaml, a
params.yaml derived from the real one with tiny data and two tiny archs) and builds it from
nothing the way `make lr-study` does: the range tests, the opt-in study, then the rest.
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

from conftest import ROOT, tiny_mnist, write_idx_folder
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
    })
    return env


def derived_params(idx_folder: Path, sums: dict[str, str]) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["sources"] = [{"local": str(idx_folder)}]
    params["data"]["sha256"] = dict(sums)
    params["data"]["val_size"] = VAL_SIZE
    params["lr_range"].update(LR_RANGE)
    params["train"].update(TRAIN)
    params["archs"] = json.loads(json.dumps(ARCHS))
    if "lr_study" in params:
        params["lr_study"]["grid"] = [0.1]  # the opt-in study trains once per rate: keep it short
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
    study = p.run(sys.executable, "-m", "scripts.lr_study")
    _, after = p.repro()
    p.first_repro = before + study + after
    return p


def ran(output: str) -> list[str]:
    return RUNNING.findall(output)


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def table_rows(markdown: str, arch: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith(f"| {arch} |")]


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


@pytest.mark.parametrize("arch", ARCHS)
def test_model_outputs(project, arch):
    model = project.root / "models" / f"{arch}.keras"
    with zipfile.ZipFile(model) as z:
        assert z.testzip() is None
        config = json.loads(z.read("config.json"))
        assert "date_saved" not in json.loads(z.read("metadata.json"))
    dense = [layer["config"]["units"] for layer in config["config"]["layers"] if layer["class_name"] == "Dense"]
    assert dense == [*ARCHS[arch]["hidden"], 10]
    logs = project.root / "models" / "logs" / arch
    assert logs.is_dir() and any(p.is_file() for p in logs.rglob("*"))


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


@pytest.mark.parametrize("arch", ARCHS)
def test_train_and_evaluate_outputs(project, arch):
    params = project.params()
    swept = project.json(f"reports/lr_range/{arch}.json")
    trained = project.json(f"reports/train/{arch}.json")
    rule = params["lr_range"]["rule"]
    assert trained["lr_chosen_by"] == rule and trained["lr"] == swept["picks"][rule]["lr"]
    assert 1 <= trained["epochs_run"] <= TRAIN["epochs"] and 0 <= trained["best_epoch"] < trained["epochs_run"]

    header, rows = read_csv(project.root / "reports" / "history" / f"{arch}.csv")
    assert header == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"]
    assert [int(r["epoch"]) for r in rows] == list(range(trained["epochs_run"]))
    assert all(float(r["lr"]) == pytest.approx(trained["lr"], rel=1e-5) for r in rows)

    metrics = project.json(f"reports/metrics/{arch}.json")
    assert 0 <= metrics["test_accuracy"] <= 1 and 0 <= metrics["val_accuracy"] <= 1
    assert np.isfinite(metrics["test_loss"])
    assert (metrics["n_train"], metrics["n_test"]) == (N_TRAIN - VAL_SIZE, N_TEST)
    assert metrics["lr"] == trained["lr"] and metrics["best_epoch"] == trained["best_epoch"]
    best_val_loss = float(rows[trained["best_epoch"]]["val_loss"])
    assert metrics["val_loss"] == pytest.approx(best_val_loss, rel=1e-4)  # the saved model is the best epoch's


def test_report_output(project):
    report = project.read("reports/report.md")
    for arch in ARCHS:
        assert len(table_rows(report, arch)) >= 2, arch  # at least the results and range-test tables
    figures = re.findall(r"\]\((figures/[^)]+)\)", report)
    assert "figures/lr_range.png" in figures
    for rel in figures:
        assert (project.root / "reports" / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", rel


# --- reruns ----------------------------------------------------------------------------------


def test_second_repro_runs_nothing(project):
    stages, output = project.repro()
    assert stages == [], output
    assert project.status() == {}


def test_changing_one_arch_reruns_only_that_arch_and_the_report(project, tmp_path):
    p = project.copy(tmp_path / "project")
    b_before = {rel: (p.root / rel).read_bytes()
                for rel in ("models/b.keras", "reports/lr_range/b.csv", "reports/metrics/b.json")}
    params = p.params()
    params["archs"]["a"]["hidden"] = [5]
    p.write_params(params)

    stages, output = p.repro()
    assert sorted(stages) == ["evaluate@a", "lr_range@a", "report", "train@a"], output
    assert stages[-1] == "report"
    for rel, data in b_before.items():
        assert (p.root / rel).read_bytes() == data, rel
    with zipfile.ZipFile(p.root / "models" / "a.keras") as z:
        layers = json.loads(z.read("config.json"))["config"]["layers"]
    assert [la["config"]["units"] for la in layers if la["class_name"] == "Dense"] == [5, 10]
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
    for rel in ("models/b.keras", "models/logs/b", "reports/lr_range/b.csv", "reports/lr_range/b.json",
                "reports/history/b.csv", "reports/train/b.json", "reports/metrics/b.json",
                "reports/timings/b.train.json", "reports/timings/b.lr_range.json"):
        assert not (p.root / rel).exists(), rel
    assert (p.root / "models/a.keras").is_file()


@pytest.fixture(scope="module")
def forced(project, tmp_path_factory) -> tuple[Project, bytes, list[str], str]:
    """A copy of the project after `dvc repro -f train@a` with nothing changed."""
    p = project.copy(tmp_path_factory.mktemp("forced") / "project")
    model_before = (p.root / "models" / "a.keras").read_bytes()
    stages, output = p.repro("-f", "train@a")
    return p, model_before, stages, output


def test_forced_retrain_writes_a_byte_identical_model(forced):
    p, model_before, stages, output = forced
    assert "train@a" in stages, output
    assert (p.root / "models" / "a.keras").read_bytes() == model_before
    assert "models/a.keras" not in json.dumps(p.status())


def test_after_a_forced_identical_retrain_only_the_report_reruns(forced):
    # The timings changed (the report shows them); nothing a result depends on did.
    p, _, _, _ = forced
    stages, output = p.repro()
    assert stages == ["report"], output
    assert p.status() == {}


def test_training_that_diverges_is_reported_as_failed_and_fails_the_pipeline(project, tmp_path):
    p = project.copy(tmp_path / "project")
    params = p.params()
    params["archs"]["b"]["lr"] = 1e12  # a fixed rate far too high: the loss becomes NaN
    p.write_params(params)

    output = p.run(DVC, "repro", check=False)
    assert "training failed for:" in output and "b: loss became nan" in output, output
    assert "Traceback" not in output
    metrics = p.json("reports/metrics/b.json")
    assert metrics["failed"].startswith("loss became nan")
    assert metrics["test_accuracy"] is None and metrics["val_accuracy"] is None
    report = p.read("reports/report.md")
    assert "**failed**: loss became nan" in table_rows(report, "b")[0]
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
    assert "test_accuracy" in metrics["reports/metrics/a.json"] or "params" in metrics["reports/metrics/a.json"]
    assert metrics["reports/metrics/a.json"]["params"]["new"] == 784 * 12 + 12 + 12 * 10 + 10

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
    assert (clone.root / "models/a.keras").read_bytes() == (p.root / "models/a.keras").read_bytes()

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
