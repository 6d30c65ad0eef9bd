"""The vocabulary of served folders: a `ServedFolder`, the `Source` that made it served, and
the `Discovery` settings that say which sources count (README, "What it serves"). The live set
of served folders, watched or polled, is `folders.FolderSet`."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from sessionctl.agent import env_sessions_dir, registry_dir


class Source(StrEnum):
    ENV = "env"  # $CODETETHER_DATA_DIR/sessions
    REGISTRY = "registry"  # named by a location pointer
    CONFIG = "config"  # --sessions-dir or the config file
    WORKSPACE = "workspace"  # asked about by a client


def folder_key(folder: str) -> str:
    """One spelling per folder, so a folder reached two ways is watched once."""
    return os.path.realpath(os.path.abspath(folder))


@dataclass
class ServedFolder:
    path: str
    sources: set[Source] = field(default_factory=set)
    watched: bool = False
    polled: bool = False  # unwatchable (inotify watches used up, or unreadable): polled


@dataclass(frozen=True)
class Discovery:
    """Where the configured and discovered folders come from at start."""

    configured: tuple[str, ...]
    discover: bool
    env: Mapping[str, str]

    def initial(self) -> list[tuple[str, Source]]:
        found = [(folder_key(d), Source.CONFIG) for d in self.configured]
        if self.discover:
            env_dir = env_sessions_dir(self.env)
            if env_dir:
                found.append((folder_key(env_dir), Source.ENV))
        return found

    @property
    def registry(self) -> str | None:
        if not self.discover:
            return None
        folder = registry_dir(self.env)
        return folder_key(folder) if folder else None


def sorted_folders(roots: Iterable[ServedFolder]) -> list[ServedFolder]:
    return sorted(roots, key=lambda r: r.path)
