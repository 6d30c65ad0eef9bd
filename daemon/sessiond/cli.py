"""`sessiond run | start | stop | doctor | install-service` (README, "Installing for real use")."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from sessiond.config import ConfigError, LogFormat, LogLevel, Settings, load_settings


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--sessions-dir",
        action="append",
        metavar="DIR",
        help="serve this sessions folder (repeatable)",
    )
    common.add_argument(
        "--no-discover", action="store_true", help="serve only the folders given, find no others"
    )
    common.add_argument("--socket", metavar="PATH", help="the Unix socket to listen on")
    common.add_argument("--state-dir", metavar="DIR", help="where sessiond keeps its state")
    common.add_argument("--config", metavar="FILE", help="the config file (TOML)")
    common.add_argument(
        "--log-format", choices=[f.value for f in LogFormat], help="log line format"
    )
    common.add_argument("--log-level", choices=[level.value for level in LogLevel])
    common.add_argument(
        "--no-workspace-index",
        action="store_true",
        help="never write the agent's .workspace_index.json",
    )
    common.add_argument(
        "--no-listing-cache",
        action="store_true",
        help="never write the agent's .listing_cache.json",
    )
    parser = argparse.ArgumentParser(prog="sessiond", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", parents=[common], help="run in the foreground")
    start = commands.add_parser("start", parents=[common], help="detach as a daemon")
    start.add_argument("--pidfile", metavar="P")
    stop = commands.add_parser("stop", parents=[common], help="stop the detached daemon")
    stop.add_argument("--pidfile", metavar="P")
    stop.add_argument("--timeout", type=float, default=30.0, metavar="S")
    commands.add_parser("doctor", parents=[common], help="check the setup, say what to fix")
    install = commands.add_parser(
        "install-service", help="write the systemd user units for this sessiond"
    )
    install.add_argument(
        "--unit-dir", metavar="DIR", help="where to write them (default ~/.config/systemd/user)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    env = dict(os.environ)
    if args.command == "install-service":
        from sessiond.systemd.units import install_service

        return install_service(env, args.unit_dir)
    try:
        settings = load_settings(args, env)
    except ConfigError as exc:
        if args.command == "doctor":  # said the way doctor says every problem
            from sessiond.doctor import config_problem

            return config_problem(exc)
        print(f"sessiond: {exc}", file=sys.stderr)  # run, start: the daemon refuses to start
        return 2

    def reread() -> Settings:  # SIGHUP: the config file and environment, read again
        return load_settings(args, dict(os.environ))

    if args.command == "run":
        return _run(settings, env, reread)
    if args.command == "start":
        from sessiond.daemonize import start

        return start(settings, env, args.pidfile, lambda: _run(settings, env, reread))
    if args.command == "stop":
        from sessiond.daemonize import stop

        return stop(settings, args.pidfile, args.timeout)
    from sessiond.doctor import doctor

    return doctor(settings, env)


def _run(settings: Settings, env: dict[str, str], reread: Callable[[], Settings]) -> int:
    from sessiond.app import run_daemon
    from sessiond.logsetup import configure

    try:
        configure(settings.log_format, settings.log_level)
    except RuntimeError as exc:  # --log-format journal without systemd-python
        print(f"sessiond: {exc}", file=sys.stderr)
        return 2
    return run_daemon(settings, env, reread)
