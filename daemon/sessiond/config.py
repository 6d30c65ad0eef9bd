"""Settings: the defaults, then the config file, then `SESSIOND_*` variables, then the command line.

Each source is read into a `Layer` (`from_file`, `from_env`, `from_cli`) holding only the keys
it sets, already checked and typed; `merge` lays them over `DEFAULTS` in that order, and
`load_settings` does the whole job for the daemon. The config file is TOML at
`$XDG_CONFIG_HOME/sessiond/config.toml` (or `--config`); see packaging/config.example.toml
for every key and the README's "Configuration" for every variable and option.

The defaults are the field defaults of `Settings` and `S3Settings`, written nowhere else:
`DEFAULTS` is them as one object, and the modules that need one (the reconcile interval,
the connection limits, the sink's timings) take it from there.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, TypeVar, get_type_hints

from sessionctl.socket_path import default_socket_path

from sessiond.remote.layout import default_machine_name, valid_machine_name

_N = TypeVar("_N", int, float)


class ConfigError(ValueError):
    """The configuration cannot be used; the message says where (file or source, key) and why.

    A ValueError, so code that checks a `SinkConfig` built by hand still catches it."""


class LogFormat(StrEnum):
    AUTO = "auto"  # text on a terminal, else JSON lines (journal under systemd)
    TEXT = "text"
    JSON = "json"
    JOURNAL = "journal"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class AddressingStyle(StrEnum):
    PATH = "path"  # MinIO and other non-AWS stores
    VIRTUAL = "virtual"  # AWS
    AUTO = "auto"


@dataclass(frozen=True)
class Bound:
    """The smallest value a numeric key allows (`strict`: the value must be above it)."""

    minimum: float
    strict: bool = False

    def allows(self, value: float) -> bool:
        return value > self.minimum if self.strict else value >= self.minimum

    def __str__(self) -> str:
        shown = int(self.minimum) if float(self.minimum).is_integer() else self.minimum
        return f"{'>' if self.strict else '>='} {shown}"


def _bounded(default: _N, minimum: float, strict: bool = False) -> _N:
    """A numeric field's default and its `Bound` (checked by `check_value`)."""
    return field(default=default, metadata={"bound": Bound(minimum, strict)})


# --- checking one value ---------------------------------------------------------------------


def _show(value: object) -> str:
    """A value as TOML would spell it, for an error message."""
    return json.dumps(value, default=str)


