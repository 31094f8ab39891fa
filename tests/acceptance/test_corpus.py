"""Run the acceptance corpus through one live server, one session per case."""

import pytest

from tests.acceptance.corpus import CASES


@pytest.fixture(scope="module")
def live():
    from tests.harness import Server

    server = Server("--kill-grace", "1")
    yield server
    assert server.close() == 0
    server.assert_no_leftovers()


def _check(result, expect, code):
    where = f"{code!r} -> {result}"
    if "status" in expect:
        assert result["status"] == expect["status"], where
    elif "error" not in expect:
        assert result["status"] == "ok", where
    if "value" in expect:
        got = result["value"]["repr"] if result["value"] else None
        assert got == expect["value"], where
    for stream in ("stdout", "stderr"):
        if stream in expect:
            assert result[stream] == expect[stream], where
    if "error" in expect:
        assert result["error"] and result["error"]["type"] == expect["error"], where
    if "message" in expect:
        assert expect["message"] in result["error"]["message"], where
    if "traceback" in expect:
        tb = result["error"]["traceback"]
        pos = 0
        for part in expect["traceback"]:
            found = tb.find(part, pos)
            assert found >= 0, f"{part!r} not in order in:\n{tb}"
            pos = found + len(part)
    for part in expect.get("not_traceback", []):
        assert part not in result["error"]["traceback"], result["error"]["traceback"]
    if "warnings" in expect:
        assert [w["name"] for w in result["warnings"]] == expect["warnings"], where
    for mime, data in expect.get("mime", {}).items():
        assert result["value"]["mime"][mime] == data, where


@pytest.mark.parametrize("name, steps", CASES, ids=[c[0] for c in CASES])
def test_case(live, name, steps):
    sid = live.create()
    try:
        for code, expect in steps:
            result = live.eval(sid, code, **expect.get("params", {}))
            _check(result, expect, code)
    finally:
        live.call("session/close", {"session": sid})
