"""The daemon's lifecycle: wire the parts, serve until told to stop, stop gracefully.

Threads: the asyncio loop (socket server) on the main thread, the indexer thread, watchdog's
threads, and the history sink's workers. The index is the only thing they share.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping

from sessionctl.protocol import Event, Status, event_message

from sessiond.agentfiles import AgentFiles
from sessiond.config import ConfigError, Settings
from sessiond.index.change import Change
from sessiond.index.records import SessionRecord
from sessiond.index.store import SessionIndex
from sessiond.logs import log_event
from sessiond.logsetup import set_level
from sessiond.search.service import SearchService
from sessiond.server.connections import Server
from sessiond.server.events import EventHub
from sessiond.server.limits import Limits
from sessiond.server.listener import SocketError, bind_socket, inherited_socket
from sessiond.server.ops import Ops
from sessiond.service import HealthWatch, StatusText, install_test_faults
from sessiond.sinkwiring import Uploads
from sessiond.systemd.heartbeat import Heartbeat
from sessiond.systemd.notify import Notifier
from sessiond.watch.indexer import Indexer
from sessiond.watch.served import Discovery

STATS_INTERVAL_S = 60.0  # how often the `stats` log line is written (docs/logging.md)


class Daemon:
    def __init__(
        self,
        settings: Settings,
        env: Mapping[str, str],
        reread: Callable[[], Settings] | None = None,
    ) -> None:
        self.settings = settings
        self._reread = reread
        self.env = env
        self.index = SessionIndex()
        self.indexer = Indexer(
            self.index,
            Discovery(tuple(settings.sessions_dirs), settings.discover, env),
            state_dir=settings.state_dir,
            reconcile_interval_s=settings.reconcile_interval_s,
        )
        self.agent_files = AgentFiles(
            self.index,
            workspace_index=settings.maintain_workspace_index,
            listing_cache=settings.maintain_listing_cache,
            serves=self.indexer.is_served,
        )
        self.indexer.add_listener(self.agent_files.on_index_change)
        self.indexer.add_agent_file_hook(self.agent_files.agent_file_changed)
        self.indexer.add_folder_hook(self.agent_files.notify)
        self.search = SearchService(settings.state_dir, self.index, env)
        self.indexer.add_listener(self.search.on_index_change)
        self.notifier = Notifier.from_env(env)
        self._stop = asyncio.Event()
        self._owns_socket_file = False
        self._exit_code = 0

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        hub = EventHub(loop)
        ready = asyncio.Event()
        uploads = Uploads.from_settings(self.settings, self.env, self.index, hub.publish)
        ops = Ops(
            self.index,
            self.indexer,
            self.env,
            uploads=uploads,
            agent_files=self.agent_files,
            search_service=self.search,
            remote=uploads.remote_service(self.settings, self.env),
            discover=self.settings.discover,
        )
        self.indexer.add_listener(lambda change, record: hub.publish(_index_event(change, record)))
        self.indexer.add_listener(uploads.on_index_change)
        self.indexer.add_rescan_listener(
            lambda summary: hub.publish(event_message(Event.RESCAN, summary.fields()))
        )
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
        server = Server(ops, hub, ready, Limits.of(self.settings))
        await server.start(sock)  # clients may connect now; they are answered once ready
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        self.agent_files.start()
        self.indexer.start()
        install_test_faults(loop, self.env, self.indexer)
        status = StatusText(self.index, ready.is_set)
        beat = Heartbeat(self.notifier, self.env)  # the systemd watchdog's pings
        health = HealthWatch(self.indexer, status, self._died, beat, self.notifier)
        watchdog = asyncio.create_task(health.run())
        while not (self.indexer.ready.is_set() or self._stop.is_set()):
            await asyncio.to_thread(self.indexer.ready.wait, 0.5)  # or until told to stop
        # Before ready: a flush sent as soon as the daemon answers covers what start queued.
        await asyncio.to_thread(uploads.start, self.index.all_ids())
        ready.set()
        self.search.start()  # after ready: its first build reads what the index holds
        if self.search.unavailable:
            log_event("search_unavailable", logging.WARNING, reason=self.search.unavailable)
        counts = self.index.counts()
        if not self._stop.is_set():
            self.notifier.ready(status())
            log_event(
                "ready",
                sessions=counts.sessions,
                workspaces=counts.workspaces,
                duration_ms=round((time.monotonic() - started) * 1000, 1),
            )
        stats = asyncio.create_task(self._log_stats(ops))
        await self._stop.wait()
        log_event("stopping")
        self.notifier.stopping("stopping")
        stats.cancel()
        watchdog.cancel()
        # Each step is tried whatever the one before did: a stop always completes, saves
        # what it can and removes the socket file.
        try:
            for step in (
                server.close,
                lambda: asyncio.to_thread(uploads.stop),  # in flight finished, rest kept
                lambda: asyncio.to_thread(self.indexer.stop),
                lambda: asyncio.to_thread(self.search.stop),
                lambda: asyncio.to_thread(self.agent_files.stop),  # writes what is pending
            ):
                try:
                    await step()
                except Exception:
                    self._exit_code = 1
                    log_event("stop_step_failed", logging.ERROR, exc_info=True)
        finally:
            self._remove_socket_file()
        log_event("stop", uptime_s=round(time.monotonic() - started, 1), code=self._exit_code)
        return self._exit_code

    def _died(self) -> None:
        """The watcher or the indexer died and no watchdog will restart us: exit 1."""
        self._exit_code = 1
        self._stop.set()

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
        """SIGHUP: read the config again, serve newly configured folders, set the log level,
        and reconcile every folder. Settings that need a restart (socket, state folder, S3)
        keep their old values until then."""
        log_event("reload")
        self.notifier.reloading()
        if self._reread is not None:
            try:
                fresh = self._reread()
            except ConfigError as exc:
                log_event("reload_failed", logging.ERROR, error=str(exc))
            else:
                set_level(fresh.log_level)
                for folder in set(fresh.sessions_dirs) - set(self.settings.sessions_dirs):
                    self.indexer.serve_configured(folder)
                for folder in set(self.settings.sessions_dirs) - set(fresh.sessions_dirs):
                    self.indexer.unserve_configured(folder)
                self.settings = dataclasses.replace(
                    self.settings, sessions_dirs=fresh.sessions_dirs, log_level=fresh.log_level
                )
        self.indexer.rescan().add_done_callback(lambda _: self.notifier.ready())

    async def _log_stats(self, ops: Ops) -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL_S)
            status = await ops.status(Status())
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


def _index_event(change: Change, record: SessionRecord) -> dict[str, object]:
    event = Event.SESSION_SAVED if change is Change.SAVED else Event.SESSION_REMOVED
    return event_message(
        event,
        {
            "session_id": record.session_id,
            "path": record.path,
            "mtime_ns": record.mtime_ns,
            "directory": record.directory,
        },
    )


def run_daemon(
    settings: Settings, env: Mapping[str, str], reread: Callable[[], Settings] | None = None
) -> int:
    try:
        return asyncio.run(Daemon(settings, env, reread).run())
    except KeyboardInterrupt:
        return 0
    except (SocketError, ConfigError) as exc:
        log_event("start_failed", logging.ERROR, error=str(exc))
        return 1
    except Exception:
        log_event("crash", logging.CRITICAL, exc_info=True)
        return 1
