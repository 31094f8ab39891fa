"""Values (repr cap, type, MIME bundle) and the display() builtin."""

from __future__ import annotations

import base64

from cellbox.child import richrepr
from tests.unit.executor_harness import h  # noqa: F401 - fixture

RICH = """
class Rich:
    def _repr_html_(self):
        return '<b>rich</b>'
    def _repr_markdown_(self):
        return '**rich**'
    def _repr_latex_(self):
        return r'$r$'
    def _repr_svg_(self):
        return '<svg/>'
    def _repr_json_(self):
        return {'k': [1, 2]}
    def _repr_png_(self):
        return b'\\x89PNG'
    def _repr_jpeg_(self):
        return None
    def __repr__(self):
        return 'Rich()'
"""


def test_plain_value(h):
    done = h.ok("'text'")
    assert done.value.repr == "'text'"
    assert done.value.type == "str"
    assert done.value.mime == {"text/plain": "'text'"}


def test_all_repr_methods(h):
    h.ok(RICH)
    mime = h.ok("Rich()").value.mime
    assert mime["text/plain"] == "Rich()"
    assert mime["text/html"] == "<b>rich</b>"
    assert mime["text/markdown"] == "**rich**"
    assert mime["text/latex"] == "$r$"
    assert mime["image/svg+xml"] == "<svg/>"
    assert mime["application/json"] == {"k": [1, 2]}
    assert base64.b64decode(mime["image/png"]) == b"\x89PNG"
    assert "image/jpeg" not in mime


def test_never_on_classes(h):
    h.ok(RICH)
    done = h.ok("Rich")
    assert set(done.value.mime) == {"text/plain"}


def test_mimebundle_dict(h):
    h.ok("class B:\n    def _repr_mimebundle_(self, include=None, exclude=None):\n"
         "        return {'text/html': '<i>b</i>', 'application/x-custom': 'c'}")
    mime = h.ok("B()").value.mime
    assert mime["text/html"] == "<i>b</i>"
    assert mime["application/x-custom"] == "c"


def test_mimebundle_tuple_with_metadata_for_display(h):
    h.ok("class B:\n    def _repr_mimebundle_(self, include=None, exclude=None):\n"
         "        return ({'image/png': b'png'}, {'image/png': {'width': 10}})")
    h.ok("display(B())")
    d = h.displays[-1]
    assert base64.b64decode(d.data["image/png"]) == b"png"
    assert d.metadata == {"image/png": {"width": 10}}


def test_repr_method_returning_data_and_metadata(h):
    h.ok("class T:\n    def _repr_html_(self):\n        return '<p/>', {'isolated': True}")
    assert h.ok("T()").value.mime["text/html"] == "<p/>"


def test_raising_repr_method_is_skipped_with_note(h):
    h.ok("class R:\n    def _repr_html_(self):\n        raise ValueError('html broke')\n"
         "    def _repr_markdown_(self):\n        return 'md'")
    done = h.ok("R()")
    assert "text/html" not in done.value.mime
    assert done.value.mime["text/markdown"] == "md"
    assert "_repr_html_() raised ValueError: html broke" in h.text("stderr")


def test_wrong_type_from_repr_method_is_skipped(h):
    h.ok("class W:\n    def _repr_html_(self):\n        return 42")
    assert "text/html" not in h.ok("W()").value.mime
    assert "returned int" in h.text("stderr")


def test_non_json_result_is_skipped(h):
    h.ok("class J:\n    def _repr_json_(self):\n        return {'k': object()}")
    assert "application/json" not in h.ok("J()").value.mime
    assert "not JSON-serializable" in h.text("stderr")


def test_objects_claiming_every_attribute_are_not_asked(h):
    h.ok("class Proxy:\n    def __getattr__(self, name):\n        return lambda *a, **k: '<x/>'\n"
         "    def __repr__(self):\n        return 'Proxy'")
    assert h.ok("Proxy()").value.mime == {"text/plain": "Proxy"}


def test_non_callable_repr_attribute_ignored(h):
    h.ok("class N:\n    _repr_html_ = 'not callable'")
    assert set(h.ok("N()").value.mime) == {"text/plain"}


def test_repr_capped_with_marker(h):
    done = h.ok("'x' * 10_000", repr_limit=100)
    assert done.value.repr.startswith("'xxx")
    assert "[truncated: " in done.value.repr
    assert len(done.value.repr.encode()) < 200
    assert done.value.mime["text/plain"] == done.value.repr


def test_repr_under_limit_untouched(h):
    assert h.ok("'abc'", repr_limit=5).value.repr == "'abc'"


def test_cap_never_splits_characters():
    text = "é" * 100
    capped = richrepr.cap(text, 51)
    capped.encode("utf-8")
    assert capped.startswith("é" * 25 + "...")
    assert "more bytes" in capped


def test_display_builtin(h):
    h.ok(RICH + "display(Rich(), 5)")
    first, second = h.displays
    assert first.data["text/html"] == "<b>rich</b>"
    assert second.data == {"text/plain": "5"}


def test_display_returns_none_and_no_value(h):
    assert h.ok("display('x')").value is None


def test_display_raw_and_metadata(h):
    h.ok("display({'text/html': '<p>raw</p>', 'image/png': b'ab'}, raw=True, "
         "metadata={'source': 'test'})")
    d = h.displays[-1]
    assert d.data["text/html"] == "<p>raw</p>"
    assert base64.b64decode(d.data["image/png"]) == b"ab"
    assert d.metadata == {"source": "test"}


def test_display_ignores_ipython_only_options(h):
    h.ok("display(1, display_id='abc')")
    assert h.displays[-1].data == {"text/plain": "1"}


def test_display_of_class_is_plain(h):
    h.ok(RICH + "display(Rich)")
    assert set(h.displays[-1].data) == {"text/plain"}


def test_display_in_awaiting_cell(h):
    h.ok("import asyncio\nawait asyncio.sleep(0)\ndisplay([1, 2])")
    assert h.displays[-1].data == {"text/plain": "[1, 2]"}


def test_display_from_imported_builtins(h):
    h.ok("import builtins\nbuiltins.display('b')")
    assert h.displays[-1].data == {"text/plain": "'b'"}


def test_value_of_awaited_rich_object(h):
    h.ok(RICH + "import asyncio\nasync def make():\n    await asyncio.sleep(0)\n    return Rich()")
    done = h.ok("await make()")
    assert done.value.type == "Rich"
    assert done.value.mime["text/html"] == "<b>rich</b>"


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(st.text(), st.integers(min_value=0, max_value=200))
def test_cap_property(text, limit):
    capped = richrepr.cap(text, limit)
    data = capped.encode("utf-8")  # always valid UTF-8
    full = text.encode("utf-8", "backslashreplace")
    if len(full) <= limit:
        assert capped == full.decode("utf-8")
    else:
        kept, _, marker = capped.rpartition("... [truncated: ")
        assert len(kept.encode("utf-8")) <= limit
        assert full.decode("utf-8").startswith(kept)
        assert marker.endswith(" more bytes]")
        assert len(data) < limit + 60
