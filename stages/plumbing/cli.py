"""How every stage starts and ends: known problems become one clear message, not a traceback."""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
from pathlib import Path
from typing import Callable, NoReturn

from stages.ground.atomic import written_paths
from stages.ground.errors import RESOURCE_ERRNOS, StageError, UsageError, memory_message, resource_message, shown
from stages.lib.schema import ParamsError
from stages.plumbing import paths


def run(main: Callable[[list[str]], None], skip_teardown: bool = False, usage: str | None = None) -> None:
    """Run a stage's main with clean errors, each saying what state the stage's outputs are in.

    Args:
        main: the stage's main, given the command line's arguments.
        skip_teardown: once main has returned (every output written and closed), end the process without the
            interpreter's teardown, which TensorFlow makes take ~2 s.
        usage: what `-h` or `--help` prints instead of running main; by default, main's module docstring (a
            stage's says what it does and how it is called).
    """
    if sys.argv[1:] in (["-h"], ["--help"]):
        print(usage or (sys.modules[main.__module__].__doc__ or "").strip())
        return
    stage = os.environ.get("DVC_STAGE")  # set by `dvc repro` and `dvc exp run`
    # A scheduler, `timeout` or `kill` stops a stage with SIGTERM: the same cleanup and message as Ctrl-C.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    if stage is not None:
        end_with_parent()
    # Under a locale that cannot encode a message (LC_ALL=C without UTF-8 coercion), print it escaped.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        main(sys.argv[1:])
        if skip_teardown:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
    except ParamsError as err:
        _fail(str(err), stage, 2)
    except UsageError as err:
        _fail(f"error: {err}", stage, 2)
    except StageError as err:
        _fail(f"error: {err}", stage, 1)
    except FileNotFoundError as err:
        _fail(f"error: {err.filename} is missing: restore it with `dvc checkout` or rebuild it with `dvc repro`",
              stage, 1)
    except MemoryError as err:
        _fail(f"error: {memory_message(err)}", stage, 1)
    except OSError as err:
        if err.errno not in RESOURCE_ERRNOS:
            if _caused_by_ctrl_c(err):
                _interrupted(stage)
            raise
        _fail(f"error: {resource_message(err)}", stage, 1)
    except Exception as err:
        # Ctrl-C inside a C extension's import (TensorFlow's) surfaces as an ImportError
        # caused by the KeyboardInterrupt.
        if not _caused_by_ctrl_c(err):
            raise
        _interrupted(stage)
    except KeyboardInterrupt:
        _interrupted(stage)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def end_with_parent() -> None:
    """Get SIGTERM (so: Ctrl-C's cleanup) when the process that started this one ends. A SIGTERM to DVC alone, as a
    process manager may send it, would otherwise leave the stage running, writing outputs DVC never records.
    Linux only; elsewhere nothing changes."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it ended before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _raise_keyboard_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _fail(message: str, stage: str | None, code: int) -> None:
    if stage is not None:  # outside DVC the outputs are as they were (atomic writes): nothing to add
        message += "\n" + outputs_under_dvc(stage, written_paths())
    print(message, file=sys.stderr)
    raise SystemExit(code) from None


def _interrupted(stage: str | None) -> None:
    if stage is None:
        written = written_paths()
        state = ("outputs were left as they were before this stage" if not written else
                 f"this run had replaced {_listing(written)}; the other outputs are as they were before it")
        print(f"interrupted: {state}; rerun `dvc repro`", file=sys.stderr)
    else:
        print(f"interrupted: {outputs_under_dvc(stage, written_paths())}", file=sys.stderr)
    raise SystemExit(130) from None


def outputs_under_dvc(stage: str, written: list[Path], exists: Callable[[Path], bool] = Path.exists) -> str:
    """What became of ``stage``'s outputs: `dvc repro` removes them before it runs a stage (no
    `persist`: that would keep the stage out of DVC's run cache), and ``written`` were replaced since."""
    outputs = paths.stage_outputs(stage)
    if outputs is None:
        return (f"`dvc repro` removed {stage}'s outputs before running it: `dvc checkout {stage}` restores "
                "the cached ones, `git checkout` the committed ones")
    missing = [path for path in outputs if not exists(path)]
    if not missing:
        return f"{stage} had written all its outputs ({_listing(list(outputs))}); rerun `dvc repro` to record them"
    fixes, cached = [], [path for path in missing if outputs[path] == "out"]
    if cached:
        fixes.append(f"`dvc checkout {stage}` restores {_listing(cached)} from the cache")
    if len(cached) < len(missing):
        committed = " ".join(p.as_posix() for p in missing if p not in cached)
        fixes.append(f"`git checkout -- {committed}` the committed results")
    new = f" ({_listing(written)} {_was(written)} written anew)" if written else ""
    return (f"`dvc repro` removed {stage}'s outputs before running it{new}, so {_listing(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} missing: " + " and ".join(fixes) + ", or fix the cause and "
            "rerun `dvc repro`")


def _was(items: list) -> str:
    return "was" if len(items) == 1 else "were"


def _listing(items: list[Path]) -> str:
    return ", ".join(p.as_posix() for p in items)


def _caused_by_ctrl_c(err: BaseException | None) -> bool:
    while err is not None:
        if isinstance(err, KeyboardInterrupt):
            return True
        err = err.__cause__ or err.__context__
    return False


class ArgumentParser(argparse.ArgumentParser):
    """argparse that refuses the project's way: one line, the usage and what was wrong in brackets, raised as a
    UsageError (run() prints it and exits 2), instead of argparse's usage block. Options and other arguments may
    come in any order; -h and --help alone are run()'s (it prints the usage), so argparse adds no help option.

    Args:
        usage: the one-line usage each refusal starts with (``usage: python -m scripts.x [-j N]``).
    """

    def __init__(self, usage: str):
        super().__init__(usage=usage, add_help=False, allow_abbrev=False, exit_on_error=False)
        self._takes_value: dict[str, bool] = {}  # each option as argparse names it (-j/--jobs): whether it takes one

    def add_argument(self, *args, **kwargs) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self._takes_value["/".join(action.option_strings)] = action.nargs != 0
        return action

    def parse(self, argv: list[str]) -> dict:
        """``argv`` parsed: each argument's value by its dest. A ``type`` function refuses a bad value by raising
        UsageError itself, which argparse lets through with its message whole."""
        try:
            args, unknown = self.parse_known_intermixed_args(argv)
        except argparse.ArgumentError as err:  # argparse's only refusal left: an option without its value, or a flag
            # with one (--pull=x)
            self.error(f"{err.argument_name} takes {'a' if self._takes_value[err.argument_name] else 'no'} value")
        if unknown:
            self.error(f"got {unknown[0]!r}")
        return vars(args)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.usage} ({message})")


def refuse(usage: str, argv: list[str], allowed: str = "") -> UsageError:
    """The refusal of arguments a script does not take, for a script with no ArgumentParser: its usage, what it
    allows (``allowed``, if the usage does not say), and what it got, cut short as messages quote a value. run()
    prints it and exits 2."""
    return UsageError(f"{usage}{': ' + allowed if allowed else ''} (got {shown(' '.join(argv))})")


def arch_name(argv: list[str], stage: str) -> str:
    if len(argv) != 1:
        raise StageError(f"usage: python -m stages.{stage} <arch>")
    return argv[0]


