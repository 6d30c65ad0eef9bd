"""The decode pool decodes in worker processes exactly what the daemon decodes in-process."""

from __future__ import annotations

import json
import random

from sessiond.index.decode_pool import DecodePool
from sessiond.index.loader import Outcome, read_and_decode

from tests.support.agent_sim import add_turn, compact, new_session


def test_pool_results_equal_in_process_results(tmp_path) -> None:
    jobs = []
    for i in range(12):
        session = new_session(f"/w/{i % 3}", title=f"t{i}")
        for _ in range(i % 4):
            add_turn(session, random.Random(i), 50)
        path = tmp_path / f"{session['id']}.json"
        path.write_bytes(compact(session) if i % 5 else json.dumps(session, indent=2).encode())
        jobs.append(str(path))
    (tmp_path / "bad.json").write_bytes(b'{"id": "torn')
    jobs += [str(tmp_path / "bad.json"), str(tmp_path / "gone.json")]

    pool = DecodePool(workers=2, min_files=1)
    try:
        pooled = pool.decode_all(jobs)
    finally:
        pool.close()
    local = [read_and_decode(path) for path in jobs]
    assert [p.outcome for p in pooled] == [loc.outcome for loc in local]
    assert pooled[-2].outcome is Outcome.INVALID and pooled[-2].version is not None
    assert pooled[-1].outcome is Outcome.MISSING
    for p, loc in zip(pooled, local, strict=True):
        if p.record is not None:
            assert p.record.header() == loc.record.header()
            assert p.record.workspaces == loc.record.workspaces
    # Repeated strings are shared again after unpickling.
    same_dir = [p.record for p in pooled[:12] if p.record.directory == "/w/0"]
    assert same_dir[0].directory is same_dir[1].directory
    assert same_dir[0].workspaces is same_dir[1].workspaces
