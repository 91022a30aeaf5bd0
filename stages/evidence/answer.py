"""Stage answer: reports/answer.md and its figures in reports/answer/, from every evidence record.

Usage: python -m stages.evidence.answer
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from stages.ground.atomic import write_text
from stages.ground.errors import StageError
from stages.lib.answer import (
    Answer,
    OneEpochRecords,
    Records,
    answer,
    headline,
    learning_curves,
    per_class,
    pick_points,
)
from stages.lib.answer_md import render
from stages.lib.evidence import SCORE_DIGITS, distinct_picks, grid_best, rate_for, unpack_bits
from stages.lib.figures import (
    cost_figure,
    gaps_figure,
    grid_figure,
    long_curves_figure,
    long_losses_figure,
    per_class_figure,
    rule_picks_figure,
)
from stages.lib.lr_finder import RULES, chosen_rate
from stages.lib.schema import Params, ParamsError, count_params
from stages.lib.shapes import ANSWER_METRICS, EVIDENCE, EVIDENCE_TIMING, LR_RANGE, SCORE_KEYS
from stages.lib.stats import Interval
from stages.plumbing import paths, records
from stages.plumbing.cli import run
from stages.plumbing.params import load_params

REBUILD = "rebuild it with `dvc repro evidence/dvc.yaml`"
REBUILD_QUICK = "rebuild it with `dvc repro` (the quick study), then `dvc repro evidence/dvc.yaml`"
FIGURES = {"gaps": "gaps.png", "curves": "long_curves.png", "losses": "long_losses.png", "cost": "cost.png",
           "classes": "per_class.png", "grid": "grid.png", "picks": "rule_picks.png"}

QUICK = {"picks": LR_RANGE["picks"]}  # what the answer reads of the quick study's range tests


def damaged(path: Path, what: str) -> StageError:
    return records.damaged(path, what, REBUILD)


def read(path: Path, spec: dict, fix: str = REBUILD) -> dict:
    """A record, checked against ``spec``: a missing or damaged one is one line naming it and ``fix``."""
    return records.read(path, spec, fix)


def read_unit(unit: paths.Unit) -> dict:
    """One stage's record, checked against its kind's shape; it must say it is that stage's: kind, arch, seed."""
    path = paths.evidence_json(*unit)
    record = read(path, EVIDENCE[unit.kind])
    wrong = [f"{key} is {record[key]!r}, not {value!r}" for key, value in
             (("kind", unit.kind), ("arch", unit.arch), ("seed", unit.seed)) if record[key] != value]
    if wrong:
        raise damaged(path, "; ".join(wrong))
    return record


def read_kind(kind: str, params: Params, networks: Iterable[str]) -> dict[str, dict[int, dict]]:
    """Every record of ``kind`` for ``networks`` (a by_rate kind: of evidence.long_rules.arch), read with read_unit.

    Returns:
        network (a by_rate kind: rate source) -> seed -> record, in evidence/dvc.yaml's order.
    """
    out: dict[str, dict[int, dict]] = {}
    for unit in paths.evidence_units(kind, params.evidence, networks):
        out.setdefault(unit.rate or unit.arch, {})[unit.seed] = read_unit(unit)
    return out


def check_runs(path: Path, runs: list[dict]) -> None:
    """Every run scored whole or not at all, with one history row per epoch run and its kept epoch among them."""
    for one in runs:
        kept = one["best_epoch"]
        if len({key in one for key in SCORE_KEYS}) > 1:
            raise damaged(path, f"the run at rate {one['lr']:g} has some of {', '.join(SCORE_KEYS)} but not all")
        if len(one["history"]) != one["epochs_run"] or not (kept is None or 0 <= kept < one["epochs_run"]):
            raise damaged(path, f"the run at rate {one['lr']:g} has {len(one['history'])} epochs of history, "
                                f"epochs_run {one['epochs_run']} and best_epoch {kept}")


def check_rate(path: Path, record: dict, lr: float, how: str) -> None:
    """A long run trained at the rate its source names now; otherwise the record is stale."""
    if record["lr"] != lr or record["lr_chosen_by"] != how:
        raise damaged(path, f"trained at rate {record['lr']:g} ({record['lr_chosen_by']}), but its source now "
                            f"names {lr:g} ({how})")


