"""The indexing worker: a child process that owns the index's writing connection.

It runs below the daemon in priority (nice 19, SCHED_BATCH) and in its own process, so
decoding a large session and tokenizing its text never hold the daemon's GIL: `resume` answers
as fast while the index is built. It is sent batches of jobs and answers each with a
BatchResult; each batch is one transaction. It logs nothing itself: the daemon logs what it
reports.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from sessiond.index.records import SessionRecord
from sessiond.search.content import Gone, Unreadable, read_session_text
from sessiond.search.store import (
    IndexWriter,
    check_index,
    open_for_writing,
    remove_files,
    version_key,
)

NICE = 19


@dataclass(slots=True)
class Job:
    path: str
    record: SessionRecord | None  # None: the session is no longer served, drop it


@dataclass(slots=True)
class BatchResult:
    added: int = 0  # sessions indexed for the first time
    appended: int = 0  # sessions that grew: only their new messages indexed
    reindexed: int = 0  # sessions edited or shortened: indexed whole again
    unchanged: int = 0  # the version already indexed
    dropped: int = 0  # sessions removed from the index
    unreadable: int = 0  # files that could not be read now (a later change brings them)
    messages: int = 0  # message rows written
    bytes_read: int = 0
    docs: int = 0  # sessions in the index after the batch
    rebuilt: str | None = None  # the index was found broken and made anew: why
    errors: list[str] = field(default_factory=list)


# --- the messages on the pipe (pickled: plain frozen dataclasses) ----------------------------


@dataclass(frozen=True, slots=True)
class IndexJobs:
    """Daemon → worker: index these sessions, in one transaction."""

    jobs: list[Job]


@dataclass(frozen=True, slots=True)
class CheckIndex:
    """Daemon → worker: check the index file's integrity (a BatchResult says what was found)."""


@dataclass(frozen=True, slots=True)
class StopWorker:
    """Daemon → worker: close the index and exit."""


ToWorker = IndexJobs | CheckIndex | StopWorker


@dataclass(frozen=True, slots=True)
class Opened:
    """Worker → daemon, first: the index is open (`rebuilt`: why it was made anew, if it was)."""

    rebuilt: str | None
    docs: int


@dataclass(frozen=True, slots=True)
class OpenFailed:
    """Worker → daemon, first: the index can be neither opened nor made; the worker exits."""

    reason: str


@dataclass(frozen=True, slots=True)
class BatchDone:
    """Worker → daemon: the answer to an IndexJobs or a CheckIndex."""

    result: BatchResult
    duration_s: float


def apply_job(writer: IndexWriter, job: Job, result: BatchResult) -> None:
    record = job.record
    if record is None:
        result.dropped += writer.drop(job.path)
        return
    version = version_key(record.version)
    state = writer.state(job.path)
    if state is not None and state.version == version:
        result.unchanged += 1
        return
    start = state.messages if state is not None else 0
    try:
        text = read_session_text(record, start)
        grew = (
            state is not None and text.message_count >= start and text.prefix_digest == state.digest
        )
        if not grew and start > 0:  # edited or shortened: every message, from the first
            text = read_session_text(record, 0)
    except Gone:
        result.unreadable += 1  # not worth a log line: the indexer tells of the removal next
        return
    except Unreadable as exc:
        result.unreadable += 1
        result.errors.append(f"{job.path}: {exc}"[:300])
        return
    result.bytes_read += text.bytes_read
    doc = writer.upsert_doc(
        job.path,
        session_id=record.session_id,
        title=text.title,
        directory=record.directory,
        workspaces=record.workspaces,
        updated_at=record.updated_at,
        updated_ns=record.updated_ns,
        version=version,
        messages=text.message_count,
        digest=text.all_messages_digest,
        reindex=not grew,
    )
    result.messages += writer.add_messages(doc, ((m.index, m.role, m.text) for m in text.messages))
    if state is None:
        result.added += 1
    elif grew:
        result.appended += 1
    else:
        result.reindexed += 1


class _Index:
    def __init__(self, path: str) -> None:
        self.path = path
        conn, self.opened_reason = open_for_writing(path)
        self.writer = IndexWriter(conn)

    def rebuild(self, reason: str) -> None:
        self.writer.conn.close()
        remove_files(self.path)
        conn, _ = open_for_writing(self.path)
        self.writer = IndexWriter(conn)
        self.opened_reason = reason

    def run_batch(self, jobs: list[Job]) -> BatchResult:
        result = BatchResult()
        try:
            self.writer.begin()
            for job in jobs:
                apply_job(self.writer, job, result)
            self.writer.commit()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "disk" not in str(exc).lower():
                raise
            # Damaged under our feet: start again from nothing; the daemon requeues everything.
            self.rebuild(f"damaged: {str(exc)[:160]}")
            return BatchResult(rebuilt=self.opened_reason, docs=0)
        result.docs = self.writer.count()
        return result

    def check(self) -> BatchResult:
        try:
            check_index(self.writer.conn)
        except Exception as exc:  # IndexBroken or sqlite3.DatabaseError
            self.rebuild(str(exc)[:200])
            return BatchResult(rebuilt=self.opened_reason, docs=0)
        return BatchResult(docs=self.writer.count())


def lower_priority() -> None:
    """Below everything interactive: nice 19, and SCHED_BATCH, so a wakeup of the worker never
    preempts another task (the daemon's answers above all)."""
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (OSError, AttributeError):
        pass
    try:
        os.nice(NICE - os.nice(0))
    except OSError:
        pass


def worker_main(conn: Connection, path: str) -> None:
    """The child's loop: first Opened or OpenFailed; then each IndexJobs or CheckIndex gets a
    BatchDone; StopWorker or a closed pipe ends it."""
    # A Ctrl-C reaches the whole foreground process group; the daemon ends this worker itself
    # (StopWorker), so the child must not die mid-batch with a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    lower_priority()
    try:
        index = _Index(path)
    except Exception as exc:
        conn.send(OpenFailed(f"cannot open the search index {path}: {exc}"[:300]))
        return
    try:
        conn.send(Opened(index.opened_reason, index.writer.count()))
    except OSError:
        return
    while True:
        try:
            message: ToWorker = conn.recv()
        except (EOFError, OSError):
            return
        if isinstance(message, StopWorker):
            index.writer.conn.close()
            return
        started = time.monotonic()
        try:
            if isinstance(message, IndexJobs):
                result = index.run_batch(message.jobs)
            else:
                result = index.check()
        except Exception as exc:
            index.writer.rollback()
            result = BatchResult(errors=[f"{type(exc).__name__}: {exc}"[:300]])
            result.docs = index.writer.count()
        try:
            conn.send(BatchDone(result, time.monotonic() - started))
        except OSError:  # the daemon is gone (killed): nothing to tell, nobody to tell it to
            return
