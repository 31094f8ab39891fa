"""Completion and inspection in-process (``cellbox.child.editor``), through our own completer
and through jedi (skipped where jedi is not installed).

The jedi tests give jedi a generous budget: they check what jedi adds, not how fast a cold
jedi is; the budget itself is tested with a jedi call that blocks on an event.
"""

from __future__ import annotations

import asyncio
import builtins
import importlib.util
import os
import sys
import threading
import warnings
from typing import Any

import pytest

from cellbox.child import editor, jedi_bridge
from cellbox.protocol import channel as ch

HAVE_JEDI = importlib.util.find_spec("jedi") is not None


class Counter:
    """Counts every call that would be user code run by completion or inspection."""

    def __init__(self) -> None:
        self.calls: list[str] = []


COUNTER = Counter()


class Sneaky:
    """A class whose attributes run code when read."""

    plain = 1

    def __init__(self) -> None:
        self.field = {"inner": 1}

    @property
    def prop(self) -> int:
        """The prop's docstring."""
        COUNTER.calls.append("prop")
        return 1

    def __getattr__(self, name: str) -> Any:
        COUNTER.calls.append(f"getattr {name}")
        return 5

    def __getitem__(self, key: Any) -> Any:
        COUNTER.calls.append(f"getitem {key}")
        return 5

    def method(self, alpha: int, beta: int = 2, *, gamma: int = 3) -> None:
        """Do the method's thing."""

    def _private(self) -> None:
        pass


class LoudDict(dict):
    def __getitem__(self, key: Any) -> Any:
        COUNTER.calls.append(f"loud getitem {key}")
        return super().__getitem__(key)

    def keys(self) -> Any:  # an override we must not trust
        COUNTER.calls.append("loud keys")
        return super().keys()


def func(key1: int, key2: int = 3, *, kw: int = 4) -> int:
    """Add things up.

    A second paragraph.
    """
    return key1


@pytest.fixture
def ns() -> dict[str, Any]:
    COUNTER.calls.clear()
    return {
        "__builtins__": builtins,
        "__name__": "__main__",
        "asyncio": asyncio,
        "os": os,
        "sneaky": Sneaky(),
        "Sneaky": Sneaky,
        "func": func,
        "data": {"alpha": 1, "alpine": 2, "it's": 3, 42: "x", ("t",): 0},
        "raw": {b"bkey": 1, "skey": 2},
        "loud": LoudDict(alpha=1, beta=2),
        "my_variable": 1,
        "my_value": 2,
        "ünïcode_var": 3,
    }


@pytest.fixture(params=["own", pytest.param("jedi", marks=pytest.mark.skipif(not HAVE_JEDI, reason="jedi not installed"))])
def engine(request, monkeypatch) -> str:
    monkeypatch.setattr(editor, "USE_JEDI", request.param == "jedi")
    monkeypatch.delenv("CELLBOX_NO_JEDI", raising=False)
    return request.param


def complete(ns: dict[str, Any], code: str, cursor: int | None = None) -> tuple[list[str], int, int]:
    return editor.completions(ns, code, len(code) if cursor is None else cursor, budget=30)


def inspect_text(ns: dict[str, Any], code: str, cursor: int | None = None) -> str | None:
    return editor.inspection(ns, code, len(code) if cursor is None else cursor, budget=30)


# -- completion, both engines -------------------------------------------------------------------


@pytest.mark.parametrize(
    "code, expected, start",
    [
        ("pri", "print", 0),
        ("whi", "while", 0),  # keywords
        ("my_v", "my_variable", 0),
        ("x = my_va", "my_value", 4),
        ("sneaky.me", "method", 7),
        ("os.path.jo", "join", 8),
        ("await asyncio.sl", "sleep", 14),
        ("x = await asyncio.sl", "sleep", 18),
        ("import o", "os", 7),
        ("import sys, o", "os", 12),
        ("from os import pa", "path", 15),
        ("from os.pa", "path", 8),
        ("import xml.d", "dom", 11),
        ("from collections import (Ord", "OrderedDict", 25),
        ("func(ke", "key1=", 5),
        ("func(1, k", "kw=", 8),
        ("sneaky.method(1, ga", "gamma=", 17),
        ("x = 1\nif x:\n    os.pa", "path", 19),
        ("data[", "'alpha'", 5),
        ("data[4", "42", 5),
        ('data["al', '"alpha"', 5),
        ("data['al", "'alpha'", 5),
        ("raw[b'bk", "b'bkey'", 4),
        ("ünïc", "ünïcode_var", 0),
        ('"😀" + ünïc', "ünïcode_var", 6),
    ],
)
def test_completes(ns, engine, code, expected, start):
    matches, cursor_start, cursor_end = complete(ns, code)
    assert expected in matches
    assert (cursor_start, cursor_end) == (start, len(code))
    assert len(matches) == len(set(matches))


