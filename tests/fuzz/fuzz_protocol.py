"""An atheris (libFuzzer) harness for the request decoder: framing, JSON, request checks.

Run by tests/robust/test_fuzz.py for a bounded number of inputs; by hand for longer:
    .venv/bin/python tests/fuzz/fuzz_protocol.py -runs=1000000 -max_len=4096

Each input is cut into chunks fed to a LineSplitter with a small limit (so oversized lines
happen); each line goes through the daemon's decoding (msgspec) and `decode_request`. Only the
errors the protocol defines may come out, and the lines must be exactly those of a plain model
of the framing.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    import msgspec
    from sessionctl import protocol


def model_lines(stream: bytes, limit: int) -> tuple[list[bytes], bool]:
    """The lines a splitter with `limit` must give for `stream`, and whether it overflows."""
    *complete, tail = stream.split(b"\n")
    lines = []
    for line in complete:
        if len(line) > limit:
            return lines, True
        lines.append(line)
    return lines, len(tail) > limit


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    limit = fdp.ConsumeIntInRange(0, 48)
    chunks = []
    while fdp.remaining_bytes():
        chunks.append(fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 40)))
    splitter = protocol.LineSplitter(limit=limit)
    lines: list[bytes] = []
    refused = False
    for chunk in chunks:
        try:
            lines += splitter.feed(chunk)
        except protocol.LineTooLarge:
            refused = True
            break
    expected, too_large = model_lines(b"".join(chunks), limit)
    assert lines == expected[: len(lines)], (lines, expected)
    if not refused:
        assert lines == expected and splitter.too_large == too_large
    for line in lines:
        try:
            obj = msgspec.json.decode(line)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            continue
        req = protocol.peek_req(obj)
        try:
            request = protocol.decode_request(obj)
        except protocol.ProtocolError as exc:
            assert exc.code is protocol.ErrorCode.BAD_REQUEST and exc.message
            msgspec.json.encode(protocol.error_response(exc.code, exc.message, req=req))
            continue
        assert type(request) is protocol.OPS[obj["op"]]


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
