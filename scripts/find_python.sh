#!/bin/sh
# Prints "<interpreter> <X.Y>" for the Python that `make setup` builds the venv with, or fails with a message.
# Usage: PYTHON=<python> sh scripts/find_python.sh <venv dir>
#   PYTHON set:               that interpreter, if it runs and is a supported version.
#   else an existing venv:    the Python the venv was made with (so `make test` keeps a PYTHON=... venv).
#   else:                     the first that runs of python3.11 (the committed results were made with it),
#                             python3.13, python3.12, python3.10.
# Candidates are run, not just looked up: a pyenv shim for a version that is not selected exists but fails.
SUPPORTED="3.10 3.11 3.12 3.13"    # every CPython that tensorflow-cpu 2.21.0 has wheels for
PREFERRED="3.11 3.13 3.12 3.10"
venv=${1:-.venv}

version_of() {  # X.Y of interpreter $1, empty if it does not run
    "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null
}
supported() {
    case " $SUPPORTED " in *" $1 "*) return 0 ;; esac
    return 1
}
fail() {
    echo "error: $*" >&2
    echo "Supported Python versions: $SUPPORTED. Install one, or name it: make PYTHON=/path/to/python3.X setup" >&2
    exit 1
}

if [ -n "${PYTHON:-}" ]; then
    ver=$(version_of "$PYTHON")
    [ -n "$ver" ] || fail "PYTHON=$PYTHON does not run (not installed, or a pyenv shim of a version pyenv has not selected)"
    supported "$ver" || fail "PYTHON=$PYTHON is Python $ver, which this project does not support"
    echo "$PYTHON $ver"
    exit 0
fi

if [ -f "$venv/pyvenv.cfg" ]; then
    home=$(sed -n 's/^home *= *//p' "$venv/pyvenv.cfg")
    ver=$(sed -n 's/^version *= *\([0-9]*\.[0-9]*\).*/\1/p' "$venv/pyvenv.cfg")
    for py in "$home/python$ver" "$home/python3"; do
        if [ -n "$ver" ] && supported "$ver" && [ "$(version_of "$py")" = "$ver" ]; then
            echo "$py $ver"
            exit 0
        fi
    done
fi

for want in $PREFERRED; do
    if [ "$(version_of "python$want")" = "$want" ]; then
        echo "python$want $want"
        exit 0
    fi
done
fail "no supported Python found (tried python3.11, python3.13, python3.12, python3.10 on the PATH)"