def test_attribute_of_nested_dict_value(ns, engine):
    matches, start, _ = complete(ns, "sneaky.field['in")
    assert matches == ["'inner'"] and start == 13


def test_chains_of_literal_subscripts(ns, engine):
    ns["nested"] = {"outer": {"inner": [{"deep": 1}]}, 7: ["x"]}
    assert complete(ns, 'nested["outer"]["in')[0] == ['"inner"']
    assert complete(ns, 'nested["outer"]["inner"][0]["d')[0] == ['"deep"']
    assert "upper" in complete(ns, "nested[7][0].up")[0]
    text = inspect_text(ns, 'nested["outer"]["inner"]')
    assert text is not None and "Type:      list" in text and "Length:    1" in text


def test_keys_of_os_environ_and_mappingproxy(ns, engine, monkeypatch):
    monkeypatch.setenv("CELLBOX_EDITOR_TEST_VAR", "1")
    assert complete(ns, "os.environ['CELLBOX_EDITOR_TEST_V")[0] == ["'CELLBOX_EDITOR_TEST_VAR'"]
    assert "'method'" in complete(ns, "Sneaky.__dict__['me")[0]


def test_empty_subscript_offers_only_keys(ns, engine):
    matches, start, _ = complete(ns, "data[")
    assert sorted(matches) == sorted(["'alpha'", "'alpine'", '"it\'s"', "42"]) and start == 5
    matches, _, _ = complete(ns, "data[my_")  # a name as the key
    assert {"my_variable", "my_value"} <= set(matches)


def test_quote_in_key_is_escaped(ns, engine):
    assert complete(ns, "data['it")[0] == ["'it\\'s'"]
    assert complete(ns, 'data["it')[0] == ['"it\'s"']


def test_closing_quote_after_cursor_is_replaced(ns, engine):
    code = 'data["al"]'
    matches, start, end = complete(ns, code, 8)
    assert '"alpha"' in matches and (start, end) == (5, 9)


def test_cursor_in_the_middle_of_the_code(ns, engine):
    code = "x = os.pa + 1\nprint(x)"
    matches, start, end = complete(ns, code, 9)
    assert "path" in matches and (start, end) == (7, 9)


def test_order_public_private_dunder(ns, engine):
    matches, _, _ = complete(ns, "sneaky.")
    assert {"method", "plain", "_private", "__init__"} <= set(matches)
    pos = {m: i for i, m in enumerate(matches)}
    assert pos["method"] < pos["_private"] < pos["__init__"]
    assert matches == sorted(matches, key=lambda m: (m.startswith("__"), m.startswith("_")))


def test_keyword_arguments_come_first(ns, engine):
    matches, _, _ = complete(ns, "func(k")
    assert matches[:3] == ["key1=", "key2=", "kw="]


def test_keyword_argument_already_given_is_not_offered_again_by_own(ns, monkeypatch):
    monkeypatch.setattr(editor, "USE_JEDI", False)
    matches, _, _ = complete(ns, "func(key1=1, k")
    assert "key1=" not in matches and "key2=" in matches


def test_matches_are_capped(ns, engine):
    ns.update({f"v{i}": i for i in range(500)})
    matches, _, _ = complete(ns, "v")
    assert len(matches) == editor.MAX_MATCHES
    assert len(set(matches)) == len(matches)


def test_nothing_in_a_comment(ns, engine):
    assert complete(ns, "x = 1  # os.pa")[0] == []


