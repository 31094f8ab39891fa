"""The conformance cases, run in-process: NDJSON framer, then Dispatcher, then a stand-in for
a fresh server (``ping`` answers ``{}``, session methods -32010: no session exists)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cellbox.protocol.errors import SessionNotFound
from cellbox.protocol.framing import NdjsonFramer
from cellbox.protocol.jsonrpc import (
    Batch,
    Dispatcher,
    Notification,
    Request,
    encode_batch,
    encode_error,
    encode_result,
)
from tests.conformance.cases import CASES, Case, matches

_dispatcher = Dispatcher()


def _serve(item: Any, allow_server: bool) -> bytes | None:
    # What a fresh server sends for one decoded item.
    if item is None or isinstance(item, Notification):
        return None
    if isinstance(item, bytes):
        return item
    if isinstance(item, Request):
        if item.method == "ping":
            return encode_result(item.raw_id, {})
        assert allow_server, f"{item.method} reached the server in a codec-only case"
        assert hasattr(item.params, "session"), item
        return encode_error(item.raw_id, SessionNotFound())
    assert isinstance(item, Batch)
    bodies = [body for x in item.items if (body := _serve(x, allow_server)) is not None]
    return encode_batch(bodies) if bodies else None


def run(case: Case) -> Any:
    """The decoded reply to ``case`` (None when nothing is sent), as the live runner sees it."""
    framer = NdjsonFramer()
    bodies = framer.feed(case.body + b"\n") + framer.close()
    assert len(bodies) == 1 and isinstance(bodies[0], bytes), bodies
    reply = _serve(_dispatcher.receive(bodies[0]), case.reply_from_server)
    if reply is None:
        return None
    assert b"\n" not in reply
    return json.loads(reply)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case: Case):
    reply = run(case)
    assert matches(case.expect, reply), f"{case.name}: got {reply!r}, expected {case.expect!r}"


def test_cases_are_well_formed():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))
    for case in CASES:
        assert b"\n" not in case.body and b"\r" not in case.body, case.name


def test_matches_is_strict_where_it_matters():
    assert matches({"id": 1, "result": {}}, {"jsonrpc": "2.0", "id": 1, "result": {}})
    assert matches({"id": 1}, {"jsonrpc": "2.0", "id": 1, "result": {"extra": 1}})
    assert not matches({"id": 1}, {"jsonrpc": "2.0", "id": 1.0})
    assert not matches({"id": 1}, {"jsonrpc": "2.0", "id": True})
    assert not matches({"id": "1"}, {"jsonrpc": "2.0", "id": 1})
    assert not matches({"id": None}, {"id": None})  # no "jsonrpc"
    assert not matches({"id": 1}, None)
    assert not matches(None, {"jsonrpc": "2.0", "id": 1})
    assert not matches({"error": {"code": -32600}}, [{"jsonrpc": "2.0", "error": {"code": -32600}}])
    a, b = {"jsonrpc": "2.0", "id": 1}, {"jsonrpc": "2.0", "id": 2}
    assert matches([{"id": 1}, {"id": 2}], [b, a])
    assert not matches([{"id": 1}, {"id": 1}], [b, a])
    assert not matches([{"id": 1}], [a, b])
    assert matches(lambda r: r is None, None)
