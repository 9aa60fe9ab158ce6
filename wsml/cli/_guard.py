"""The one error guard of every ``wsml`` command, and the one list of what counts as a user error.

A user error (a bad value, config, path or file; a full disk) prints one line ``wsml: error: ...`` and exits with
code 2; Ctrl-C exits with 130 (training leaves a resumable ``last.pt``), a closed output pipe (``| head``)
quietly with 141; ``--debug`` shows the traceback instead.
Anything else is a bug in wsml and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

# ValueError covers ConfigError and MissingSplitError; OSError covers FileNotFoundError, NotADirectoryError,
# PermissionError and a full disk.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)


def error_line(e: BaseException) -> str:
    """The one line a user error prints: ``wsml: error: <message on one line>``."""
    return f"wsml: error: {' '.join(str(e).split())}"


def guarded(fn: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command handler under the guard; return its exit code (2 on a user error, 130 on Ctrl-C)."""
    try:
        return fn(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` & co.: stop quietly, as other Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141
    except USER_ERRORS as e:
        if getattr(args, "debug", False):
            raise
        print(error_line(e), file=sys.stderr)
        return 2