def test_clamped_cursor_and_empty_code(ns, engine):
    matches, start, end = complete(ns, "pri", 99)
    assert "print" in matches and (start, end) == (0, 3)
    matches, start, end = complete(ns, "", 0)
    assert "my_variable" in matches and (start, end) == (0, 0)


def test_names_defined_earlier_in_the_cell(ns, engine):
    matches, _, _ = complete(ns, "brand_new = 1\nbrand_")
    assert "brand_new" in matches


# -- safety: nothing with side effects runs -----------------------------------------------------


@pytest.mark.parametrize(
    "code",
    ["sneaky.", "sneaky.pr", "sneaky.prop.", "sneaky.zz.", "sneaky.zz", "sneaky[", "sneaky['",
     "loud[", "loud['", "loud['al", "func(sneaky.prop, ", "sneaky.prop.bit_"],
)
def test_completion_runs_no_user_code(ns, engine, code):
    complete(ns, code)
    assert COUNTER.calls == []


@pytest.mark.parametrize("code", ["sneaky.prop", "sneaky.zz", "sneaky", "sneaky.method", "loud", "sneaky.field"])
def test_inspection_runs_no_user_code(ns, engine, code):
    inspect_text(ns, code)
    assert COUNTER.calls == []


def test_real_dict_subclass_keys_are_read_without_its_overrides(ns, engine):
    matches, start, _ = complete(ns, "loud['al")
    assert matches == ["'alpha'"] and start == 5
    assert COUNTER.calls == []


def test_property_is_described_not_evaluated(ns, engine):
    text = inspect_text(ns, "sneaky.prop")
    assert text is not None
    assert "property" in text and "not evaluated" in text
    assert "The prop's docstring." in text
    assert "int" in text  # the getter's return annotation
    assert COUNTER.calls == []


# -- inspection ----------------------------------------------------------------------------------


def test_inspect_function(ns, engine):
    text = inspect_text(ns, "func")
    assert text is not None
    lines = text.splitlines()
    assert lines[0] == "Signature: func(key1: int, key2: int = 3, *, kw: int = 4) -> int"
    assert "Type:      function" in lines
    assert "Add things up." in text and "A second paragraph." in text
    assert any(line.startswith("File:") and __file__ in line for line in lines)


def test_inspect_inside_call_shows_the_callee(ns, engine):
    text = inspect_text(ns, "func(1, ")
    assert text is not None and text.startswith("Signature: func(")


def test_inspect_name_under_cursor_wins_inside_a_call(ns, engine):
    code = "func(my_variable)"
    text = inspect_text(ns, code, code.index("variable"))
    assert text is not None and "Type:      int" in text and "String form: 1" in text


def test_inspect_method_and_class(ns, engine):
    text = inspect_text(ns, "sneaky.method")
    assert text is not None
    assert text.startswith("Signature: method(alpha: int, beta: int = 2, *, gamma: int = 3) -> None")
    assert "Do the method's thing." in text
    text = inspect_text(ns, "Sneaky")
    assert text is not None and text.startswith("Init signature: Sneaky()")
    assert "A class whose attributes run code when read." in text


def test_inspect_instance_and_builtins(ns, engine):
    text = inspect_text(ns, "data")
    assert text is not None and "Type:      dict" in text and "Length:    5" in text
    text = inspect_text(ns, "len")
    assert text is not None and text.startswith("Signature: len(obj, /)")
    assert "Return the number of items" in text
    text = inspect_text(ns, "os.path")
    assert text is not None and "Type:      module" in text and "File:" in text


def test_inspect_at_cursor_in_the_middle_of_a_dotted_name(ns, engine):
    code = "os.path.join('a')"
    text = inspect_text(ns, code, 4)  # inside "path"
    assert text is not None and "Type:      module" in text


def test_inspect_unknown(ns, engine):
    assert inspect_text(ns, "no_such_name") is None
    assert inspect_text(ns, "") is None
    assert inspect_text(ns, "# func") is None


