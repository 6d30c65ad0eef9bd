"""Everything that knows about systemd, and the only code that does: it alone reads
`LISTEN_*`, `NOTIFY_SOCKET` and `WATCHDOG_*`, and imports systemd-python (the optional
`systemd` extra). Callers import the submodule they need:

- `activation`: the sockets passed by socket activation (`LISTEN_FDS`, ...);
- `notify`: the typed notifier (`READY=1`, `STATUS=`, `STOPPING=1`, ...; sd_notify);
- `heartbeat`: `WATCHDOG=1` pings every half `WATCHDOG_USEC`, while the caller says healthy;
- `journal`: the journald log handler and its fields;
- `units`: the unit files and `sessiond install-service`.

docs/systemd.md describes what systemd sees.
"""
