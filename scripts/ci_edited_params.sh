#!/usr/bin/env bash
# CI: the tests must not depend on the live params.yaml. Copies the project (tracked files, as
# they are in the working tree) to a scratch folder, edits its params.yaml the way a user would
# (YAML round trip: comments and layout kept), checks the edited file is valid, and runs the test
# suite there with this project's venv ($VENV, default .venv).
#
# Usage: [VENV=.venv-3.13] scripts/ci_edited_params.sh [pytest arguments]   (default: the whole suite)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python="$root/${VENV:-.venv}/bin/python"
[ -x "$python" ] || { echo "no $python: run 'make setup' first" >&2; exit 2; }

scratch=$(mktemp -d "${TMPDIR:-/tmp}/edited-params.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
git -C "$root" ls-files -z | tar -C "$root" --null --ignore-failed-read -T - -cf - | tar -C "$scratch" -xf -

cd "$scratch"
"$python" - <<'EOF'
from pathlib import Path

from ruamel.yaml import YAML

from stages.lib.lr_finder import RULES
from stages.plumbing.params import load_params

path = Path("params.yaml")
yaml = YAML()  # round trip, as an editor would leave the file
yaml.width = 4096  # no wrapping of long lines
yaml.indent(mapping=2, sequence=4, offset=2)  # the file's own list style
params = yaml.load(path.read_text())
params["seed"] = params["seed"] + 7
params["data"]["val_size"] = params["data"]["val_size"] + 1000
params["lr_range"]["rule"] = next(rule for rule in RULES if rule != params["lr_range"]["rule"])
params["lr_range"]["factor"] = 1.01
params["train"]["epochs"] = params["train"]["epochs"] + 2
params["train"]["repeats"] = params["train"]["repeats"] + 1
params["report"]["tie_margin"] = params["report"]["tie_margin"] * 2
params["evidence"]["seeds"].append(max(params["evidence"]["seeds"]) + 1)
params["evidence"]["grid"] = params["evidence"]["grid"][1:]
params["evidence"]["max_epochs"] = params["evidence"]["max_epochs"] // 2
archs = params["archs"]
first, last = list(archs)[0], list(archs)[-1]
archs[first]["hidden"] = [256, 128]  # change an arch
archs[first]["activation"] = "tanh"
del archs[last]  # remove one
archs["slim"] = yaml.load("{hidden: [64], lr: 0.1}")  # add one, on one line like the others
with path.open("w") as f:
    yaml.dump(params, f)
load_params(path)  # the edits must leave a valid file, or this run proves nothing
EOF
echo "params.yaml edited in $scratch:"
diff -u "$root/params.yaml" params.yaml || true

"$python" -m pytest -p no:cacheprovider "$@"
