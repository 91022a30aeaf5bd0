"""How every stage starts and ends: known problems become one clear message, not a traceback."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Callable

from stages.lib.errors import RESOURCE_ERRNOS, StageError, memory_message, resource_message
from stages.lib.schema import ParamsError


def run(main: Callable[[list[str]], None], skip_teardown: bool = False) -> None:
    """Run a stage's main with clean errors.

    ``skip_teardown``: once main has returned (every output written and closed), end the
    process without the interpreter's teardown, which TensorFlow makes take ~2 s.
    """
    try:
        main(sys.argv[1:])
        if skip_teardown:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
    except ParamsError as err:
        print(err, file=sys.stderr)
        raise SystemExit(2) from None
    except StageError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    except FileNotFoundError as err:
        print(f"error: {err.filename} is missing: restore it with `dvc checkout` or rebuild it with `dvc repro`",
              file=sys.stderr)
        raise SystemExit(1) from None
    except MemoryError as err:
        print(f"error: {memory_message(err)}", file=sys.stderr)
        raise SystemExit(1) from None
    except OSError as err:
        if err.errno not in RESOURCE_ERRNOS:
            if _caused_by_ctrl_c(err):
                _interrupted()
            raise
        print(f"error: {resource_message(err)}", file=sys.stderr)
        raise SystemExit(1) from None
    except Exception as err:
        # Ctrl-C inside a C extension's import (TensorFlow's) surfaces as an ImportError
        # caused by the KeyboardInterrupt.
        if not _caused_by_ctrl_c(err):
            raise
        _interrupted()
    except KeyboardInterrupt:
        _interrupted()


def _interrupted() -> None:
    print("interrupted: outputs were left as they were before this stage; rerun `dvc repro`", file=sys.stderr)
    raise SystemExit(130) from None


def _caused_by_ctrl_c(err: BaseException | None) -> bool:
    while err is not None:
        if isinstance(err, KeyboardInterrupt):
            return True
        err = err.__cause__ or err.__context__
    return False


def arch_name(argv: list[str], stage: str) -> str:
    if len(argv) != 1:
        raise StageError(f"usage: python -m stages.{stage} <arch>")
    return argv[0]


def read_json(path: Path) -> dict:
    """A JSON file an earlier stage wrote; a missing or damaged one says how to get it back."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise StageError(f"{path} is missing: restore it with `dvc checkout` or rebuild it with `dvc repro`") from None
    except json.JSONDecodeError as err:
        raise StageError(f"{path} is not valid JSON ({err}): rebuild it with `dvc repro -f` on the stage that "
                         "writes it") from None
