"""The boundaries of docs/architecture.md, read from the source: no import cycles, and each part
imports only what it may (the client never the daemon, the index no watcher, socket or S3)."""

from __future__ import annotations

import ast

import pytest

from tests.support.import_graph import cycles, module_imports, module_paths

GRAPH = module_imports()


def imported_parts(package: str) -> set[str]:
    """The top two levels (`sessiond.sink`, `sessionctl.agent`) of what `package` imports."""
    return {
        ".".join(target.split(".")[:2])
        for name, targets in GRAPH.items()
        if name == package or name.startswith(package + ".")
        for target in targets
        if not (target == package or target.startswith(package + "."))
    }


def test_the_graph_is_read() -> None:
    assert len(GRAPH) > 90
    assert "sessiond.sink.s3" in GRAPH["sessiond.remote.catalog"]


def test_no_module_imports_itself_through_others() -> None:
    assert cycles(GRAPH) == []


def test_a_cycle_would_be_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_the_client_never_imports_the_daemon() -> None:
    assert {part for part in imported_parts("sessionctl") if part.startswith("sessiond")} == set()


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("sessiond.index", {"watch", "server", "sink", "remote", "search", "systemd", "app"}),
        ("sessiond.sink", {"server", "watch", "search", "systemd", "app"}),
        ("sessiond.sinkwiring", {"server", "watch", "search", "systemd", "app"}),
        ("sessiond.search", {"server", "watch", "sink", "remote", "systemd", "app"}),
        ("sessiond.logs", {"systemd", "logsetup", "config", "app"}),
    ],
)
def test_a_part_imports_only_what_it_may(package: str, forbidden: set[str]) -> None:
    reached = {part.removeprefix("sessiond.") for part in imported_parts(package)}
    assert reached & forbidden == set()


def test_logs_imports_nothing_of_sessiond_and_systemd_only_logs() -> None:
    assert imported_parts("sessiond.logs") == set()
    assert imported_parts("sessiond.systemd") == {"sessiond.logs"}


def test_the_protocol_module_does_no_io() -> None:
    tree = ast.parse(module_paths()["sessionctl.protocol"].read_text())
    stdlib = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 0
    }
    assert (
        stdlib & {"socket", "_socket", "select", "asyncio", "threading", "subprocess", "io"}
        == set()
    )