def check_test_detail(path: Path, record: dict) -> int | None:
    """A scored long run's per-image results agree with its confusion matrix and accuracy; its test images."""
    has = {key in record for key in ("test_correct", "confusion", "test_accuracy")}
    if has != {"test_accuracy" in record}:
        raise damaged(path, "test_correct and confusion must be present exactly when the run has scores")
    if "test_accuracy" not in record:
        return None
    confusion = np.array(record["confusion"])
    n_test, right = int(confusion.sum()), int(np.trace(confusion))
    try:
        flags = unpack_bits(record["test_correct"], n_test)
    except ValueError as err:  # binascii.Error: bad padding
        raise damaged(path, f"test_correct is not base64 ({err})") from None
    if len(flags) < n_test:
        raise damaged(path, f"test_correct holds {len(flags)} images' results, but confusion counts {n_test}")
    if int(flags.sum()) != right or round(right / n_test, SCORE_DIGITS) != record["test_accuracy"]:
        raise damaged(path, f"test_correct ({int(flags.sum())} right), confusion ({right} of {n_test} right) and "
                            f"test_accuracy {record['test_accuracy']} disagree")
    return n_test


def check_seeds(params: Params) -> None:
    e = params.evidence
    for key, seeds in (("evidence.seeds", e.seeds), ("evidence.long_rules.seeds", e.long_rules.seeds)):
        if len(seeds) < 2:
            raise ParamsError([f"params.yaml: {key}: too few seeds for an interval (got {list(seeds)}; "
                               "expected at least 2)"])


def read_ranges(params: Params, networks: Iterable[str]) -> dict[str, dict[int, dict]]:
    ranges = read_kind("range", params, networks)
    for arch, by_seed in ranges.items():
        for s, record in by_seed.items():
            missing = [rule for rule in RULES if rule not in record["picks"]]
            if missing:
                raise damaged(paths.evidence_json("range", arch, s), f"picks has no {', '.join(missing)}")
    return ranges


def read_one_epoch(kind: str, params: Params, rates: dict[str, list[float]]) -> dict[str, dict[int, dict]]:
    """The grid or picks records of the networks ``rates`` names; each must have a run at every one of its
    network's ``rates``."""
    out = read_kind(kind, params, rates)
    for arch in rates:
        for s, record in out[arch].items():
            check_runs(paths.evidence_json(kind, arch, s), record["runs"])
            missing = sorted(set(rates[arch]) - {run["lr"] for run in record["runs"]})
            if missing:
                raise damaged(paths.evidence_json(kind, arch, s),
                              f"no run at rate(s) {', '.join(f'{lr:g}' for lr in missing)}")
    return out


def read_longs(params: Params, quick: dict[str, dict]) -> tuple[dict[str, dict[int, dict]], int]:
    """The long runs, each at the rate the quick study names now; and the number of test images."""
    longs, tests = read_kind("long", params, params.archs), set()
    for arch, a in params.archs.items():
        lr, how = chosen_rate(a.lr, params.rule_for(a), quick[arch], arch)
        for s, record in longs[arch].items():
            check_runs(paths.evidence_json("long", arch, s), [record])
            check_rate(paths.evidence_json("long", arch, s), record, lr, how)
            tests.add(check_test_detail(paths.evidence_json("long", arch, s), record))
    n_tests = sorted(tests - {None})
    if len(n_tests) != 1:
        raise StageError(f"the long runs' confusion matrices count {n_tests or 'no'} test images: expected one "
                         f"number (no run scored, or records from different data); {REBUILD}")
    return longs, n_tests[0]


def read_long_rules(params: Params, quick: dict[str, dict], grids: dict[str, dict[int, dict]]) -> dict:
    """The long budget's records, each at the rate its source names now.

    Args:
        quick: arch -> the quick study's range-test picks (what the rule sources name).
        grids: arch -> seed -> grid record (what the grid sources name).

    Returns:
        rate source -> seed -> record.
    """
    e = params.evidence
    arch = e.long_rules.arch
    best = grid_best(e.grid, list(grids[arch].values()))
    out = read_kind("long_rules", params, [arch])
    for source in e.long_rules.rates:
        lr = rate_for(source, quick[arch], e.grid, best)
        for s, record in out[source].items():
            check_runs(paths.evidence_json("long_rules", arch, s, source), [record])
            check_rate(paths.evidence_json("long_rules", arch, s, source), record, lr, source)
    return out


def read_timings(params: Params) -> dict[str, dict[str, list[dict]]]:
    """stage kind (heldout_range for a held-out network's range tests) -> network -> the timing record of each of
    its stages."""
    units = {kind: paths.evidence_units(kind, params.evidence, params.archs) for kind in paths.EVIDENCE_KINDS}
    units |= {stage: paths.evidence_units(kind, params.evidence, params.evidence.heldout)
              for stage, kind in paths.HELDOUT_STAGES.items()}
    timings: dict[str, dict[str, list[dict]]] = {}
    for stage, stage_units in units.items():
        for unit in stage_units:
            record = read(paths.evidence_timing(*unit), EVIDENCE_TIMING)
            timings.setdefault(stage, {}).setdefault(unit.arch, []).append(record)
    return timings


