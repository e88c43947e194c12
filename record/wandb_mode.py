"""W&B: online when possible, offline otherwise, decided before wandb.init so it never hangs.

Training runs and the report both start their W&B runs through `start_run`: the mode is
chosen from the config, the environment, a login and a 3-second reachability probe; an
online start that fails falls back to offline; a run that cannot start at all is logged to
CSV only. W&B never fails a run.
"""
from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from .secrets import scrub, scrubbed_argv

MODES = ("auto", "online", "offline", "disabled")


def _base_url() -> str:
    return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")


def key_present() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc

    try:
        return netrc.netrc().authenticators(urlparse(_base_url()).hostname) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _reachable(url: str, timeout: float = 3.0) -> bool:
    parsed = urlparse(url)
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def server_unreachable(timeout: float = 3.0) -> str | None:
    """Why the W&B server cannot be reached ("api.wandb.ai is not reachable"), or None."""
    return None if _reachable(_base_url(), timeout) else f"{urlparse(_base_url()).hostname} is not reachable"


def wandb_mode(requested: str) -> tuple[str, str]:
    """(mode, why): the mode to start W&B in, and the reason, for one line on the console."""
    if requested in ("online", "offline", "disabled"):
        return requested, f"logger.wandb.mode={requested}"
    if requested != "auto":
        raise ValueError(f"logger.wandb.mode must be one of {', '.join(MODES)}, got {requested!r}")
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"], "WANDB_MODE is set"
    if not key_present():
        return "offline", "no W&B API key; run `wandb login` to log online"
    unreachable = server_unreachable()
    if unreachable:
        return "offline", unreachable
    return "online", "logged in"


def start_run(requested: str, init_timeout: float, what: str = "W&B", args: list[str] | None = None, **init_kwargs):
    """A started wandb run, or None when disabled or when W&B cannot start even offline.

    `args`: the command-line arguments W&B records in the run's metadata (default: sys.argv's).
    Prints one line saying which mode and why (or why not)."""
    mode, why = wandb_mode(requested)
    if mode == "disabled":
        return None
    import wandb

    def attempt(m: str):
        with scrubbed_argv(args):  # W&B records the command line in the run's metadata
            return wandb.init(mode=m, settings=wandb.Settings(init_timeout=init_timeout, silent=True), **init_kwargs)

    try:
        run = attempt(mode)
    except Exception as err:  # noqa: BLE001 - W&B never fails the run: offline, else CSV only
        # teardown, not finish: a failed online start leaves the run id held by W&B's service
        # process, and an offline start with the same id then fails with "run ID ... is in use".
        wandb.teardown()
        if mode == "offline":
            print(f"{what}: could not start ({type(err).__name__}: {scrub(str(err))}); logging to CSV only", flush=True)
            return None
        why = f"online start failed ({type(err).__name__}); falling back to offline"
        try:
            mode, run = "offline", attempt("offline")
        except Exception as err2:  # noqa: BLE001
            wandb.teardown()
            print(f"{what}: could not start even offline ({type(err2).__name__}: {scrub(str(err2))}); "
                  "logging to CSV only", flush=True)
            return None
    print(f"{what}: {mode} ({why}); run dir {os.path.dirname(run.dir)}", flush=True)
    return run
