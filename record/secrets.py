"""A W&B key, or anything named like a key or token, never reaches a file NormLab writes.

Values come from two places: environment variables named like secrets (their values are
replaced wherever they appear) and config keys or command-line assignments named like
secrets (their values are replaced).
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path

SECRET_NAME = re.compile(r"(api[_-]?key|token|secret|passw(or)?d|credential|auth)", re.IGNORECASE)
REDACTED = "<redacted>"
_SECRET_ASSIGNMENT = re.compile(r"([\w.+~]*(?:api[_-]?key|token|secret|passw(?:or)?d|credential|auth)\w*\s*[:=]\s*)([^\s,'\]]+)",
                                re.IGNORECASE)


def _secret_values() -> list[str]:
    """Values of environment variables named like secrets (long enough to be one), longest first."""
    return sorted((v for k, v in os.environ.items() if SECRET_NAME.search(k) and len(v) >= 8), key=len, reverse=True)


def scrub(text: str) -> str:
    """Replace every secret environment value in a string."""
    for value in _secret_values():
        text = text.replace(value, REDACTED)
    return text


def redact(obj):
    """A copy of a config tree with secret-named keys and secret values replaced."""
    if isinstance(obj, dict):
        return {k: REDACTED if SECRET_NAME.search(str(k)) and obj[k] not in (None, "") else redact(v)
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        return scrub(obj)
    return obj


def scrub_assignments(text: str) -> str:
    """`my_api_key=...` and secret environment values replaced (a command line, a Hydra file)."""
    return _SECRET_ASSIGNMENT.sub(lambda m: m.group(1) + REDACTED, scrub(text))


def scrub_argv(argv: list[str]) -> list[str]:
    return [scrub_assignments(a) for a in argv]


def scrub_files(paths) -> None:
    """Redact secrets from files Hydra wrote (the command line it records may hold one).
    Atomically: jobs of a parallel sweep may scrub the sweep's multirun.yaml at once."""
    for path in map(Path, paths):
        if not path.is_file():
            continue
        text = path.read_text()
        clean = scrub_assignments(text)
        if clean != text:
            tmp = path.with_name(f".{path.name}.scrub{os.getpid()}")
            tmp.write_text(clean)
            os.replace(tmp, path)


class ScrubbedStream:
    """A console stream whose every write is scrubbed: Hydra's own error lines echo what was
    typed ("To append to your config use +my_api_key=..."), before NormLab's code runs."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        return self._stream.write(scrub_assignments(text) if isinstance(text, str) else text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def scrubbed_argv(args: list[str] | None = None):
    """sys.argv without secret values while W&B reads it (it records the command line); with
    `args`, the program name and those arguments instead of the command line."""
    argv = sys.argv
    sys.argv = scrub_argv(sys.argv if args is None else [sys.argv[0], *args])
    try:
        yield
    finally:
        sys.argv = argv
