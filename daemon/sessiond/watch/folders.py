"""The live set of served folders (`FolderSet`): which are served now, which are watched or
polled, and the agent's location registry that names new ones (README, "What it serves";
docs/protocol.md §5.5).

Every folder is served because of claims: a source and the path that source names (a
configured folder, a registry pointer's folder, the sessions folder of a workspace asked
about). A claim is resolved to the folder's real path, which is what is served; claims are
resolved again at each rescan (and those of pending folders at each pending check), so a
folder replaced by a symlink is followed to wherever the path leads now. A folder no claim
names any more is no longer served.

Used on the indexer thread, except the read-only questions, which any thread may ask. A folder
that does not exist (yet) stays pending and is looked for again; one that vanishes goes back
to pending. A folder that cannot be watched (inotify watches used up, or no permission to
read it) is polled instead.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sessionctl.agent import POINTER_SUFFIX, SESSIONS_DIR_NAME, pointer_target_dir, read_pointer

from sessiond.logs import log_event
from sessiond.watch.polling import NOT_THERE, POLL_INTERVAL_S, Look, Poll
from sessiond.watch.served import Discovery, ServedFolder, Source, folder_key
from sessiond.watch.watcher import FolderWatcher

PENDING_GRACE_S = 60.0
"""How long a folder only the registry names is looked for at every pending check after it
moved away (it may come back, or a symlink be put in its place). One that was deleted, or is
not there when a pointer names it, or whose grace is over, is dormant: not served, not looked
for, until a pointer's event names it again (the agent writes the pointer on every save) or a
rescan finds it there."""
SELF_EVENT_WAIT_S = 2.0
"""How long a watched folder found gone from its path, its parent still in place, waits for
its own watch's event to say whether it was deleted or moved (the event may have been lost
in an overflow) before it is taken as moved away."""


@dataclass(frozen=True)
class Claim:
    source: Source
    named: str  # the folder as the source names it (not resolved)


def holds_sessions(folder: str) -> bool:
    """Whether the agent could keep sessions in `folder`: its sessions folders are always
    `<data dir>/sessions` (docs/protocol.md, "status"), so a pointer naming anything else (`/`,
    `/etc`) names no sessions folder and is not followed."""
    return os.path.basename(folder) == SESSIONS_DIR_NAME and folder != "/"


class FolderSet:
    def __init__(
        self,
        watcher: FolderWatcher,
        discovery: Discovery,
        scan: Callable[[str], int | None],
        forget: Callable[[str], None],
        confine: Callable[[str, bool], None] = lambda _folder, _confined: None,
    ) -> None:
        """`scan(folder)` indexes a newly served folder (returns the sessions added, or None
        when the scan is deferred to the initial crawl); `forget(folder)` drops a vanished
        folder's sessions; `confine(folder, confined)` says whether a folder is served only
        because workspaces were asked about (its sessions then answer only those workspaces
        whose sessions folder it is)."""
        self._watcher = watcher
        self._discovery = discovery
        self._scan = scan
        self._forget = forget
        self._confine = confine
        self._served: dict[str, ServedFolder] = {}
        self._claims: dict[Claim, str] = {}  # claim -> the folder it resolves to
        self._by_folder: dict[str, set[Claim]] = {}  # and back
        self._lock = threading.Lock()
        self._unwatchable: set[str] = set()
        self._polls: dict[str, Poll] = {}  # polled folder -> its last look
        self._vanished: dict[str, float] = {}  # pending folder -> when it was last there
        self._leaving: dict[str, float] = {}  # watched folder gone from its path -> since when
        self._registry_polled: Poll | None = None

    @property
    def registry(self) -> str | None:
        return self._discovery.registry

    # --- questions (any thread) -----------------------------------------------------------

    def watched(self) -> list[str]:
        """Every watched folder, the registry too: where `sync` plants its cookies."""
        with self._lock:
            folders = [r.path for r in self._served.values() if r.watched]
        if self.registry and self._watcher.is_watching(self.registry):
            folders.append(self.registry)
        return folders

    def polled(self) -> list[str]:
        """Every polled folder: `sync` scans these instead of waiting on cookies."""
        with self._lock:
            return [r.path for r in self._served.values() if r.polled]

    def served_folders(self) -> list[ServedFolder]:
        with self._lock:
            return [
                ServedFolder(r.path, set(r.sources), r.watched, r.polled)
                for r in self._served.values()
            ]

    def is_served(self, folder: str) -> bool:
        with self._lock:
            return folder in self._served

    # --- changes (indexer thread) ---------------------------------------------------------

    def add(self, named: str, source: Source) -> bool:
        """Serve the folder `named` (resolved) because of `source`; true when it is served
        (watched or polled, and scanned) now or already."""
        claim = Claim(source, os.path.abspath(named))
        folder = folder_key(named)
        with self._lock:
            old = self._claims.get(claim)
            if old != folder:
                if old is not None:
                    self._unclaim(claim)
                self._claims[claim] = folder
                self._by_folder.setdefault(folder, set()).add(claim)
        if old is not None and old != folder:
            self._settle(old)
        return self._settle(folder)

    def withdraw(self, source: Source, named: str) -> None:
        """`source` no longer names the folder `named`."""
        with self._lock:
            folder = self._unclaim(Claim(source, os.path.abspath(named)))
        if folder is not None:
            self._settle(folder)

    def _unclaim(self, claim: Claim) -> str | None:
        """Forget `claim` (under the lock); returns the folder it resolved to."""
        folder = self._claims.pop(claim, None)
        if folder is not None:
            claims = self._by_folder.get(folder)
            if claims is not None:
                claims.discard(claim)
                if not claims:
                    del self._by_folder[folder]
        return folder

    def _settle(self, folder: str) -> bool:
        """Bring `folder` in line with its claims: drop it when none is left, else serve it
        if it can be; true when it is served."""
        with self._lock:
            sources = {c.source for c in self._by_folder.get(folder, ())}
            served = self._served.get(folder)
            if not sources:
                if served is not None:
                    del self._served[folder]
            elif served is None:
                served = self._served[folder] = ServedFolder(folder)
            was_confined = served is not None and served.sources == {Source.WORKSPACE}
            if served is not None:
                served.sources = sources
        if not sources:
            if served is not None:
                self._drop(served)
            return False
        assert served is not None
        confined = sources == {Source.WORKSPACE}
        if confined != was_confined or (not served.watched and not served.polled):
            self._confine(folder, confined)
        if served.watched or served.polled:
            return True
        if not os.path.isdir(folder):
            if Source.WORKSPACE in sources:  # asked about, but there is nothing to serve
                self._withdraw_workspace(folder)
                sources -= {Source.WORKSPACE}
            if not sources:
                return False
            if sources == {Source.REGISTRY} and not self._in_grace(folder):
                self._make_dormant(folder)
            else:
                self._vanished.setdefault(folder, time.monotonic())
            return False
        return self._serve(served)

    def _in_grace(self, folder: str) -> bool:
        since = self._vanished.get(folder)
        return since is not None and time.monotonic() - since <= PENDING_GRACE_S

    def _make_dormant(self, folder: str) -> None:
        """Keep the claims, forget the folder: nothing looks for it until a claim is made
        again (see PENDING_GRACE_S)."""
        with self._lock:
            served = self._served.pop(folder, None)
        self._vanished.pop(folder, None)
        if served is not None:
            self._stop_serving(served)

    def _withdraw_workspace(self, folder: str) -> None:
        """The workspaces asked about no longer have `folder`: their claims go."""
        with self._lock:
            for claim in list(self._by_folder.get(folder, ())):
                if claim.source is Source.WORKSPACE:
                    self._unclaim(claim)
            served = self._served.get(folder)
            if served is not None:
                served.sources.discard(Source.WORKSPACE)
                if not served.sources:
                    del self._served[folder]
        if served is not None and not served.sources:
            self._drop(served)

    def _serve(self, served: ServedFolder) -> bool:
        folder = served.path
        try:
            self._watcher.watch(folder)
        except OSError as exc:
            if exc.errno in NOT_THERE:
                return False  # gone again since it was seen: still pending, nothing to report
            self._poll_instead(served, exc)
        else:
            self._unwatchable.discard(folder)
            served.watched = True
        self._vanished.pop(folder, None)
        added = self._scan(folder)
        source = sorted(str(s) for s in served.sources)[0]
        log_event("root_added", root=folder, source=source, sessions=added, polled=served.polled)
        return True

    def _poll_instead(self, served: ServedFolder, exc: OSError) -> None:
        folder = served.path
        served.polled = True
        now = time.monotonic()
        self._polls[folder] = Poll.start(folder, now)
        if folder not in self._unwatchable:  # say it once, not at every retry
            self._unwatchable.add(folder)
            log_event(
                "root_unwatchable",
                logging.WARNING,
                root=folder,
                error=str(exc),
                polled_every_s=POLL_INTERVAL_S,
            )

    def _drop(self, served: ServedFolder) -> None:
        """No claim names `served` any more: stop serving it."""
        self._stop_serving(served)
        self._vanished.pop(served.path, None)
        self._confine(served.path, False)
        log_event("root_dropped", root=served.path)

    def _stop_serving(self, served: ServedFolder) -> None:
        if served.watched:
            self._watcher.unwatch(served.path)
        served.watched = served.polled = False
        self._polls.pop(served.path, None)
        self._leaving.pop(served.path, None)
        self._forget(served.path)

    def gone(self, folder: str, deleted: bool = False) -> None:
        """`folder` was deleted or moved away: unwatch it, forget its sessions, keep looking
        (at its claims' paths, resolved again: they may lead somewhere else now), except for
        a deleted folder only the registry names, which is dormant (see PENDING_GRACE_S)."""
        with self._lock:
            served = self._served.get(folder)
        if served is None:  # the registry, or a folder no longer served
            self._leaving.pop(folder, None)
            self._watcher.unwatch(folder)
            self._forget(folder)  # its cookies too
            return
        self._stop_serving(served)
        log_event("root_gone", root=folder)
        if deleted and served.sources == {Source.REGISTRY}:
            self._make_dormant(folder)
        else:
            self._vanished[folder] = time.monotonic()

    def verify(self, folder: str) -> bool:
        """True when `folder` is served and its path still leads to the served folder. One
        that moved away unseen (its parent renamed) is gone, whatever is at its path now."""
        if self._watcher.is_watching(folder):
            if self._watcher.still_watching(folder):
                return True
            if not self._own_event_due(folder):
                self.gone(folder)
            return False
        with self._lock:
            served = self._served.get(folder)
        if served is None or not served.polled:
            return False
        if os.path.isdir(folder):
            return True
        self.gone(folder)
        return False

    def _own_event_due(self, folder: str) -> bool:
        """Whether the watch of a folder gone from its path is about to say how it went: it
        left a parent still in place, so it was deleted or renamed itself. The event tells a
        deleted folder from a moved one, and a deleted folder only the registry names is not
        looked for again (see PENDING_GRACE_S): taking it for moved now, as a `sync` would
        before the reader thread queued the event, would keep it served."""
        if not self._watcher.left_its_parent(folder):
            return False
        now = time.monotonic()
        return now - self._leaving.setdefault(folder, now) < SELF_EVENT_WAIT_S

    def check_pending(self) -> None:
        """Serve the folders that exist now (their claims resolved again: a folder replaced
        by a symlink is followed), and watch the registry once it exists. Dormant folders are
        not looked for (see PENDING_GRACE_S)."""
        with self._lock:
            pending = {
                r.path: set(r.sources)
                for r in self._served.values()
                if not r.watched and not r.polled
            }
            claims = [(c, f) for f in pending for c in self._by_folder.get(f, ())]
        for claim, folder in claims:
            if pending[folder] == {Source.REGISTRY} and not self._in_grace(folder):
                self._make_dormant(folder)
                continue
            self.add(claim.named, claim.source)
        if self.registry:
            self.watch_registry(read=True)

    def resolve_all(self) -> None:
        """Resolve every claim again (a rescan): follow folders whose path leads elsewhere
        now, and drop workspace claims whose folder is no longer there."""
        with self._lock:
            claims = list(self._claims.items())
        for claim, folder in claims:
            if folder_key(claim.named) != folder or not self.is_served(folder):  # or dormant
                self.add(claim.named, claim.source)
        self.check_pending()
        with self._lock:
            confined = [r.path for r in self._served.values() if r.sources == {Source.WORKSPACE}]
        for folder in confined:
            self._confine(folder, True)  # the workspaces' .git may have moved: judge again

    # --- polled folders ---------------------------------------------------------------------

    def seconds_until_poll(self, now: float) -> float | None:
        dues = [p.due for p in self._polls.values()]
        if self._registry_polled is not None:
            dues.append(self._registry_polled.due)
        return max(0.0, min(dues) - now) if dues else None

    def poll(self, force: bool = False) -> list[str]:
        """Look at the polled folders that are due (all of them when `force`: a `sync`);
        returns those whose files need a look (the caller scans them). A folder that can be
        watched again is watched (and returned: it needs a scan)."""
        now = time.monotonic()
        changed: list[str] = []
        for folder, poll in list(self._polls.items()):
            look = poll.look(now, force)
            if look is Look.NOT_DUE:
                continue
            if look is Look.GONE:
                self.gone(folder)
            elif (poll.watch_due(now) and self._try_watch(folder)) or look is Look.CHANGED:
                changed.append(folder)
        self._poll_registry(now, force)
        return changed

    def _try_watch(self, folder: str) -> bool:
        try:
            self._watcher.watch(folder)
        except OSError:
            return False
        with self._lock:
            served = self._served.get(folder)
        if served is None:
            self._watcher.unwatch(folder)
            return False
        served.polled, served.watched = False, True
        self._polls.pop(folder, None)
        self._unwatchable.discard(folder)
        log_event("root_watched", root=folder)
        return True

    def _poll_registry(self, now: float, force: bool) -> None:
        poll, registry = self._registry_polled, self.registry
        if poll is None or registry is None:
            return
        look = poll.look(now, force)
        if look is Look.GONE:
            self._registry_polled = None  # looked for by the pending checks, as at start
            return
        if look is Look.NOT_DUE:
            return
        if poll.watch_due(now):
            try:
                self._watcher.watch(registry)
            except OSError:
                pass
            else:
                self._registry_polled = None
                log_event("root_watched", root=registry)
                self.read_registry()
                return
        if look is Look.CHANGED:
            self.read_registry()

    # --- the registry -----------------------------------------------------------------------

    def watch_registry(self, read: bool) -> None:
        registry = self.registry
        if (
            not registry
            or self._watcher.is_watching(registry)
            or self._registry_polled is not None
            or not os.path.isdir(registry)
        ):
            return
        try:
            self._watcher.watch(registry)
        except OSError as exc:
            if exc.errno in NOT_THERE:
                return
            self._registry_polled = Poll.start(registry, time.monotonic())
            log_event(
                "root_unwatchable",
                logging.WARNING,
                root=registry,
                error=str(exc),
                polled_every_s=POLL_INTERVAL_S,
            )
        if read:
            self.read_registry()

    @property
    def registry_polled(self) -> bool:
        return self._registry_polled is not None

    def read_registry(self) -> None:
        """Read every pointer: the registry's claims become exactly the folders they name."""
        if not self.registry:
            return
        try:
            names = os.listdir(self.registry)
        except OSError:
            return
        # Many pointers name the same few folders: resolve each folder once.
        targets = {t for name in names if (t := self._pointer_target(name))}
        with self._lock:
            stale = [
                c for c in self._claims if c.source is Source.REGISTRY and c.named not in targets
            ]
        for claim in stale:
            self.withdraw(claim.source, claim.named)
        for target in sorted(targets):
            self.add(target, Source.REGISTRY)

    def read_pointer(self, path: str) -> None:
        """A pointer file changed: serve the folder it names."""
        if os.path.dirname(path) != self.registry:
            return
        target = self._pointer_target(os.path.basename(path))
        if target:
            self.add(target, Source.REGISTRY)

    def _pointer_target(self, name: str) -> str | None:
        if not name.endswith(POINTER_SUFFIX) or self.registry is None:
            return None
        content = read_pointer(os.path.join(self.registry, name))
        target = pointer_target_dir(content) if content is not None else None
        if target is None:
            return None
        target = os.path.abspath(target)
        return target if holds_sessions(target) else None