def test_messages_round_trip(ns, engine):
    reply = editor.complete(ns, ch.Complete(id=7, code="my_v", cursor=4))
    assert isinstance(reply, ch.CompleteReply) and reply.id == 7
    assert {"my_variable", "my_value"} <= set(reply.matches)
    assert (reply.cursor_start, reply.cursor_end) == (0, 4)
    reply = editor.inspect(ns, ch.Inspect(id=8, code="func", cursor=4))
    assert isinstance(reply, ch.InspectReply) and reply.found and reply.id == 8
    assert "Signature: func(" in reply.data["text/plain"]
    reply = editor.inspect(ns, ch.Inspect(id=9, code="nothing_here", cursor=3))
    assert reply == ch.InspectReply(id=9, found=False)


def test_warning_filters_are_left_as_they_were(ns, engine):
    before = list(warnings.filters)
    for code in ["sneaky.", "'\\d'.up", "from colorsys import rgb", "xs = [1]\nxs.app", "unknown.x"]:
        complete(ns, code)
        inspect_text(ns, code)
    assert warnings.filters == before


def test_never_raises(ns, engine):
    weird = {"__builtins__": 3, "x": object()}
    for code in ["x.", "x[", "import", "from . import", "(((", "'''", "x.__class__.", "\\", "func(**"]:
        editor.complete(weird, ch.Complete(id=1, code=code, cursor=len(code)))
        editor.inspect(weird, ch.Inspect(id=1, code=code, cursor=len(code)))
        editor.complete(ns, ch.Complete(id=1, code=code, cursor=len(code)))


# -- engine-specific ------------------------------------------------------------------------------


def test_own_completer_offers_nothing_it_cannot_resolve(ns, monkeypatch):
    monkeypatch.setattr(editor, "USE_JEDI", False)
    assert complete(ns, "func().x")[0] == []
    assert complete(ns, "unknown().x")[0] == []
    assert complete(ns, "sorted([3, 1])[0].app")[0] == []  # not the list [0]
    assert complete(ns, "func(1)(2).app")[0] == []
    assert complete(ns, "unknown.x")[0] == []
    assert complete(ns, "1e")[0] == []
    assert complete(ns, "open('/tm")[0] == []
    assert complete(ns, "sneaky.prop.")[0] == []


@pytest.mark.parametrize(
    "code, expected",
    [
        ("'abc'.up", "upper"),
        ("f'{my_variable}'.up", "upper"),
        ("b'x'.dec", "decode"),
        ("[1, 2].app", "append"),
        ("{'a': 1}.ite", "items"),
        ("import collections\ncollections.Counter().most", "most_common"),
        ("xs = [1]\nxs.app", "append"),
        ("c = Sneaky()\nc.me", "method"),
        ("func(1).bit_l", "bit_length"),  # the return annotation
    ],
)
def test_own_completes_literals_calls_and_cell_assignments(ns, monkeypatch, code, expected):
    monkeypatch.setattr(editor, "USE_JEDI", False)
    assert expected in complete(ns, code)[0]
    assert COUNTER.calls == []


def test_cell_assignment_of_a_call_is_not_inspected_as_the_class(ns, monkeypatch):
    monkeypatch.setattr(editor, "USE_JEDI", False)
    assert inspect_text(ns, "c = Sneaky()\nc") is None
    text = inspect_text(ns, "xs = [1, 2]\nxs")
    assert text is not None and "Length:    2" in text


def test_own_reads_names_of_a_module_not_yet_imported(ns, monkeypatch):
    monkeypatch.setattr(editor, "USE_JEDI", False)
    if "colorsys" in sys.modules:
        pytest.skip("colorsys already imported")
    matches, _, _ = complete(ns, "from colorsys import rgb_to_h")
    assert matches == ["rgb_to_hls", "rgb_to_hsv"]
    assert "colorsys" not in sys.modules  # read from its source, not imported


@pytest.mark.skipif(not HAVE_JEDI, reason="jedi not installed")
def test_jedi_adds_what_it_infers(ns, monkeypatch):
    monkeypatch.setattr(editor, "USE_JEDI", True)
    assert "upper" in complete(ns, "'abc'.up")[0]
    assert "append" in complete(ns, "xs = [1]\nxs.app")[0]
    text = inspect_text(ns, "xs = [1]\nxs.append")
    assert text is not None and "append" in text


