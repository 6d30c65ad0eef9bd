"""The hot commands' usual command lines, read without argparse.

Importing argparse and building the CLI's parser costs about 5 ms, more than the rest of a
`sessionctl resume` that the daemon answers. The forms read here are the plain ones: exact
option names, `--opt VALUE` or `--opt=VALUE`, a value that does not start with `-`. Anything
else (help, an abbreviation, `--`, an unknown command or option, a bad value, a missing one)
gives None, and cli.py hands the whole line to argparse, which gives the answer or the usage
error it always gave. The namespace built here is the one argparse builds for the same line
(tests/e2e/client/test_imports.py compares them). Standard library only.
"""

from __future__ import annotations

from types import SimpleNamespace

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    Option = tuple[str, Any, Callable[[str], Any] | None]

FLAG = None
"""An option without a value (store_true)."""


def seconds_value(text: str) -> float:
    """`--timeout`: a number of seconds > 0. ValueError says what is wrong."""
    import math  # an extension module to load: only when --timeout is given

    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"must be more than 0 seconds: {text!r}")
    return value


def count_value(text: str) -> int:
    """`--window`, `--limit`, `--offset`: an integer >= 0. ValueError says what is wrong."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"not an integer: {text!r}") from None
    if value < 0:
        raise ValueError(f"must be 0 or more: {text!r}")
    return value


COMMON: dict[str, Option] = {
    "--socket": ("socket", None, str),
    "--timeout": ("timeout", None, seconds_value),
    "--no-fallback": ("no_fallback", False, FLAG),
    "--json": ("json", False, FLAG),
}
"""Options accepted before and after the command: attribute, default, value conversion."""

_READ: dict[str, Option] = {
    "--window": ("window", None, count_value),
    "--sync": ("sync", False, FLAG),
}

COMMANDS: dict[str, tuple[dict[str, Option], str | None]] = {
    "resume": ({"--workspace": ("workspace", None, str), **_READ}, None),
    "get": (_READ, "id"),
    "list": (
        {
            "--workspace": ("workspace", None, str),
            "--all": ("all", False, FLAG),
            "--limit": ("limit", 100, count_value),
            "--offset": ("offset", 0, count_value),
            "--sync": ("sync", False, FLAG),
        },
        None,
    ),
    "status": ({}, None),
    "sync": ({}, None),
    "flush": ({}, None),
    "rescan": ({}, None),
    "watch": ({}, None),
}
"""Each command read here: its own options, and the name of its one positional (or None)."""


def quick_parse(argv: Sequence[str]) -> SimpleNamespace | None:
    """The namespace argparse would give for `argv`, or None when argparse must decide."""
    values: dict[str, Any] = {attr: default for attr, default, _ in COMMON.values()}
    options = COMMON
    positional: str | None = None
    command: str | None = None
    seen: set[str] = set()
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if not token:
            return None
        if not token.startswith("-"):
            if command is None:
                if token not in COMMANDS:
                    return None
                command = token
                own, positional = COMMANDS[token]
                options = {**COMMON, **own}
                values.update({attr: default for attr, default, _ in own.values()})
                continue
            if positional is None or positional in values:
                return None
            values[positional] = token
            continue
        name, has_value, value = token.partition("=")
        spec = options.get(name)
        if spec is None:
            return None
        attr, _, convert = spec
        if convert is FLAG:
            if has_value:
                return None
            values[attr] = True
        else:
            if not has_value:
                if i == len(argv) or not argv[i] or argv[i].startswith("-"):
                    return None
                value = argv[i]
                i += 1
            try:
                values[attr] = convert(value)
            except ValueError:
                return None
        seen.add(name)
    if command is None or (positional is not None and positional not in values):
        return None
    if command == "list" and {"--workspace", "--all"} <= seen:
        return None  # mutually exclusive: argparse says so
    return SimpleNamespace(command=command, **values)
