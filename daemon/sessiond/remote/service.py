"""The two ops that reach beyond this machine, `remote_list` and `restore` (docs/remote.md).

Blocking: the server runs these off its event loop. Only the daemon talks to the store; the
client asks the daemon and never sees a credential.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sessionctl.agent import (
    canonicalize,
    env_sessions_dir,
    normalize_components,
    workspace_sessions_dir,
)
from sessionctl.protocol import ErrorCode, ProtocolError, RemoteList, Restore

from sessiond.remote import layout, restore
from sessiond.remote.catalog import CatalogEntry, CatalogFile
from sessiond.remote.reader import (
    BucketError,
    Catalogs,
    ObjectProblem,
    fetch_object,
    read_catalogs,
)
from sessiond.remote.split import SplitError, read_head, splice
from sessiond.sink import s3
from sessiond.sink.config import SinkConfig
from sessiond.sink.errors import Scrubber
from sessiond.sink.faults import NO_FAULTS, Faults, Point

Fields = dict[str, Any]
_ATTEMPTS = 2  # a catalog rewritten between its read and the objects' gets one more try


@dataclass(frozen=True)
class Copy:
    """One machine's copy of a session, as its catalog describes it."""

    machine: str
    instance: str
    written_at: str
    entry: CatalogEntry


@dataclass(frozen=True)
class Rebuilt:
    copy: Copy
    folder: str
    workspace: str
    data: bytes


