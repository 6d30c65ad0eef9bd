"""The daemon's settings: each layer over the one below, every check, [s3], no secret shown,
and the README table and the example config file kept true to the code."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from sessiond.cli import _parser
from sessiond.config import (
    DEFAULTS,
    ENV_VARS,
    FILE_KEYS,
    FLAGS,
    S3_KEYS,
    AddressingStyle,
    ConfigError,
    LogFormat,
    LogLevel,
    S3Settings,
    Settings,
    from_cli,
    from_env,
    from_file,
    load_settings,
    merge,
    s3_settings,
)
from sessiond.server.limits import Limits
from sessiond.sink.config import SinkConfig
from sessiond.watch.indexer import RECONCILE_INTERVAL_S

from tests.support.paths import ROOT

SECRET = "s3cr3t-never-shown"
SINK_ENV = {
    "CODETETHER_HISTORY_S3_ENDPOINT": "http://user:pw-hidden@127.0.0.1:9000",
    "CODETETHER_HISTORY_S3_BUCKET": "history",
    "CODETETHER_HISTORY_S3_ACCESS_KEY": "AKIAEXAMPLEKEY",
    "CODETETHER_HISTORY_S3_SECRET_KEY": SECRET,
}


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def load(
    tmp_path: Path, toml: str | None, env: Mapping[str, str] | None = None, *argv: str
) -> Settings:
    """`sessiond run` as the daemon would load it: a config file (or none), env, options."""
    home = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    args = ["run"]
    if toml is not None:
        args += ["--config", write(tmp_path / "config.toml", toml)]
    return load_settings(_parser().parse_args(args + list(argv)), {**home, **(env or {})})


def file_error(tmp_path: Path, toml: str) -> str:
    path = write(tmp_path / "bad.toml", toml)
    with pytest.raises(ConfigError) as caught:
        from_file(path)
    text = str(caught.value)
    assert text.startswith(f"config file {path}: "), text
    return text.removeprefix(f"config file {path}: ")


# --- precedence -----------------------------------------------------------------------------


def test_nothing_given_is_the_defaults(tmp_path: Path) -> None:
    settings = load(tmp_path, None)
    assert settings.config_path == str(tmp_path / "xdg" / "sessiond" / "config.toml")
    assert settings.state_dir == str(tmp_path / ".local" / "state" / "sessiond")
    same = ("socket", "state_dir", "config_path", "machine_name")
    for f in dataclasses.fields(Settings):
        if f.name not in same:
            assert getattr(settings, f.name) == getattr(DEFAULTS, f.name), f.name
    assert settings.s3 == S3Settings()


LAYERED: list[tuple[str, str, str, list[str], object, object, object]] = [
    # key, file value, env value, options, then what file, env and options give
    ("log_level", '"debug"', "warning", ["--log-level", "error"], "debug", "warning", "error"),
    ("log_format", '"json"', "text", ["--log-format", "journal"], "json", "text", "journal"),
    (
        "socket",
        '"/f/s.sock"',
        "/e/s.sock",
        ["--socket", "/c/s.sock"],
        "/f/s.sock",
        "/e/s.sock",
        "/c/s.sock",
    ),
    ("state_dir", '"/f/st"', "/e/st", ["--state-dir", "/c/st"], "/f/st", "/e/st", "/c/st"),
    ("discover", "false", "0", ["--no-discover"], False, True, False),
]


@pytest.mark.parametrize(("key", "in_file", "in_env", "options", "f", "e", "c"), LAYERED)
def test_command_line_beats_environment_beats_file_beats_default(
    tmp_path: Path,
    key: str,
    in_file: str,
    in_env: str,
    options: list[str],
    f: object,
    e: object,
    c: object,
) -> None:
    toml = f"{key} = {in_file}\n"
    env = {ENV_VARS[key]: in_env}
    assert getattr(load(tmp_path, None), key) != f
    assert getattr(load(tmp_path, toml), key) == f
    assert getattr(load(tmp_path, toml, env), key) == e
    assert getattr(load(tmp_path, toml, env, *options), key) == c
    assert getattr(load(tmp_path, None, {}, *options), key) == c
    assert getattr(load(tmp_path, None, {ENV_VARS[key]: ""}), key) == getattr(
        load(tmp_path, None), key
    ), "an empty variable counts as unset"


def test_the_agent_file_switches_and_machine_name_by_layer(tmp_path: Path) -> None:
    toml = 'maintain_workspace_index = false\nmachine_name = "from-file"\n'
    settings = load(tmp_path, toml)
    assert not settings.maintain_workspace_index and settings.maintain_listing_cache
    assert settings.machine_name == "from-file"
    env = {"SESSIOND_MACHINE_NAME": "from-env"}
    settings = load(tmp_path, toml, env, "--no-listing-cache")
    assert not settings.maintain_listing_cache and settings.machine_name == "from-env"


def test_sessions_dirs_add_up_across_layers(tmp_path: Path) -> None:
    toml = 'sessions_dirs = ["/f1", "~/f2"]\n'
    env = {"SESSIOND_SESSIONS_DIRS": f"/e1{os.pathsep}{os.pathsep}/e2"}
    settings = load(tmp_path, toml, env, "--sessions-dir", "/c1", "--sessions-dir", "rel")
    home = os.path.expanduser("~")
    assert settings.sessions_dirs == (
        "/f1",
        os.path.join(home, "f2"),
        "/e1",
        "/e2",
        "/c1",
        os.path.abspath("rel"),
    )


def test_numbers_and_s3_come_from_the_file_over_the_defaults(tmp_path: Path) -> None:
    toml = (
        "reconcile_interval_s = 0\nmax_connections = 8\nidle_timeout_s = 1\n"
        '[s3]\nmax_attempts = 2\ndebounce_s = 1\naddressing_style = "virtual"\n'
    )
    settings = load(tmp_path, toml)
    assert (settings.reconcile_interval_s, settings.max_connections) == (0.0, 8)
    assert isinstance(settings.idle_timeout_s, float) and settings.idle_timeout_s == 1.0
    assert settings.partial_line_timeout_s == DEFAULTS.partial_line_timeout_s
    assert settings.s3 == dataclasses.replace(
        DEFAULTS.s3, max_attempts=2, debounce_s=1.0, addressing_style=AddressingStyle.VIRTUAL
    )
    assert Limits.of(settings) == Limits(8, 1.0, DEFAULTS.partial_line_timeout_s)


def test_the_config_file_is_found_by_option_then_variable_then_xdg(tmp_path: Path) -> None:
    named = write(tmp_path / "named.toml", 'log_level = "error"\n')
    by_env = load(tmp_path, None, {"SESSIOND_CONFIG": named})
    assert by_env.config_path == named and by_env.log_level is LogLevel.ERROR
    # A missing file is fine unless --config named it.
    assert (
        load(tmp_path, None, {"SESSIOND_CONFIG": str(tmp_path / "none.toml")}).log_level == "info"
    )
    args = _parser().parse_args(["run", "--config", str(tmp_path / "none.toml")])
    with pytest.raises(ConfigError, match=r"config file .*none\.toml does not exist"):
        load_settings(args, {"HOME": str(tmp_path)})


def test_merge_is_each_layer_over_the_one_before() -> None:
    low = from_env({"SESSIOND_LOG_LEVEL": "debug", "SESSIOND_SOCKET": "/low"})
    high = from_cli(_parser().parse_args(["run", "--log-level", "error"]))
    assert merge(low, high).log_level is LogLevel.ERROR
    assert merge(high, low).log_level is LogLevel.DEBUG
    assert merge(low, high).socket == "/low"
    assert merge() == DEFAULTS


# --- every check ----------------------------------------------------------------------------

BAD_FILES = [
    ('discover = "yes"', 'discover: must be true or false, got "yes"'),
    ("maintain_listing_cache = 1", "maintain_listing_cache: must be true or false, got 1"),
    ("max_connections = 0", "max_connections: must be an integer >= 1, got 0"),
    ("max_connections = 2.5", "max_connections: must be an integer >= 1, got 2.5"),
    ("max_connections = true", "max_connections: must be an integer >= 1, got true"),
    ('reconcile_interval_s = "5"', 'reconcile_interval_s: must be a number >= 0, got "5"'),
    ("reconcile_interval_s = -1", "reconcile_interval_s: must be a number >= 0, got -1"),
    ("idle_timeout_s = 0", "idle_timeout_s: must be a number >= 0.01, got 0"),
    ("partial_line_timeout_s = 0.001", "partial_line_timeout_s: must be a number >= 0.01, got"),
    ("socket = 5", "socket: must be a string, got 5"),
    ('log_format = "xml"', 'log_format: must be one of auto, text, json, journal, got "xml"'),
    ('log_level = "loud"', 'log_level: must be one of debug, info, warning, error, got "loud"'),
    ('sessions_dirs = "/a"', 'sessions_dirs: must be a list of strings, got "/a"'),
    ("sessions_dirs = [1]", "sessions_dirs: must be a list of strings, got [1]"),
    ("s3 = 1", "s3: must be a table ([s3]), got 1"),
    ('[s3]\nmax_attempts = "x"', 's3.max_attempts: must be an integer >= 1, got "x"'),
    ("[s3]\nconcurrency = 0", "s3.concurrency: must be an integer >= 1, got 0"),
    ("[s3]\nmultipart_threshold = 1024", "s3.multipart_threshold: must be an integer >= 5242880"),
    ("[s3]\nmultipart_chunksize = 5.5", "s3.multipart_chunksize: must be an integer >= 5242880"),
    ("[s3]\nmax_attempts = 0", "s3.max_attempts: must be an integer >= 1, got 0"),
    ("[s3]\nbackoff_base_s = -1", "s3.backoff_base_s: must be a number >= 0, got -1"),
    ("[s3]\nbackoff_max_s = 0", "s3.backoff_max_s: must be a number > 0, got 0"),
    ("[s3]\nstop_deadline_s = -1", "s3.stop_deadline_s: must be a number >= 0, got -1"),
    ("[s3]\nconnect_timeout_s = 0", "s3.connect_timeout_s: must be a number > 0, got 0"),
    ("[s3]\ncatalog_interval_s = []", "s3.catalog_interval_s: must be a number >= 0, got []"),
    ("[s3]\nmax_delay_s = 0", "s3.max_delay_s: must be a number > 0, got 0"),
    ("[s3]\nread_timeout_s = -1.5", "s3.read_timeout_s: must be a number > 0, got -1.5"),
    ("[s3]\ndebounce_s = -0.1", "s3.debounce_s: must be a number >= 0, got -0.1"),
    ('[s3]\ndelta_uploads = "no"', 's3.delta_uploads: must be true or false, got "no"'),
    ('[s3]\naddressing_style = "up"', "s3.addressing_style: must be one of path, virtual, auto"),
    ("[s3]\nregion = 1", "s3.region: must be a string, got 1"),
    ("colour = 1", "unknown key colour (known: sessions_dirs, discover,"),
    ("b = 1\na = 2", "unknown keys a, b (known: "),
    ("[s3]\nbukket = 1", "unknown key s3.bukket (known: region, addressing_style,"),
    ("config_path = '/x'", "unknown key config_path"),
]


@pytest.mark.parametrize(("toml", "message"), BAD_FILES)
def test_a_bad_value_or_key_names_the_file_and_the_key(
    tmp_path: Path, toml: str, message: str
) -> None:
    assert file_error(tmp_path, toml + "\n").startswith(message)


def test_every_key_has_a_bad_value_test() -> None:
    tested = {re.split(r"[:\s(]", message)[0] for _, message in BAD_FILES}
    numbers_and_enums = {
        f.name
        for f in dataclasses.fields(Settings)
        if f.metadata.get("bound") or f.name in ("log_format", "log_level")
    }
    assert numbers_and_enums <= tested
    assert {f"s3.{f.name}" for f in dataclasses.fields(S3Settings) if f.metadata} <= tested


def test_a_file_that_is_no_toml_or_cannot_be_read(tmp_path: Path) -> None:
    assert file_error(tmp_path, "log_level = \n").startswith("Invalid value (at line 1")
    folder = tmp_path / "a-folder.toml"
    folder.mkdir()
    with pytest.raises(ConfigError, match=rf"config file {re.escape(str(folder))}: .*directory"):
        from_file(str(folder))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SESSIOND_LOG_FORMAT": "xml"}, "environment: SESSIOND_LOG_FORMAT: must be one of auto,"),
        ({"SESSIOND_LOG_LEVEL": "LOUD"}, "environment: SESSIOND_LOG_LEVEL: must be one of debug,"),
        ({"SESSIOND_LOG_LEVEL": "warn"}, "environment: SESSIOND_LOG_LEVEL: must be one of debug,"),
    ],
)
def test_a_bad_variable_is_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        from_env(env)
    assert str(caught.value).startswith(message)


def test_a_level_or_format_in_any_case_is_taken() -> None:
    env = from_env({"SESSIOND_LOG_LEVEL": "WARNING", "SESSIOND_LOG_FORMAT": "Json"})
    assert merge(env).log_level is LogLevel.WARNING and merge(env).log_format is LogFormat.JSON


def test_a_bad_machine_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="machine_name '-x'"):
        load(tmp_path, 'machine_name = "-x"\n')
    with pytest.raises(ConfigError, match="machine_name 'a b'"):
        load(tmp_path, None, {"SESSIOND_MACHINE_NAME": "a b"})


def test_settings_built_by_hand_are_checked_and_frozen() -> None:
    with pytest.raises(ConfigError, match=r"^max_connections: must be an integer >= 1, got 0"):
        Settings(max_connections=0)
    with pytest.raises(ConfigError, match=r"^s3\.concurrency: must be an integer >= 1"):
        S3Settings(concurrency=0)
    typed = S3Settings(addressing_style="virtual", debounce_s=1)  # type: ignore[arg-type]
    assert typed.addressing_style is AddressingStyle.VIRTUAL and isinstance(typed.debounce_s, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULTS.max_connections = 1  # type: ignore[misc]
    assert Settings(log_format="json").log_format is LogFormat.JSON  # type: ignore[arg-type]


# --- [s3] and the sink ----------------------------------------------------------------------


def test_the_sink_config_carries_every_s3_setting() -> None:
    s3 = s3_settings(
        {
            "region": "eu-west-1",
            "addressing_style": "auto",
            "debounce_s": 3,
            "max_delay_s": 9.5,
            "concurrency": 7,
            "multipart_threshold": 6 * 1024 * 1024,
            "multipart_chunksize": 7 * 1024 * 1024,
            "max_attempts": 3,
            "backoff_base_s": 0.25,
            "backoff_max_s": 5,
            "stop_deadline_s": 1,
            "connect_timeout_s": 2,
            "read_timeout_s": 4,
            "delta_uploads": False,
            "catalog_interval_s": 0,
        }
    )
    assert set(S3_KEYS) == {f.name for f in dataclasses.fields(S3Settings)}
    config = SinkConfig.from_env(SINK_ENV, s3)
    assert config is not None
    for name in S3_KEYS:
        assert getattr(config, name) == getattr(s3, name) != getattr(DEFAULTS.s3, name), name
    default = SinkConfig.from_env(SINK_ENV)
    assert default is not None
    assert all(getattr(default, name) == getattr(DEFAULTS.s3, name) for name in S3_KEYS)


def test_no_secret_in_a_repr_or_an_error(tmp_path: Path) -> None:
    config = SinkConfig.from_env(SINK_ENV, DEFAULTS.s3)
    assert config is not None
    for text in (repr(config), str(config)):
        assert SECRET not in text and "pw-hidden" not in text and "AKIAEXAMPLEKEY" not in text
    assert "AKIA" in repr(config) and "history" in repr(config)
    # Credentials put in the file are refused without repeating them.
    message = file_error(tmp_path, f'[s3]\nsecret_key = "{SECRET}"\n')
    assert message.startswith("unknown key s3.secret_key") and SECRET not in message
    bad_port = {**SINK_ENV, "CODETETHER_HISTORY_S3_ENDPOINT": "http://u:pw-hidden@h:99999"}
    with pytest.raises(ConfigError) as caught:
        SinkConfig.from_env(bad_port)
    assert "port" in str(caught.value) and "pw-hidden" not in str(caught.value)
    assert SECRET not in repr(load(tmp_path, "[s3]\nmax_attempts = 2\n", SINK_ENV))


# --- the defaults are written once ----------------------------------------------------------


def test_the_modules_take_their_defaults_from_the_settings() -> None:
    assert Limits() == Limits.of(DEFAULTS)
    assert DEFAULTS.reconcile_interval_s == RECONCILE_INTERVAL_S


def _readme_rows() -> dict[str, list[str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        match = re.match(r"\| `([a-z0-9_.]+)` \|(.*)\|$", line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split("|")]
    return rows


def _literal(cell: str) -> Any:
    """The TOML literal a default cell begins with, or None when it is prose."""
    match = re.match(r"`([^`]+)`", cell)
    if not match:
        return None
    try:
        return tomllib.loads(f"v = {match.group(1)}")["v"]
    except tomllib.TOMLDecodeError:
        return None  # a path such as `$XDG_STATE_HOME/sessiond`


def test_the_readme_table_is_every_setting_with_its_env_flag_and_default() -> None:
    rows = _readme_rows()
    keys = [key for key in FILE_KEYS if key != "s3"] + [f"s3.{key}" for key in S3_KEYS]
    assert list(rows) == keys
    for key, (env, flag, default) in rows.items():
        assert (re.findall(r"`(SESSIOND_[A-Z_]+)`", env) or [None])[0] == ENV_VARS.get(key), key
        assert (re.findall(r"`(--[a-z-]+)", flag) or [None])[0] == FLAGS.get(key), key
        obj: Any = DEFAULTS
        for part in key.split("."):
            obj = getattr(obj, part)
        shown = _literal(default)
        if obj == "":  # derived where it is used: said in words
            assert shown is None, key
        else:
            assert shown == (list(obj) if isinstance(obj, tuple) else obj), key


def test_the_cli_has_every_flag_of_the_table() -> None:
    commands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command in ("run", "start", "doctor"):
        options = set(commands.choices[command]._option_string_actions)
        assert set(FLAGS.values()) <= options, command


def test_the_example_config_file_is_valid_and_its_values_are_the_defaults(tmp_path: Path) -> None:
    path = ROOT / "packaging" / "config.example.toml"
    text = path.read_text(encoding="utf-8")
    from_file(str(path), required=True)  # loads as it is, nothing unknown
    # Every key shown, uncommented, loads too: the examples are valid values.
    uncommented = re.sub(r"^# ?(?=[a-z_0-9]+ = )", "", text, flags=re.MULTILINE)
    example = load(tmp_path, uncommented)
    seen = set()
    table = ""
    for line in text.splitlines():
        if line.startswith("["):
            table = line.strip("[]") + "."
        elif match := re.match(r"^#? ?([a-z_0-9]+) = ", line):
            seen.add(table + match.group(1))
    assert seen == {k for k in FILE_KEYS if k != "s3"} | {f"s3.{k}" for k in S3_KEYS}
    for key in seen:
        obj: Any = DEFAULTS
        for part in key.split("."):
            obj = getattr(obj, part)
        if obj != "":  # socket, state_dir, machine_name: an example, not the default
            value: Any = example
            for part in key.split("."):
                value = getattr(value, part)
            assert value == obj, key


# --- doctor and the daemon refuse a bad file clearly ----------------------------------------


def _sessiond(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    command = [sys.executable, "-m", "sessiond", *argv, "--no-discover"]
    command += ["--socket", str(tmp_path / "s.sock"), "--state-dir", str(tmp_path / "state")]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def test_doctor_and_the_daemon_say_what_is_wrong_with_the_file(tmp_path: Path) -> None:
    bad = write(tmp_path / "config.toml", '[s3]\nmax_attempts = "x"\n')
    message = f'config file {bad}: s3.max_attempts: must be an integer >= 1, got "x"'
    doctor = _sessiond(tmp_path, "doctor", "--config", bad)
    assert doctor.returncode == 1, doctor
    assert doctor.stdout.splitlines()[0] == f"problem: {message}"
    assert "Traceback" not in doctor.stdout + doctor.stderr
    run = _sessiond(tmp_path, "run", "--config", bad)
    assert run.returncode == 2 and run.stderr.strip() == f"sessiond: {message}", run
    assert not (tmp_path / "s.sock").exists()
