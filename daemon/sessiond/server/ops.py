"""The ops of the socket protocol: one handler per op, each taking its typed request
(sessionctl.protocol) and returning the response fields.

Handlers raise ProtocolError for an answer other than ok. Reads come straight from the index;
anything that touches a file or waits runs off the event loop.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from sessionctl import __version__
from sessionctl.agent import canonicalize, workspace_sessions_dir
from sessionctl.protocol import (
    DEFAULT_WAIT_TIMEOUT_S,
    ErrorCode,
    Flush,
    Get,
    List,
    Ping,
    ProtocolError,
    RemoteList,
    Request,
    Rescan,
    Restore,
    Resume,
    Search,
    Status,
    Sync,
    Watch,
)

from sessiond.index.records import SessionRecord
from sessiond.index.store import SessionIndex
from sessiond.index.tails import Tail, TailCache, TailUnavailable
from sessiond.logs import log_event
from sessiond.remote.restore import Action
from sessiond.search.op import search as search_op
from sessiond.sink.reports import NOTHING_TO_FLUSH, SINK_OFF, FlushResult
from sessiond.watch.indexer import Indexer

if TYPE_CHECKING:  # the modules that build these import this one
    from sessiond.agentfiles import AgentFiles
    from sessiond.remote.service import RemoteService
    from sessiond.search.service import SearchService

REREAD_ATTEMPTS = 3  # a windowed read that finds the file rewritten under it resolves again
WORKSPACE_RECHECK_S = 2.0  # how long "this workspace has no sessions folder" is believed
CANONICAL_TTL_S = 1.0  # how long a workspace's resolved path is reused (a request with sync: 0)
Fields = dict[str, Any]


class UploadService(Protocol):
    """What `status` and `flush` need from the history sink (`sinkwiring.Uploads`)."""

    def status(self) -> Fields: ...

    def flush(self, timeout: float) -> FlushResult: ...


class Ops:
    """Answers typed requests from the index, the indexer and the optional services, all given
    here: `agent_files`, `search_service` and `remote` are None when the daemon has no such
    service."""

    def __init__(
        self,
        index: SessionIndex,
        indexer: Indexer,
        env: Mapping[str, str],
        *,
        uploads: UploadService | None = None,
        agent_files: AgentFiles | None = None,
        search_service: SearchService | None = None,
        remote: RemoteService | None = None,
        tails: TailCache | None = None,
        discover: bool = True,
    ) -> None:
        self.index = index
        self.indexer = indexer
        self.env = env
        self.uploads = uploads
        self.agent_files = agent_files
        self.search_service = search_service
        self.remote = remote
        self.tails = tails if tails is not None else TailCache()
        self.discover = discover
        self.instance = uuid.uuid4().hex
        self.started = time.monotonic()
        self._workspace_checked: dict[str, float] = {}
        self._canonical_memo: dict[str, tuple[float, str]] = {}

    async def answer(self, request: Request) -> Fields:
        """The response fields for `request`, by its type (`resume` first: it is the most
        common). `watch` has none: the connection streams events after its ok."""
        match request:
            case Resume():
                return await self.resume(request)
            case Get():
                return await self.get(request)
            case Ping():
                return await self.ping(request)
            case List():
                return await self.list(request)
            case Status():
                return await self.status(request)
            case Search():
                return await self.search(request)
            case Sync():
                return await self.sync(request)
            case Flush():
                return await self.flush(request)
            case Rescan():
                return await self.rescan(request)
            case RemoteList():
                return await self.remote_list(request)
            case Restore():
                return await self.restore(request)
            case Watch():
                return {}
        raise TypeError(f"no handler for {request!r}")

    # --- reads ------------------------------------------------------------------------------

    async def ping(self, request: Ping) -> Fields:
        return {"version": __version__, "instance": self.instance, "seq": self.index.seq}

    async def resume(self, request: Resume) -> Fields:
        workspace = self._canonical(request.workspace, fresh=request.sync)
        if not self._workspace_recently_checked(workspace, fresh=request.sync):
            await self._serve_workspace(workspace, fresh=request.sync)
        if request.sync:
            await self._barrier(None)
        record = self.index.resume(workspace)
        if record is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no session for workspace {workspace}")
        if request.window is None:  # no coroutine to await: the common case stays as cheap as ping
            return _header_answer(record)

        def resolve() -> SessionRecord:
            again = self.index.resume(workspace)
            if again is None:
                raise ProtocolError(ErrorCode.NOT_FOUND, f"no session for workspace {workspace}")
            return again

        return await self._answer(
            resolve, lambda fresh: workspace in fresh.workspaces, request.window
        )

    async def get(self, request: Get) -> Fields:
        if request.sync:
            await self._barrier(None)

        def resolve() -> SessionRecord:
            record = self.index.get(request.id)
            if record is None:
                raise ProtocolError(ErrorCode.NOT_FOUND, f"no session {request.id}")
            return record

        return await self._answer(
            resolve, lambda fresh: fresh.session_id == request.id, request.window
        )

    async def list(self, request: List) -> Fields:
        workspace = await self._narrowed_to(request.workspace, request.sync)
        records, total = self.index.list(workspace, request.limit, request.offset)
        return {"source": "daemon", "sessions": [r.header_json() for r in records], "total": total}

    async def status(self, request: Status) -> Fields:
        counts = self.index.counts()
        served = {folder.path: folder for folder in self.indexer.served_folders()}
        return {
            "instance": self.instance,
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "seq": self.index.seq,
            "sessions": counts.sessions,
            "workspaces": counts.workspaces,
            "roots": [  # the wire's name for served folders (docs/protocol.md §5.5)
                {
                    "path": path,
                    "sessions": counts.per_folder.get(path, 0),
                    "watched": folder.watched,
                    "polled": folder.polled,
                    "sources": sorted(str(s) for s in folder.sources),
                }
                for path, folder in sorted(served.items())
            ],
            "uploads": dict(SINK_OFF) if self.uploads is None else self.uploads.status(),
            "rescans": self.indexer.rescans,
            "overflows": self.indexer.overflows,
            "memory": {"rss_bytes": _rss_bytes(), "tail_cache": self.tails.stats()},
            "agent_files": self.agent_files.status() if self.agent_files else None,
            "search": self.search_service.status() if self.search_service else None,
            "databases": self.indexer.store_status(),
        }

    async def search(self, request: Search) -> Fields:
        if self.search_service is None:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "search is not enabled in this daemon")
        workspace = await self._narrowed_to(request.workspace, request.sync)
        return await search_op(self.search_service, request, workspace)

    # --- barriers and actions -----------------------------------------------------------------

    async def sync(self, request: Sync) -> Fields:
        await self._barrier(request.timeout)
        return {"seq": self.index.seq}

    async def flush(self, request: Flush) -> Fields:
        deadline = time.monotonic() + request.timeout
        await self._barrier(request.timeout)
        remaining = max(0.001, deadline - time.monotonic())
        if self.uploads is None:
            result = NOTHING_TO_FLUSH
        else:
            result = await asyncio.to_thread(self.uploads.flush, remaining)
        if result.timed_out:
            raise ProtocolError(
                ErrorCode.TIMEOUT, f"uploads still pending after {request.timeout}s"
            )
        return {
            "uploaded": result.uploaded,
            "failed": result.failed,
            "catalog_written": result.catalog_written,
        }

    async def rescan(self, request: Rescan) -> Fields:
        counts = await asyncio.wrap_future(self.indexer.rescan())
        return counts.as_dict()  # the counts `rescan` answers (docs/protocol.md §5.8)

    # --- beyond one machine (docs/remote.md) ----------------------------------------------

    def _remote(self) -> RemoteService:
        if self.remote is None:
            raise ProtocolError(
                ErrorCode.UNAVAILABLE,
                "the history sink is off, so there is no bucket to read: set the agent's "
                "CODETETHER_HISTORY_S3_* variables for the daemon",
            )
        return self.remote

    async def remote_list(self, request: RemoteList) -> Fields:
        return await asyncio.to_thread(self._remote().remote_list, request)

    async def restore(self, request: Restore) -> Fields:
        remote = self._remote()
        started = time.monotonic()
        rebuilt = await asyncio.to_thread(remote.rebuild, request)
        plan = await asyncio.to_thread(remote.plan, rebuilt, request.id)
        header: Any = rebuilt.copy.entry.header
        if not request.dry_run:
            if plan.action == Action.CREATED:
                await asyncio.to_thread(remote.write, rebuilt, request.id)
            folder = os.path.realpath(rebuilt.folder)
            if not self.indexer.is_served(folder):
                await asyncio.wrap_future(self.indexer.ensure_served(folder))
            await self._barrier(None)  # resume finds it as soon as we answer
            record = self.index.by_path(plan.path)
            if record is not None:
                header = record.header_json()
            log_event(
                "session_restored",
                session_id=request.id,
                machine=rebuilt.copy.machine,
                path=plan.path,
                action=str(plan.action),
                bytes=len(rebuilt.data),
                duration_ms=round((time.monotonic() - started) * 1000),
            )
        return {
            "session_id": request.id,
            "path": plan.path,
            "header": header,
            "action": str(plan.action),
            "dry_run": request.dry_run,
            "machine": rebuilt.copy.machine,
            "workspace": rebuilt.workspace,
        }

    # --- helpers ---------------------------------------------------------------------------

    async def _barrier(self, timeout: float | None) -> None:
        limit = DEFAULT_WAIT_TIMEOUT_S if timeout is None else timeout
        future, abandon = self.indexer.barrier()
        try:
            await asyncio.wait_for(asyncio.wrap_future(future), limit)
        except TimeoutError:
            abandon()
            raise ProtocolError(
                ErrorCode.TIMEOUT, f"the index did not catch up within {limit}s"
            ) from None

    async def _narrowed_to(self, workspace: str | None, sync: bool) -> str | None:
        """The canonical workspace a `list` or `search` asks about, its folder served first (None:
        every session); with `sync`, once every earlier change is indexed."""
        if workspace is not None:
            workspace = self._canonical(workspace, fresh=sync)
            await self._serve_workspace(workspace, fresh=sync)
        if sync:
            await self._barrier(None)
        return workspace

    def _canonical(self, workspace: str, fresh: bool) -> str:
        """The agent's canonical workspace, resolved at most once a second per spelling: the
        symlink walk is the largest cost of a resume. `sync` asks for a fresh resolution."""
        now = time.monotonic()
        hit = self._canonical_memo.get(workspace)
        if hit is not None and not fresh and now - hit[0] < CANONICAL_TTL_S:
            return hit[1]
        if len(self._canonical_memo) > 10_000:
            self._canonical_memo.clear()
        resolved = canonicalize(workspace)
        self._canonical_memo[workspace] = (now, resolved)
        return resolved

    def _workspace_recently_checked(self, workspace: str, fresh: bool) -> bool:
        """Whether _serve_workspace() has nothing to do: tested without awaiting it, since a
        coroutine per request is a cost `ping` does not have."""
        if not self.discover:
            return True
        checked = self._workspace_checked.get(workspace)
        return (
            not fresh and checked is not None and time.monotonic() - checked < WORKSPACE_RECHECK_S
        )

    async def _serve_workspace(self, workspace: str, fresh: bool) -> None:
        """The asked workspace's own sessions folder, when it exists (docs/protocol.md,
        "resume")."""
        if self._workspace_recently_checked(workspace, fresh):
            return
        now = time.monotonic()
        folder = await asyncio.to_thread(workspace_sessions_dir, workspace, self.env)
        if len(self._workspace_checked) > 10_000:
            self._workspace_checked.clear()
        self._workspace_checked[workspace] = now
        if not self.indexer.is_served(os.path.realpath(folder)) and os.path.isdir(folder):
            await asyncio.wrap_future(self.indexer.ensure_served(folder))

    async def _answer(
        self,
        resolve: Callable[[], SessionRecord],
        answers: Callable[[SessionRecord], bool],
        window: int | None,
    ) -> Fields:
        """The answer for the record `resolve()` gives. A window reads the file, which may
        have been rewritten since it was indexed, even with another session: what was read
        must still `answers` the question, or the index reads the file again and the
        question is resolved anew."""
        for _ in range(REREAD_ATTEMPTS):
            record = resolve()
            if window is None:
                return _header_answer(record)
            try:
                tail = await asyncio.to_thread(self.tails.get, record, window)
            except TailUnavailable as exc:
                raise ProtocolError(ErrorCode.NOT_FOUND, str(exc)) from None
            if tail.record.version == record.version or answers(tail.record):
                return self._tail_answer(tail)
            await asyncio.wrap_future(self.indexer.refresh(record.path))
        raise ProtocolError(ErrorCode.UNAVAILABLE, "the session file kept changing; try again")

    @staticmethod
    def _tail_answer(tail: Tail) -> Fields:
        return {
            "source": "daemon",
            "session_id": tail.record.session_id,
            "path": tail.record.path,
            "header": tail.record.header_json(),
            "session": tail.session,
            "dropped": tail.dropped,
            "file_bytes": tail.record.size,
        }


def _header_answer(record: SessionRecord) -> Fields:
    return {
        "source": "daemon",
        "session_id": record.session_id,
        "path": record.path,
        "header": record.header_json(),
    }


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
