"""`python -m bench.slurm_projection [WORKERS]`: the wall time of the whole evidence on WORKERS (default 16) one-CPU
workers, from the committed timing records (reports/evidence/timings/), not a guess.

Two figures:
- `make slurm WORKERS=N CPUS=1 PIPELINE=evidence/dvc.yaml` as shipped: scripts/worker.py deals whole archs to the
  shares, so a share's stages run one after another on its CPU and the longest share is the wall time;
- the floor of any dealing on N one-CPU workers, stage by stage: the longest chain of stages that wait for one
  another, and the work divided by N; and a list schedule (each free worker takes the ready stage with the longest
  chain behind it, as scripts/lanes.py does) that shows how near the floor a per-stage dealing gets.
Costs are CPU seconds (a stage trains on one thread: on a CPU of its own, its wall time); the wall seconds the
records also hold were inflated by other work on the machine that made them (answer.md, Compute). Stages without a
committed record (the quick study's download, split and range tests, and the answer) are left out, and named.
"""

from __future__ import annotations

import heapq
import json
from pathlib import Path

from scripts import lanes, worker
from stages.plumbing.cli import refuse, run
from stages.plumbing.params import load_params

USAGE = "usage: python -m bench.slurm_projection [WORKERS]"
PIPELINE = "evidence/dvc.yaml"
DEFAULT_WORKERS = 16


def recorded_seconds(paths: list[Path], key: str) -> float | None:
    """The sum of ``key`` over a stage's timing records; None if it has none."""
    values = [json.loads(path.read_text(encoding="utf-8"))[key] for path in paths if path.is_file()]
    return sum(values) if values else None


def chain(upstream: dict[str, frozenset[str]], cost: dict[str, float]) -> tuple[float, list[str]]:
    """The longest chain of stages each waiting for the one before: its seconds and its stages, first to last."""
    best: dict[str, tuple[float, list[str]]] = {}

    def ending_at(stage: str) -> tuple[float, list[str]]:
        if stage not in best:
            before = max((ending_at(up) for up in upstream[stage]), default=(0.0, []))
            best[stage] = (before[0] + cost[stage], [*before[1], stage])
        return best[stage]

    return max((ending_at(stage) for stage in upstream), key=lambda found: found[0])


def list_schedule(upstream: dict[str, frozenset[str]], cost: dict[str, float], workers: int) -> float:
    """The wall seconds of ``workers`` one-CPU workers, each taking, whenever it is free, the ready stage with the
    longest chain of work behind it (scripts/lanes.py's order)."""
    priority = lanes.chain_lengths(upstream, cost)
    waiting, finished, running, now = set(upstream), set(), [], 0.0
    while waiting or running:
        ready = sorted((s for s in waiting if upstream[s] <= finished), key=lambda s: (-priority[s], s))
        for stage in ready[:workers - len(running)]:
            waiting.discard(stage)
            heapq.heappush(running, (now + cost[stage], stage))
        now, stage = heapq.heappop(running)
        finished.add(stage)
    return now


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h ({seconds / 60:.0f} min)"


def main(argv: list[str]) -> None:
    if len(argv) > 1 or (argv and not (argv[0].isdigit() and 1 <= int(argv[0]) <= worker.MAX_SHARDS)):
        raise refuse(USAGE, argv, f"WORKERS from 1 to {worker.MAX_SHARDS:,}")
    workers = int(argv[0]) if argv else DEFAULT_WORKERS
    params = load_params()
    plan = lanes.make_plan([PIPELINE], force=True)  # every stage `dvc repro -f` would run, with its upstream
    records = worker.pipeline_stages(PIPELINE)
    cpu = {stage: recorded_seconds(records.get(stage, []), "cpu_seconds") for stage in plan.stages}
    wall = {stage: recorded_seconds(records.get(stage, []), "seconds") for stage in plan.stages}
    unmeasured = [stage for stage in plan.stages if cpu[stage] is None]
    cost = {stage: cpu[stage] or 0.0 for stage in plan.stages}
    total = sum(cost.values())
    print(f"evidence: {len(plan.stages) - len(unmeasured)} stages with committed timing records, "
          f"{total / 3600:.2f} CPU-hours ({sum(w or 0.0 for w in wall.values()) / 3600:.2f} wall hours as recorded)")
    print(f"left out, no committed record: {', '.join(unmeasured)}")

    by_arch = {stage: worker.arch_of(stage, params.networks, params.evidence.long_rules.arch) for stage in plan.stages}
    per_arch = {arch: sum(cost[s] for s in plan.stages if by_arch[s] == arch) for arch in params.networks}
    shares = worker.deal(per_arch, workers)
    loads = [sum(per_arch[arch] for arch in share) for share in shares]
    longest = loads.index(max(loads))
    print(f"\n`make slurm WORKERS={workers} CPUS=1 PIPELINE={PIPELINE}` (whole archs per share): "
          f"{sum(1 for share in shares if share)} of {workers} shares have work; the longest, share {longest} "
          f"({', '.join(shares[longest])}: {sum(1 for s in plan.stages if by_arch[s] in shares[longest])} stages), "
          f"takes {hours(loads[longest])}: the wall time")
    wall_loads = [sum(wall[s] or 0.0 for s in plan.stages if by_arch[s] in share) for share in shares]
    print(f"  (by the recorded wall seconds instead, inflated by a busy machine: {hours(max(wall_loads))})")
    for i, share in sorted(enumerate(shares), key=lambda item: -loads[item[0]]):
        if share:
            print(f"  share {i:>2}: {hours(loads[i]):>18}  {', '.join(share)}")

    length, stages = chain(plan.upstream, cost)
    print(f"\nper stage on {workers} one-CPU workers: at least {hours(max(length, total / workers))}: the longest "
          f"chain {hours(length)}, the work / {workers} {hours(total / workers)}")
    print(f"  the longest chain: {' -> '.join(s if cpu[s] is not None else f'{s} (no record)' for s in stages)}")
    print(f"  a list schedule, longest chain first: {hours(list_schedule(plan.upstream, cost, workers))}")


if __name__ == "__main__":
    run(main, usage=USAGE)
