"""The code that trains a run: the repository's commit and the versions of the packages that
shape a run. Recorded in every summary; a relaunch compares the commit (a run completed by
other code is "stale")."""
from __future__ import annotations

import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "pytorch-lightning", "hydra-core", "wandb")


@cache
def code_version() -> dict:
    """{"commit", "dirty" (tracked files changed), and a version per package in PACKAGES}."""
    def git(*args):
        try:
            out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    version = {"commit": git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}
    for package in PACKAGES:
        try:
            version[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            version[package] = None
    return version


def stale(commit: str | None) -> str | None:
    """Why a result of `commit` may not be what this code would give (another commit), or None."""
    now = code_version()["commit"]
    if commit is None or now is None or commit == now:
        return None
    return f"completed by other code (commit {commit[:8]}, this is {now[:8]})"
