"""The conformance cases of ``cases.py`` against a live ``cellbox serve`` over NDJSON.

All cases share one server; after each case a ``ping`` with a fresh id marks where its reply
(or its silence) ends. Then the server must still serve a session whose state survived.
"""

import pytest

from tests.conformance.cases import CASES, matches


@pytest.fixture(scope="module")
def live():
    from tests.harness import Server

    server = Server()
    server.call("ping")  # lock the framing to NDJSON
    sid = server.create()
    server.eval(sid, "kept = 'yes'")
    yield server, sid
    assert server.close() == 0
    server.assert_no_leftovers()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(live, case):
    server, _ = live
    start = len(server.raw)
    marker = f"after-{case.name}"

    def replies():
        return [
            m
            for m in server.raw[start:]
            if not (isinstance(m, dict) and ("method" in m or m.get("id") == marker))
        ]

    server.write(case.body + b"\n")
    if case.expect is None:
        # Silence is checked against a later request: its answer comes, this one's never does.
        server.send("ping", id=marker)
        server.reply(marker)
    else:
        server.wait_for(replies)
    server.send("ping", id=marker + "-end")
    server.reply(marker + "-end")
    with server._lock:
        got = replies()
    got = [m for m in got if not (isinstance(m, dict) and m.get("id") == marker + "-end")]
    assert len(got) <= 1, got
    reply = got[0] if got else None
    assert matches(case.expect, reply), (case.raw, reply)


def test_state_survives_every_case(live):
    server, sid = live
    r = server.eval(sid, "kept")
    assert r["value"] is not None and r["value"]["repr"] == "'yes'", r