class RemoteService:
    def __init__(
        self,
        config: SinkConfig,
        machine: str,
        env: Mapping[str, str],
        faults: Faults = NO_FAULTS,
    ) -> None:
        self._config = config
        self._faults = faults  # test-only pauses (sink/faults.py)
        self.machine = machine
        self._env = env
        self._scrub = Scrubber(config.secret_key, config.access_key)
        self._client = s3.make_client(config, max_attempts=2, connect_timeout_s=3.0)

    # --- remote_list ----------------------------------------------------------------------

    def remote_list(self, request: RemoteList) -> Fields:
        catalogs = self._catalogs()
        workspace, machine = request.workspace, request.machine
        rows: list[tuple[int, str, Fields]] = []
        for doc in catalogs.found:
            if machine is not None and doc.machine != machine:
                continue
            for entry in doc.sessions.values():
                if workspace is not None and not _same_directory(
                    entry.header.get("directory"), workspace
                ):
                    continue
                header = {**entry.header, "machine": doc.machine, "machine_instance": doc.instance}
                rows.append((entry.updated_ns, doc.machine, header))
        rows.sort(key=lambda row: (row[0], row[1]), reverse=True)
        page = rows[request.offset : request.offset + request.limit]
        return {
            "sessions": [row[2] for row in page],
            "total": len(rows),
            "machines": [
                {
                    "machine": doc.machine,
                    "instance": doc.instance,
                    "sessions": len(doc.sessions),
                    "written_at": doc.written_at,
                }
                for doc in sorted(catalogs.found, key=lambda d: (d.machine, d.instance))
            ],
            "shared_names": _shared_names(catalogs.found),
            "unreadable": [
                {"machine": u.machine, "instance": u.instance, "key": u.key, "error": u.error}
                for u in catalogs.unreadable
            ],
            "requests": catalogs.requests,
        }

    def _catalogs(self) -> Catalogs:
        try:
            return read_catalogs(self._client, self._config)
        except BucketError as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, self._scrub(str(exc))) from None

    # --- restore --------------------------------------------------------------------------

    def rebuild(self, request: Restore) -> Rebuilt:
        """Download and check the newest copy (or the named machine's), rebuild it for the
        target workspace. Raises ProtocolError saying what is wrong; writes nothing."""
        problem = ""
        for _ in range(_ATTEMPTS):
            copy = self._pick(request.id, request.machine)
            workspace = self._workspace(request.workspace, copy)
            self._faults.pause(Point.RESTORE_AFTER_CATALOG, request.id)
            try:
                data = self._download(request.id, copy, workspace)
            except ObjectProblem as exc:
                problem = str(exc)  # perhaps rewritten since the catalog was read: once more
                continue
            except BucketError as exc:
                raise ProtocolError(ErrorCode.UNAVAILABLE, self._scrub(str(exc))) from None
            folder = env_sessions_dir(self._env) or workspace_sessions_dir(workspace, self._env)
            return Rebuilt(copy, folder, workspace, data)
        raise ProtocolError(
            ErrorCode.UNAVAILABLE, f"cannot restore {request.id}: {self._scrub(problem)}"
        )

    def _pick(self, session_id: str, machine: str | None) -> Copy:
        catalogs = self._catalogs()
        copies = [
            Copy(doc.machine, doc.instance, doc.written_at, doc.sessions[session_id])
            for doc in catalogs.found
            if session_id in doc.sessions and (machine is None or doc.machine == machine)
        ]
        if machine is not None:
            instances = sorted({c.instance for c in copies})
            if len(instances) > 1:
                raise ProtocolError(
                    ErrorCode.BAD_REQUEST,
                    f"{len(instances)} machines are named {machine!r} in the bucket "
                    f"(instances {', '.join(instances)}); their sessions are kept apart: "
                    f"rename one (machine_name in its config)",
                )
        if not copies:
            where = f"machine {machine!r}" if machine is not None else "any machine's catalog"
            unread = "".join(
                f"; the catalog of {u.machine} ({u.key}) is unreadable: {u.error}"
                for u in catalogs.unreadable
            )
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no session {session_id} in {where}{unread}")
        return max(copies, key=lambda c: (c.entry.updated_ns, c.written_at, c.machine))

    def _workspace(self, asked: str | None, copy: Copy) -> str:
        if asked is None:
            own = copy.entry.header.get("directory")
            if not isinstance(own, str) or not os.path.isdir(own):
                raise ProtocolError(
                    ErrorCode.BAD_REQUEST,
                    f"the session's directory {own!r} does not exist on this machine; "
                    f"name the workspace to restore into with --workspace",
                )
            asked = own
        if not os.path.isdir(asked):
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"workspace {asked} does not exist")
        return canonicalize(asked)

    def _download(self, session_id: str, copy: Copy, workspace: str) -> bytes:
        objects = copy.entry.objects
        if layout.HEAD not in objects or layout.HISTORY not in objects:
            raise ObjectProblem(f"the catalog of {copy.machine} does not name {session_id}'s head")
        bodies = {
            name: fetch_object(self._client, self._config, ref) for name, ref in objects.items()
        }
        try:
            head = read_head(bodies[layout.HEAD])
            return splice(
                head,
                bodies[layout.HISTORY],
                bodies.get(layout.PAGES),
                bodies.get(layout.TOOL_USES),
                directory=workspace,
            )
        except SplitError as exc:
            raise ObjectProblem(
                f"the objects of {session_id} do not make a session: {exc}"
            ) from None

    @staticmethod
    def plan(rebuilt: Rebuilt, session_id: str) -> restore.Plan:
        try:
            return restore.plan(rebuilt.folder, session_id, rebuilt.data)
        except restore.Refused as exc:
            raise ProtocolError(ErrorCode.BAD_REQUEST, str(exc)) from None
        except OSError as exc:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, f"cannot read {rebuilt.folder}: {exc.strerror or exc}"
            ) from None

    @staticmethod
    def write(rebuilt: Rebuilt, session_id: str) -> str:
        try:
            return restore.write(rebuilt.folder, session_id, rebuilt.data)
        except restore.Refused as exc:
            raise ProtocolError(ErrorCode.BAD_REQUEST, str(exc)) from None
        except OSError as exc:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                f"cannot write into {rebuilt.folder}: {exc.strerror or exc}; nothing was written",
            ) from None


def _same_directory(directory: object, workspace: str) -> bool:
    if not isinstance(directory, str):
        return False
    return directory == workspace or normalize_components(directory) == normalize_components(
        workspace
    )


def _shared_names(found: list[CatalogFile]) -> list[Fields]:
    by_name: dict[str, list[str]] = {}
    for doc in found:
        by_name.setdefault(doc.machine, []).append(doc.instance)
    return [
        {"machine": name, "instances": sorted(instances)}
        for name, instances in sorted(by_name.items())
        if len(instances) > 1
    ]