def load_records(params: Params) -> Records:
    """Every record the answer needs, read and checked before anything is drawn or written."""
    check_seeds(params)
    quick = {arch: read(paths.lr_range_json(arch), QUICK, REBUILD_QUICK)["picks"] for arch in params.archs}
    ranges, grids, picks = regret_records(params, params.archs)
    longs, n_test = read_longs(params, quick)
    return Records(ranges, grids, picks, OneEpochRecords(*regret_records(params, params.evidence.heldout)), longs,
                   read_long_rules(params, quick, grids), read_timings(params), n_test)


def regret_records(params: Params, networks: Iterable[str]) -> tuple[dict, dict, dict]:
    """The range tests, grid and picks records of ``networks``: what the rules' regret is computed from."""
    ranges = read_ranges(params, networks)
    grids = read_one_epoch("grid", params, {arch: list(params.evidence.grid) for arch in networks})
    picks = read_one_epoch("picks", params, {arch: distinct_picks(list(r.values())) for arch, r in ranges.items()})
    return ranges, grids, picks


def triple(i: Interval) -> tuple[float, float, float]:
    return i.estimate, i.low, i.high


def draw(params: Params, data: Records, result: Answer) -> dict[str, Path]:
    """Every figure, into reports/answer/; key -> the file written."""
    out = {key: paths.ANSWER_FIGURES / name for key, name in FIGURES.items()}
    la, o = result.long, result.one_epoch
    gaps_figure(gap_families(result), out["gaps"])
    long_curves_figure(learning_curves(data.longs), out["curves"])
    train, val = learning_curves(data.longs, "loss"), learning_curves(data.longs, "val_loss")
    long_losses_figure({arch: {seed: (train[arch][seed][0], val[arch][seed][0], val[arch][seed][1])
                               for seed in by_seed} for arch, by_seed in val.items()}, out["losses"])
    cost_figure({arch: {"params": count_params(params.archs[arch].hidden),
                        "cpu_seconds_per_epoch": result.cost.cpu_seconds_per_epoch[arch],
                        "val": triple(s.val_acc), "test": triple(s.test_acc)} for arch, s in la.summaries.items()},
                out["cost"])
    per_class_figure({arch: [triple(i) for i in per_class(list(runs.values()))] for arch, runs in data.longs.items()},
                     la.ranking_acc.best, out["classes"])
    grid_figure(list(o.grid), {arch: [triple(i) for i in curve] for arch, curve in o.curves.items()},
                pick_points(data, list(RULES)), {arch: o.grid[i] for arch, i in o.best.items()}, out["grid"])
    rule_picks_figure({arch: {rule: [r["picks"][rule]["lr"] for r in by_seed.values() if "lr" in r["picks"][rule]]
                              for rule in RULES} for arch, by_seed in data.ranges.items()},
                      {arch: {"best grid rate (one epoch)": o.grid[o.best[arch]],
                              "long runs' rate": la.summaries[arch].lr} for arch in params.archs}, out["picks"])
    return out


def gap_families(result: Answer) -> dict[str, list[tuple[str, float, float, float]]]:
    """Every gap the answer's verdicts rest on, by family, as the differences chart draws them."""
    families = {}
    for what, r in (("Long runs, most accurate epoch", result.long.ranking_acc),
                    ("Long runs, lowest-loss epoch", result.long.ranking),
                    ("One epoch, best grid rate", result.one_epoch.ranking),
                    (f"Long budget for {result.budget.arch}, most accurate epoch", result.budget.ranking_acc)):
        if r.pairs:
            families[f"{what}: validation, {r.best} minus each (Tukey 95 % over {r.pairs} "
                     f"pair{'s' * (r.pairs > 1)})"] = [(name, *triple(r.gaps[name])) for name in r.order[1:]]
    c = result.rules
    if c.leads:
        families[f"Held-out regret: each rule minus {c.recommended} (paired, Bonferroni 95 % over "
                 f"{len(c.leads)})"] = [(rule, *triple(g)) for rule, g in c.leads.items()]
    return families


def figure_links() -> dict[str, str]:
    """Each figure's link from answer.md: key -> its path relative to answer.md's folder."""
    return {key: (paths.ANSWER_FIGURES / name).relative_to(paths.ANSWER_MD.parent).as_posix()
            for key, name in FIGURES.items()}


def main(argv: list[str]) -> None:
    if argv:
        raise StageError("usage: python -m stages.evidence.answer")
    params = load_params()
    data = load_records(params)
    result = answer(params, data)
    draw(params, data, result)
    write_text(paths.ANSWER_MD, render(params, result, figure_links()))
    records.write_json(paths.ANSWER_JSON, headline(result), ANSWER_METRICS)
    best = result.long.ranking_acc.best
    print(f"answer: {paths.ANSWER_MD}: {best} has the highest mean validation accuracy "
          f"({result.long.summaries[best].val_acc.estimate:.2f} %), {len(FIGURES)} figures in {paths.ANSWER_FIGURES}")


if __name__ == "__main__":
    run(main)
