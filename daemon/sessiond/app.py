"""The daemon's lifecycle: wire the parts, serve until told to stop, stop gracefully.

Threads: the asyncio loop (socket server) on the main thread, the indexer thread, watchdog's
threads, and the history sink's workers. The index is the only thing they share.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import Mapping

from sessionctl.protocol import Event, event_message

from sessiond import systemd
from sessiond.config import Settings
from sessiond.index.records import SessionRecord
from sessiond.index.store import SessionIndex
from sessiond.logs import log_event
from sessiond.server.events import EventHub
from sessiond.server.listener import SocketError, bind_socket, inherited_socket
from sessiond.server.ops import Ops
from sessiond.server.server import Server
from sessiond.watch.indexer import Indexer
from sessiond.watch.roots import Discovery

HEARTBEAT_S = 60.0


class Daemon:
    def __init__(self, settings: Settings, env: Mapping[str, str]) -> None:
        self.settings = settings
        self.env = env
        self.index = SessionIndex()
        self.indexer = Indexer(
            self.index,
            Discovery(tuple(settings.sessions_dirs), settings.discover, env),
            state_dir=settings.state_dir,
        )
        self._stop = asyncio.Event()
        self._owns_socket_file = False

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        hub = EventHub(loop)
        ready = asyncio.Event()
        ops = Ops(self.index, self.indexer, self.env, discover=self.settings.discover)
        self.indexer.add_listener(lambda kind, record: hub.publish(_index_event(kind, record)))
        sock = self._listening_socket()
        log_event(
            "start",
            pid=os.getpid(),
            socket=self.settings.socket,
            instance=ops.instance,
            roots=len(self.settings.sessions_dirs),
            discover=self.settings.discover,
        )
        started = time.monotonic()
        server = Server(ops, hub, ready)
        await server.start(sock)  # clients may connect now; they are answered once ready
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        self.indexer.start()
        await asyncio.to_thread(self.indexer.ready.wait)
        ready.set()
        counts = self.index.counts()
        systemd.notify(f"READY=1\nSTATUS=serving {counts['sessions']} sessions")
        log_event(
            "ready",
            sessions=counts["sessions"],
            workspaces=counts["workspaces"],
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
        heartbeat = asyncio.create_task(self._heartbeat(ops))
        await self._stop.wait()
        log_event("stopping")
        systemd.notify("STOPPING=1")
        heartbeat.cancel()
        await server.close()
        await asyncio.to_thread(self.indexer.stop)
        self._remove_socket_file()
        log_event("stop", uptime_s=round(time.monotonic() - started, 1))
        return 0

    def _listening_socket(self) -> socket.socket:
        inherited = inherited_socket()
        if inherited is not None:
            return inherited
        sock = bind_socket(self.settings.socket)
        self._owns_socket_file = True
        return sock

    def _remove_socket_file(self) -> None:
        if self._owns_socket_file:
            try:
                os.unlink(self.settings.socket)
            except OSError:
                pass

    def _reload(self) -> None:
        log_event("reload")
        systemd.notify("RELOADING=1")
        self.indexer.rescan().add_done_callback(lambda _: systemd.notify("READY=1"))

    async def _heartbeat(self, ops: Ops) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            status = await ops.op_status({})
            uploads = status["uploads"]
            log_event(
                "stats",
                sessions=status["sessions"],
                workspaces=status["workspaces"],
                rescans=status["rescans"],
                overflows=status["overflows"],
                rss_bytes=status["memory"]["rss_bytes"],
                uploads_pending=uploads["pending"],
                uploads_failed=uploads["failed"],
                healthy=self.indexer.healthy(),
            )


def _index_event(kind: str, record: SessionRecord) -> dict[str, object]:
    event = Event.SESSION_SAVED if kind == "saved" else Event.SESSION_REMOVED
    return event_message(
        event,
        {
            "session_id": record.session_id,
            "path": record.path,
            "mtime_ns": record.mtime_ns,
            "directory": record.directory,
        },
    )


def run_daemon(settings: Settings, env: Mapping[str, str]) -> int:
    try:
        return asyncio.run(Daemon(settings, env).run())
    except KeyboardInterrupt:
        return 0
    except SocketError as exc:
        log_event("start_failed", logging.ERROR, error=str(exc))
        return 1
    except Exception:
        log_event("crash", logging.CRITICAL, exc_info=True)
        return 1
