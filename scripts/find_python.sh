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
# An interpreter that runs for name $1: itself, else for python3.X (or 3.X) pyenv's build of 3.X even when
# pyenv has not selected it (its shim then fails, while `pyenv prefix` and the versions folder still find it).
resolve() {
    if [ -n "$(version_of "$1")" ]; then echo "$1"; return 0; fi
    want=$(printf '%s\n' "$1" | sed -n 's/^\(python\)\{0,1\}\(3\.[0-9][0-9]*\)$/\2/p')
    [ -n "$want" ] || return 1
    prefix=$(pyenv prefix "$want" 2>/dev/null) || prefix=""
    for py in ${prefix:+"$prefix/bin/python$want"} "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$want".*/bin/"python$want"; do
        if [ "$(version_of "$py")" = "$want" ]; then echo "$py"; return 0; fi
    done
    return 1
}
fail() {
    echo "error: $*" >&2
    echo "Supported Python versions: $SUPPORTED. Install one, or name it: make PYTHON=/path/to/python3.X setup" >&2
    exit 1
}

if [ -n "${PYTHON:-}" ]; then
    py=$(resolve "$PYTHON") || fail "PYTHON=$PYTHON does not run (not installed, or not found through pyenv)"
    ver=$(version_of "$py")
    supported "$ver" || fail "PYTHON=$PYTHON is Python $ver, which this project does not support"
    echo "$py $ver"
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
    if py=$(resolve "python$want"); then
        echo "$py $want"
        exit 0
    fi
done
fail "no supported Python found (tried python3.11, python3.13, python3.12, python3.10 on the PATH)"
