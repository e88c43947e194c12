"""One readable line for an error a user can cause, for every command-line entry point
(train.py, eval.py, report.py): what they typed, where their files are, a full disk. Not a
traceback (HYDRA_FULL_ERROR=1 shows it). Secrets are scrubbed from the line."""
from __future__ import annotations

import contextlib
import os
import sys
import traceback

from hydra.errors import InstantiationException
from omegaconf.errors import OmegaConfBaseException

from .secrets import scrub

# OSError: a full disk, a read-only or unwritable directory, a file where a directory belongs.
USER_ERRORS = (ValueError, OSError, OmegaConfBaseException, InstantiationException)


@contextlib.contextmanager
def one_line_errors(*more: type[BaseException], go_on: bool = False):
    """Around an entry point's work: a user's error (USER_ERRORS and `more`) is one line on
    stderr and exit status 2. With `go_on` (a sweep's job), the line is printed and the block
    ends, so the sweep goes on with its next run; a bug then prints its traceback and the sweep
    goes on too (harness/sweep.py lists the failed runs at the end)."""
    try:
        yield
    except (*USER_ERRORS, *more) as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {scrub(str(err))}", file=sys.stderr, flush=True)
        if not go_on:
            sys.exit(2)
    except Exception:  # a bug, not a user error: its traceback, and in a sweep the next run
        if not go_on or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        traceback.print_exc()
