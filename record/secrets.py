"""A W&B key, or anything named like a key or token, never reaches a file NormLab writes.

Values are found three ways, and only these (an ordinary word is never taken for one):
- exact values: of environment variables named like secrets, and of secret-named assignments
  on this process's command line (`+my_api_key=...`), replaced wherever they appear;
- config keys named like secrets: their values, in a config tree;
- token patterns: a secret-named assignment in text (`api_key: 3f9a...`) whose value looks like
  a key (at least 8 characters, letters and digits together), as Hydra's files and messages
  echo what was typed.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path

SECRET_NAME = re.compile(r"(api[_-]?key|token|secret|passw(or)?d|credential|auth)", re.IGNORECASE)
REDACTED = "<redacted>"
_SECRET_ASSIGNMENT = re.compile(r"""([\w.+~]*(?:api[_-]?key|token|secret|passw(?:or)?d|credential|auth)\w*\s*[:=]\s*['"]?)"""
                                r"""([^\s,'"\]]+)""", re.IGNORECASE)
_KEY_LIKE = re.compile(r"(?=.*[A-Za-z])(?=.*\d)[^\s,'\]]{8,}")  # a key's shape: 8+ characters, letters and digits


def _secret_values() -> list[str]:
    """Exact secret values, longest first: of environment variables named like secrets (long
    enough to be one), and of secret-named assignments typed on this process's command line."""
    values = {v for k, v in os.environ.items() if SECRET_NAME.search(k) and len(v) >= 8}
    for arg in sys.argv[1:]:
        key, eq, value = arg.partition("=")
        if eq and SECRET_NAME.search(key) and len(value) >= 4 and value.lower() not in ("null", "none", "true", "false"):
            values.add(value)
    return sorted(values, key=len, reverse=True)


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


def scrub_values(obj):
    """A copy of a record with every string scrubbed of exact secret values (run names, tags
    and errors may hold one); keys are kept."""
    if isinstance(obj, dict):
        return {k: scrub_values(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [scrub_values(v) for v in obj]
    return scrub(obj) if isinstance(obj, str) else obj


def scrub_assignments(text: str) -> str:
    """Exact secret values, and `my_api_key=<a key-shaped value>`, replaced (a command line, a
    Hydra file, the console); `token: no such key` keeps its words."""
    def replace(m):
        return m.group(1) + REDACTED if _KEY_LIKE.fullmatch(m.group(2)) else m.group(0)
    return _SECRET_ASSIGNMENT.sub(replace, scrub(text))


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