def test_env_switch_disables_jedi(monkeypatch):
    monkeypatch.setattr(editor, "USE_JEDI", None)
    monkeypatch.setenv("CELLBOX_NO_JEDI", "1")
    assert not editor._jedi_enabled()
    monkeypatch.delenv("CELLBOX_NO_JEDI")
    assert editor._jedi_enabled() is True or jedi_bridge.failed()


def test_missing_jedi_falls_back(ns, monkeypatch):
    monkeypatch.setattr(editor, "USE_JEDI", None)
    monkeypatch.delenv("CELLBOX_NO_JEDI", raising=False)
    monkeypatch.setattr(jedi_bridge, "_jedi", None)
    monkeypatch.setattr(jedi_bridge, "_failed", False)
    monkeypatch.setitem(sys.modules, "jedi", None)  # "import jedi" raises ImportError
    assert complete(ns, "unknown_function(my_v")[0] == ["my_value", "my_variable"]  # jedi was asked
    assert jedi_bridge.failed() and not editor._jedi_enabled()
    assert complete(ns, "sneaky.me")[0] == ["method"]


def test_slow_jedi_is_abandoned_within_the_budget(ns, monkeypatch):
    monkeypatch.setattr(editor, "USE_JEDI", True)
    release = threading.Event()
    entered = threading.Event()

    def slow(*args: Any) -> Any:
        entered.set()
        release.wait(30)
        return ["from_slow_jedi"], 0

    monkeypatch.setattr(jedi_bridge, "_load", lambda: None)
    monkeypatch.setattr(jedi_bridge, "complete", slow)
    try:
        code = "unknown_function(my_v"  # the callee is unknown: jedi is asked
        matches, _, _ = editor.completions(ns, code, len(code), budget=0.05)
        assert matches == ["my_value", "my_variable"]  # ours alone
        assert entered.is_set() and jedi_bridge.busy()
        # while the late call runs, later requests do not wait for it or start another
        matches, _, _ = editor.completions(ns, code, len(code), budget=30)
        assert matches == ["my_value", "my_variable"]
    finally:
        release.set()
    assert jedi_bridge._busy.acquire(timeout=10)  # the late call finished and let go
    jedi_bridge._busy.release()


def test_jedi_is_asked_only_when_the_live_objects_cannot_answer(ns, monkeypatch):
    monkeypatch.setattr(editor, "USE_JEDI", True)
    monkeypatch.setattr(jedi_bridge, "_load", lambda: None)
    asked: list[str] = []

    def fake(namespace: Any, code: str, cursor: int, limit: int) -> Any:
        asked.append(code)
        return [], cursor

    monkeypatch.setattr(jedi_bridge, "complete", fake)
    exact = ["pri", "sneaky.me", "os.path.jo", "import o", "from os import pa", "func(ke", "data['al", "data[",
             "await asyncio.sl", "'abc'.up", "xs = [1]\nxs.app"]
    for code in exact:
        complete(ns, code)
    assert asked == []
    inferred = ["unknown.x", "unknown().x", "sneaky.prop.", "open('/tm", "g = lambda k: 1\ng(",
                "from colorsys import rgb"]
    for code in inferred:
        complete(ns, code)
    assert asked == inferred


def test_jedi_errors_fall_back(ns, monkeypatch):
    monkeypatch.setattr(editor, "USE_JEDI", True)
    monkeypatch.setattr(jedi_bridge, "_load", lambda: None)

    def broken(*args: Any) -> Any:
        raise RuntimeError("jedi bug")

    monkeypatch.setattr(jedi_bridge, "complete", broken)
    monkeypatch.setattr(jedi_bridge, "inspect", broken)
    assert complete(ns, "unknown_function(my_v")[0] == ["my_value", "my_variable"]
    assert inspect_text(ns, "unknown_thing") is None


@pytest.mark.parametrize("text", ["'it\\", '"a\\', "'''x\\", 'd["k\\'])
def test_text_ending_in_a_backslash_inside_a_string(text):
    from cellbox.child.scanner import scan

    assert scan(text).string is not None
    matches, start, end = editor.completions({"d": {"k": 1}}, text, len(text))
    assert start <= end == len(text)
