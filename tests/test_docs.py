"""README and docs/: README short, with the commands first; every link resolves; every doc is linked from README;
every ```bash block is run by a test as written, or listed here with why it is not."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from harness import COMPARING_BLOCKS, COMPARING_DOC, DOCS, ROOT, bash_blocks

README = Path("README.md")
README_MAX_LINES = 150
COMMANDS_WITHIN_LINES = 25
# Code blocks are ```bash (commands, checked below), ```yaml (params.yaml, a Kubernetes Job) or ```text (what a
# command prints): a command in a block of another kind would escape the check.
FENCES = {"bash", "yaml", "text"}

# The ```bash blocks no test runs as written, by file and first command, and why. The rest are COMPARING_BLOCKS.
NOT_RUN = {
    (README, "make repro"): "builds the study on real MNIST (network, minutes) and runs the whole suite; "
                            "tests/test_pipeline.py runs `make repro` on a tiny project, .ci/run runs `make test`",
    (README, "make test-fast"): "the suite itself (.ci/run runs it); `make evidence` trains for hours",
    (DOCS / "quick-check.md", "dvc exp run -S train.repeats=5"): "trains on real MNIST for minutes; "
                                                                  "docs/comparing.md's `dvc exp run -S` is run",
    (DOCS / "workers.md", "make repro"): "real MNIST, and hours for the evidence; tests/test_pipeline.py runs "
                                         "`make repro JOBS=2` on a tiny project and compares it with one lane",
    (DOCS / "workers.md", "make worker SHARD=0/2"): "needs several machines and a team remote; tests/test_workers.py "
                                                    "runs the same workers and aggregator against a local sshd",
    (DOCS / "workers.md", "dvc remote add -d shared ssh://"): "needs an SSH host; tests/test_workers.py adds an "
                                                              "SSH remote on a local sshd",
    (DOCS / "slurm.md", "make slurm WORKERS=4"): "needs a SLURM cluster and real MNIST; tests/test_slurm.py runs "
                                                  "`make slurm WORKERS=2` on a tiny project against a one-node cluster",
    (DOCS / "slurm.md", "squeue -j 12,13"): "job ids of a real submission; tests/test_slurm.py runs make slurm-status",
    (DOCS / "slurm.md", "make slurm-status"): "needs a failed share on a cluster; tests/test_slurm.py makes one, "
                                              "reads make slurm-status and reruns a share with ONLY",
}


def markdown_files() -> list[Path]:
    return [README, *sorted(path.relative_to(ROOT) for path in (ROOT / DOCS).glob("*.md"))]


def text(path: Path) -> str:
    return (ROOT / path).read_text(encoding="utf-8")


def relative_links(markdown: str) -> list[str]:
    """The targets of the Markdown links that point into the repository (no scheme, no bare #anchor),
    without their #anchor."""
    targets = re.findall(r"\]\(([^)\s]+)\)", markdown)
    return [target.split("#", 1)[0] for target in targets if not re.match(r"[a-z]+:|#", target)]


def test_readme_is_short():
    lines = len(text(README).splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move a section to docs/"


@pytest.mark.parametrize("command", ["make repro", "make test"])
def test_readme_gives_the_commands_first(command):
    head = "\n".join(text(README).splitlines()[:COMMANDS_WITHIN_LINES]) + "\n"
    commands = [c.text for block in bash_blocks(head) for c in block]
    assert command in commands, f"README.md's first {COMMANDS_WITHIN_LINES} lines have no ```bash line `{command}`"


def test_every_relative_link_resolves():
    broken = [f"{path}: {target}" for path in markdown_files() for target in relative_links(text(path))
              if not (ROOT / path.parent / target).exists()]
    assert not broken, f"links to nothing: {broken}"


def test_every_doc_is_linked_from_readme():
    linked = {(ROOT / target).resolve() for target in relative_links(text(README))}
    unlinked = [path.as_posix() for path in markdown_files()[1:] if (ROOT / path).resolve() not in linked]
    assert not unlinked, f"README.md links none of {unlinked}"


def test_code_blocks_are_bash_yaml_or_text():
    others = sorted(f"{path}: ```{info}" for path in markdown_files()
                    for info in re.findall(r"^```(\S*)$", text(path), re.M)[::2] if info not in FENCES)
    assert not others, f"code blocks neither ```bash, ```yaml nor ```text: {others}"


def test_every_bash_block_is_run_by_a_test_or_says_why_not():
    listed = {**{(COMPARING_DOC, first): "run by tests/test_pipeline.py" for first in COMPARING_BLOCKS}, **NOT_RUN}
    matched = {}
    for path in markdown_files():
        for block in bash_blocks(text(path)):
            first = block[0].text if block else ""
            keys = [key for key in listed if key[0] == path and first.startswith(key[1])]
            assert len(keys) == 1, (f"{path}: the ```bash block starting `{first}` is not listed once in "
                                    "COMPARING_BLOCKS (tests/harness.py) or NOT_RUN: run it in a test, or say why not")
            assert keys[0] not in matched, f"{path}: two ```bash blocks start with `{keys[0][1]}`"
            matched[keys[0]] = first
    stale = sorted(f"{path}: {first}" for path, first in set(listed) - set(matched))
    assert not stale, f"listed, but no ```bash block starts so: {stale}"
