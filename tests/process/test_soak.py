"""Soak: 100 sessions at once; a third interrupted, a tenth killed by their own code; every
request answered, survivors keep their variables, nothing left after shutdown."""

import pytest


@pytest.mark.timeout(180)
def test_hundred_sessions(make_server):
    s = make_server("--kill-grace", "1")
    ids = [s.send("session/create", {"name": f"s{i}"}) for i in range(100)]
    sessions = [s.reply(i, timeout=60)["result"]["session"] for i in ids]
    assert len(set(sessions)) == 100

    first = [s.send("session/eval", {"session": sid, "code": f"v = {i}"}) for i, sid in enumerate(sessions)]
    for rid in first:
        assert s.reply(rid, timeout=60)["result"]["status"] == "ok"

    interrupted = sessions[:33]
    killed = sessions[33:43]
    calm = sessions[43:]
    slow = {sid: s.send("session/eval", {"session": sid, "code": "import time\nprint('READY', flush=True)\ntime.sleep(60)"}) for sid in interrupted}
    dying = {sid: s.send("session/eval", {"session": sid, "code": "import os\nos._exit(7)"}) for sid in killed}
    busy = {sid: s.send("session/eval", {"session": sid, "code": "sum(range(1000)) + v"}) for sid in calm}

    for sid, rid in slow.items():
        s.wait_output(rid, "READY", timeout=60)
        s.send("session/interrupt", {"session": sid})
    for sid, rid in slow.items():
        r = s.reply(rid, timeout=60)["result"]
        assert r["status"] == "interrupted" and r["stateLost"] is False
    for sid, rid in dying.items():
        r = s.reply(rid, timeout=60)["result"]
        assert (r["status"], r["cause"], r["stateLost"]) == ("killed", "exit 7", True)
    for i, (sid, rid) in enumerate(busy.items()):
        assert s.reply(rid, timeout=60)["result"]["value"]["repr"] == str(499500 + 43 + i)

    checks = {sid: s.send("session/eval", {"session": sid, "code": "v"}) for sid in sessions}
    for i, sid in enumerate(sessions):
        r = s.reply(checks[sid], timeout=60)["result"]
        if sid in killed:
            assert r["error"]["type"] == "NameError"
        else:
            assert r["value"]["repr"] == str(i)

    stats = s.call("server/stats")
    assert stats["sessions"]["open"] == 100
    assert stats["kills"]["exit 7"] == 10 and stats["evals"]["interrupted"] == 33
    assert s.close(timeout=60) == 0
    s.assert_no_leftovers(timeout=15)
