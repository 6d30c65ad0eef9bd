"""Settings: defaults, then the config file, then `SESSIOND_*` variables, then the command line.

The config file is TOML at `$XDG_CONFIG_HOME/sessiond/config.toml` (or `--config`); see
packaging/config.example.toml for every key.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sessionctl.socket_path import default_socket_path

from sessiond.remote.layout import default_machine_name, valid_machine_name

LOG_FORMATS = ("auto", "text", "json", "journal")


class ConfigError(Exception):
    """The configuration cannot be used; the message says where and why."""


@dataclass
class Settings:
    sessions_dirs: list[str] = field(default_factory=list)
    discover: bool = True
    socket: str = ""
    state_dir: str = ""
    config_path: str | None = None
    log_format: str = "auto"
    log_level: str = "info"
    maintain_workspace_index: bool = True
    maintain_listing_cache: bool = True
    s3: dict[str, Any] = field(default_factory=dict)
    machine_name: str = ""  # this machine in the bucket (docs/remote.md); "" the host name
    # Robustness knobs (issue 5); the defaults suit every user, tests set small values.
    reconcile_interval_s: float = 300.0  # 0 turns the periodic stat-only reconcile off
    max_connections: int = 1024
    idle_timeout_s: float = 600.0
    partial_line_timeout_s: float = 30.0


def default_config_path(env: Mapping[str, str]) -> str:
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME", "/"), ".config")
    return os.path.join(base, "sessiond", "config.toml")


def default_state_dir(env: Mapping[str, str]) -> str:
    base = env.get("XDG_STATE_HOME") or os.path.join(env.get("HOME", "/"), ".local", "state")
    return os.path.join(base, "sessiond")


LIMITS: dict[str, float] = {
    "reconcile_interval_s": 0,
    "max_connections": 1,
    "idle_timeout_s": 0.01,
    "partial_line_timeout_s": 0.01,
}
"""Numeric config keys and their smallest allowed value."""


def _read_config_file(path: str, required: bool) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        if required:
            raise ConfigError(f"config file {path} does not exist") from None
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from None


def _expect(table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: str) -> Any:
    value = table[key]
    if not isinstance(value, kind):
        raise ConfigError(f"{path}: '{key}' has the wrong type ({type(value).__name__})")
    return value


def _apply_file(settings: Settings, table: Mapping[str, Any], path: str) -> None:
    known = {
        "sessions_dirs": list,
        "discover": bool,
        "socket": str,
        "state_dir": str,
        "log_format": str,
        "log_level": str,
        "maintain_workspace_index": bool,
        "maintain_listing_cache": bool,
        "s3": dict,
        "machine_name": str,
    }
    for key, value_type in known.items():
        if key in table:
            setattr(settings, key, _expect(table, key, value_type, path))
    for key, minimum in LIMITS.items():
        if key in table:
            value = table[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
                raise ConfigError(f"{path}: '{key}' must be a number >= {minimum}")
            setattr(settings, key, type(getattr(settings, key))(value))
    unknown = sorted(set(table) - set(known) - set(LIMITS))
    if unknown:
        raise ConfigError(f"{path}: unknown keys {', '.join(unknown)}")


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def load_settings(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    settings = Settings()
    config_path = args.config or env.get("SESSIOND_CONFIG") or default_config_path(env)
    table = _read_config_file(config_path, required=bool(args.config))
    _apply_file(settings, table, config_path)
    settings.config_path = config_path
    # Environment variables, the most used settings only.
    if env.get("SESSIOND_SOCKET"):
        settings.socket = env["SESSIOND_SOCKET"]
    if env.get("SESSIOND_STATE_DIR"):
        settings.state_dir = env["SESSIOND_STATE_DIR"]
    if env.get("SESSIOND_SESSIONS_DIRS"):
        settings.sessions_dirs += [d for d in env["SESSIOND_SESSIONS_DIRS"].split(os.pathsep) if d]
    if env.get("SESSIOND_LOG_FORMAT"):
        settings.log_format = env["SESSIOND_LOG_FORMAT"]
    if env.get("SESSIOND_LOG_LEVEL"):
        settings.log_level = env["SESSIOND_LOG_LEVEL"]
    if env.get("SESSIOND_MACHINE_NAME"):
        settings.machine_name = env["SESSIOND_MACHINE_NAME"]
    if env.get("SESSIOND_NO_DISCOVER"):
        settings.discover = not _flag(env["SESSIOND_NO_DISCOVER"])
    # The command line wins.
    settings.sessions_dirs += list(getattr(args, "sessions_dir", None) or [])
    if getattr(args, "no_discover", False):
        settings.discover = False
    for key in ("socket", "state_dir", "log_format", "log_level"):
        value = getattr(args, key, None)
        if value:
            setattr(settings, key, value)
    if getattr(args, "no_workspace_index", False):
        settings.maintain_workspace_index = False
    if getattr(args, "no_listing_cache", False):
        settings.maintain_listing_cache = False
    settings.socket = os.path.abspath(settings.socket or default_socket_path(env))
    settings.state_dir = os.path.abspath(settings.state_dir or default_state_dir(env))
    settings.sessions_dirs = [
        os.path.abspath(os.path.expanduser(d)) for d in settings.sessions_dirs
    ]
    settings.machine_name = settings.machine_name or default_machine_name()
    if not valid_machine_name(settings.machine_name):
        raise ConfigError(
            f"machine_name {settings.machine_name!r}: 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if settings.log_format not in LOG_FORMATS:
        raise ConfigError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    return settings