@functools.cache
def _types(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def check_value(path: str, kind: Any, bound: Bound | None, value: object) -> object:
    """`value` as a `kind`, or ConfigError naming `path` and what it must be."""

    def fail(must: str) -> ConfigError:
        return ConfigError(f"{path}: must be {must}, got {_show(value)}")

    if kind is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if isinstance(kind, type) and issubclass(kind, StrEnum):
        choices = [member.value for member in kind]
        # Any case, as `logging` took the level before the names were checked.
        if not isinstance(value, str) or value.lower() not in choices:
            raise fail(f"one of {', '.join(choices)}")
        return kind(value.lower())
    if kind is int or kind is float:
        whole = kind is int
        number = isinstance(value, int) or (not whole and isinstance(value, float))
        if isinstance(value, bool) or not number:
            raise fail(f"{'an integer' if whole else 'a number'}{f' {bound}' if bound else ''}")
        assert isinstance(value, int | float)
        if bound is not None and not bound.allows(value):
            raise fail(f"{'an integer' if whole else 'a number'} {bound}")
        return value if whole else float(value)
    if kind is str:
        if not isinstance(value, str):
            raise fail("a string")
        return value
    if kind == tuple[str, ...]:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise fail("a list of strings")
        return tuple(value)
    raise TypeError(f"{path}: no rule for {kind!r}")  # a field added without one


def _check_fields(obj: object, cls: type, prefix: str) -> None:
    """Check (and type: an int where a float goes, a str where an enum goes) every field."""
    hints = _types(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if f.name == "config_path" or kind is S3Settings:
            continue
        value = getattr(obj, f.name)
        checked = check_value(prefix + f.name, kind, f.metadata.get("bound"), value)
        if checked is not value:
            object.__setattr__(obj, f.name, checked)


MIN_PART_SIZE = 5 * 1024 * 1024  # S3's smallest multipart part


@dataclass(frozen=True, kw_only=True)
class S3Settings:
    """The config file's `[s3]` table: what sessiond adds to the agent's own S3 variables
    (`CODETETHER_HISTORY_S3_*`, read by sink/config.py). No credentials here, ever."""

    region: str = "us-east-1"
    addressing_style: AddressingStyle = AddressingStyle.PATH
    debounce_s: float = _bounded(0.25, 0)  # wait this long after a save for more saves
    max_delay_s: float = _bounded(2.0, 0, strict=True)  # but never longer after the first
    concurrency: int = _bounded(4, 1)  # uploads at once across sessions
    multipart_threshold: int = _bounded(64 * 1024 * 1024, MIN_PART_SIZE)
    multipart_chunksize: int = _bounded(16 * 1024 * 1024, MIN_PART_SIZE)
    max_attempts: int = _bounded(5, 1)
    backoff_base_s: float = _bounded(0.5, 0)
    backoff_max_s: float = _bounded(60.0, 0, strict=True)
    stop_deadline_s: float = _bounded(20.0, 0)
    connect_timeout_s: float = _bounded(5.0, 0, strict=True)
    read_timeout_s: float = _bounded(60.0, 0, strict=True)
    delta_uploads: bool = True  # off: every upload whole (a store that refuses part copies)
    catalog_interval_s: float = _bounded(1.0, 0)  # the machine's catalog, at most this often

    def __post_init__(self) -> None:
        _check_fields(self, S3Settings, "s3.")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What the daemon runs with: each field is a config-file key of the same name (but
    `config_path`); README, "Configuration", lists its variable and option."""

    sessions_dirs: tuple[str, ...] = ()
    discover: bool = True
    socket: str = ""  # "" the client's rule (sessionctl/socket_path.py)
    state_dir: str = ""  # "" $XDG_STATE_HOME/sessiond
    config_path: str | None = None  # the file read, not a key of it
    log_format: LogFormat = LogFormat.AUTO
    log_level: LogLevel = LogLevel.INFO
    maintain_workspace_index: bool = True
    maintain_listing_cache: bool = True
    s3: S3Settings = S3Settings()
    machine_name: str = ""  # this machine in the bucket (docs/remote.md); "" the host name
    # Robustness knobs; the defaults suit every user, tests set small values.
    reconcile_interval_s: float = _bounded(300.0, 0)  # 0 turns the stat-only reconcile off
    max_connections: int = _bounded(1024, 1)
    idle_timeout_s: float = _bounded(600.0, 0.01)  # a connection idle this long is closed
    partial_line_timeout_s: float = _bounded(30.0, 0.01)  # a request line completes within

    def __post_init__(self) -> None:
        _check_fields(self, Settings, "")


DEFAULTS: Final = Settings()
"""Every default, as one object."""

FILE_KEYS: Final = tuple(f.name for f in dataclasses.fields(Settings) if f.name != "config_path")
"""The config file's top-level keys."""
S3_KEYS: Final = tuple(f.name for f in dataclasses.fields(S3Settings))
"""The keys of its `[s3]` table."""

ENV_VARS: Final = {
    "sessions_dirs": "SESSIOND_SESSIONS_DIRS",  # folders separated by ':'; added to the file's
    "discover": "SESSIOND_NO_DISCOVER",  # 1/true/yes/on: no discovery; anything else: on
    "socket": "SESSIOND_SOCKET",
    "state_dir": "SESSIOND_STATE_DIR",
    "log_format": "SESSIOND_LOG_FORMAT",
    "log_level": "SESSIOND_LOG_LEVEL",
    "machine_name": "SESSIOND_MACHINE_NAME",
}
"""The settings a variable sets (an empty variable sets nothing)."""
CONFIG_ENV: Final = "SESSIOND_CONFIG"  # the config file, when --config is not given

FLAGS: Final = {
    "sessions_dirs": "--sessions-dir",  # repeatable; added to the file's and the variable's
    "discover": "--no-discover",
    "socket": "--socket",
    "state_dir": "--state-dir",
    "log_format": "--log-format",
    "log_level": "--log-level",
    "maintain_workspace_index": "--no-workspace-index",
    "maintain_listing_cache": "--no-listing-cache",
}
"""The settings a command-line option sets (cli.py declares them)."""


def _unknown(keys: set[str], known: tuple[str, ...], where: str) -> ConfigError:
    return ConfigError(
        f"{where}unknown key{'s' if len(keys) > 1 else ''} {', '.join(sorted(keys))} "
        f"(known: {', '.join(known)})"
    )


# --- the layers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """One source's settings: only the keys it sets, checked and typed (field name -> value;
    `sessions_dirs` adds to the layers below, every other key replaces)."""

    source: str
    values: Mapping[str, Any] = field(default_factory=dict)
    s3: Mapping[str, Any] = field(default_factory=dict)


def read_config_file(path: str, required: bool) -> dict[str, Any]:
    """The file's TOML table; {} for a missing file unless it was asked for by name."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        if required:
            raise ConfigError(f"config file {path} does not exist") from None
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from None


def _checked_table(
    table: Mapping[str, Any], cls: type, known: tuple[str, ...], prefix: str, where: str
) -> dict[str, Any]:
    """A TOML table's values for the fields of `cls` named in `known`, checked and typed;
    errors name the key as `prefix + key` and begin with `where`."""
    unknown = set(table) - set(known)
    if unknown:
        raise _unknown({prefix + key for key in unknown}, known, where)
    hints = _types(cls)
    bounds = {f.name: f.metadata.get("bound") for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for key, value in table.items():
        try:
            out[key] = check_value(prefix + key, hints[key], bounds[key], value)
        except ConfigError as exc:
            raise ConfigError(f"{where}{exc}") from None
    return out


def from_table(table: Mapping[str, Any], source: str) -> Layer:
    """A config file's table as a layer; errors begin with `source`."""
    where = f"{source}: "
    top = {key: value for key, value in table.items() if key != "s3"}
    values = _checked_table(top, Settings, FILE_KEYS, "", where)
    s3: dict[str, Any] = {}
    if "s3" in table:
        if not isinstance(table["s3"], dict):
            raise ConfigError(f"{where}s3: must be a table ([s3]), got {_show(table['s3'])}")
        s3 = s3_values(table["s3"], where)
    return Layer(source, values, s3)


def s3_values(table: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """The `[s3]` table's values, checked and typed."""
    return _checked_table(table, S3Settings, S3_KEYS, "s3.", where)


def s3_settings(table: Mapping[str, Any]) -> S3Settings:
    """An `[s3]` table as S3Settings over the defaults."""
    return dataclasses.replace(DEFAULTS.s3, **s3_values(table))


def from_file(path: str, required: bool = False) -> Layer:
    source = f"config file {path}"
    return from_table(read_config_file(path, required), source)


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def from_env(env: Mapping[str, str]) -> Layer:
    """The `SESSIOND_*` variables that are set and not empty."""
    values: dict[str, Any] = {}
    hints = _types(Settings)
    for key, name in ENV_VARS.items():
        raw = env.get(name)
        if not raw:
            continue
        value: object
        if key == "sessions_dirs":
            value = tuple(d for d in raw.split(os.pathsep) if d)
        elif key == "discover":
            value = not _flag(raw)
        else:
            value = raw
        try:
            values[key] = check_value(name, hints[key], None, value)
        except ConfigError as exc:
            raise ConfigError(f"environment: {exc}") from None
    return Layer("environment", values)


def from_cli(args: argparse.Namespace) -> Layer:
    """The options given (argparse has checked their choices)."""
    values: dict[str, Any] = {}
    dirs = getattr(args, "sessions_dir", None)
    if dirs:
        values["sessions_dirs"] = tuple(dirs)
    if getattr(args, "no_discover", False):
        values["discover"] = False
    for key in ("socket", "state_dir"):
        if getattr(args, key, None):
            values[key] = str(getattr(args, key))
    if getattr(args, "log_format", None):
        values["log_format"] = LogFormat(args.log_format)
    if getattr(args, "log_level", None):
        values["log_level"] = LogLevel(args.log_level)
    if getattr(args, "no_workspace_index", False):
        values["maintain_workspace_index"] = False
    if getattr(args, "no_listing_cache", False):
        values["maintain_listing_cache"] = False
    return Layer("command line", values)


def merge(*layers: Layer, base: Settings = DEFAULTS) -> Settings:
    """`layers` over `base`, each over the ones before it."""
    settings = base
    for layer in layers:
        values = dict(layer.values)
        if "sessions_dirs" in values:
            values["sessions_dirs"] = settings.sessions_dirs + tuple(values["sessions_dirs"])
        if layer.s3:
            values["s3"] = dataclasses.replace(settings.s3, **layer.s3)
        settings = dataclasses.replace(settings, **values)
    return settings


# --- what the daemon runs with --------------------------------------------------------------


def default_config_path(env: Mapping[str, str]) -> str:
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME", "/"), ".config")
    return os.path.join(base, "sessiond", "config.toml")


def default_state_dir(env: Mapping[str, str]) -> str:
    base = env.get("XDG_STATE_HOME") or os.path.join(env.get("HOME", "/"), ".local", "state")
    return os.path.join(base, "sessiond")


def resolve(settings: Settings, env: Mapping[str, str]) -> Settings:
    """Paths made absolute, the socket, state folder and machine name filled in."""
    machine = settings.machine_name or default_machine_name()
    if not valid_machine_name(machine):
        raise ConfigError(
            f"machine_name {machine!r}: 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return dataclasses.replace(
        settings,
        socket=os.path.abspath(settings.socket or default_socket_path(env)),
        state_dir=os.path.abspath(settings.state_dir or default_state_dir(env)),
        sessions_dirs=tuple(os.path.abspath(os.path.expanduser(d)) for d in settings.sessions_dirs),
        machine_name=machine,
    )


def load_settings(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    """Command line > environment > config file > defaults; ConfigError when unusable."""
    config_path = args.config or env.get(CONFIG_ENV) or default_config_path(env)
    file = from_file(config_path, required=bool(args.config))
    settings = merge(file, from_env(env), from_cli(args))
    return resolve(dataclasses.replace(settings, config_path=config_path), env)
