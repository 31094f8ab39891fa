"""Values as the client sees them: ``repr`` (capped), type name and a MIME bundle.

The bundle always has ``text/plain`` (the capped repr). For instances (never classes: IPython's
rule, since ``Foo._repr_html_`` is an unbound function) it adds what ``_repr_mimebundle_``
and the ``_repr_<format>_`` methods return; a method returning ``None`` is skipped, a
``(data, metadata)`` pair gives data and metadata, ``bytes`` become base64 text, and a method
that raises (an ``Exception``) or returns something unusable is skipped with a note on stderr.
Objects that claim every attribute (proxies, mocks) are not asked. ``repr()`` itself raising
is the caller's business: the executor reports it as the cell's error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cellbox.child.capture import clean
from cellbox.protocol.messages import Display, Value

Note = Callable[[str], None]

#: (mime type, method), in IPython's order
REPR_METHODS = (
    ("text/html", "_repr_html_"),
    ("text/markdown", "_repr_markdown_"),
    ("text/latex", "_repr_latex_"),
    ("image/svg+xml", "_repr_svg_"),
    ("image/png", "_repr_png_"),
    ("image/jpeg", "_repr_jpeg_"),
    ("application/json", "_repr_json_"),
)
_CANARY = "_cellbox_canary_method_should_not_exist_"
_PLAIN = frozenset({int, float, complex, bool, str, bytes, bytearray, list, tuple, dict, set,
                    frozenset, range, type(None), type(Ellipsis), slice})


def cap(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, plus a marker saying how much was cut."""
    text = clean(text)
    if len(text) * 4 <= limit:
        return text
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    kept = data[:limit].decode("utf-8", "ignore")
    return f"{kept}... [truncated: {len(data) - len(kept.encode('utf-8'))} more bytes]"


def to_value(obj: Any, limit: int, note: Note) -> Value:
    """The ``Value`` of a cell result (``repr`` may raise: the caller reports it)."""
    text = cap(repr(obj), limit)
    mime: dict[str, Any] = {"text/plain": text}
    if type(obj) not in _PLAIN and not isinstance(obj, type):
        data, _ = _rich(obj, note)
        mime.update(data)
    return Value(repr=text, type=type(obj).__name__, mime=mime)


def bundle(obj: Any, limit: int, note: Note) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(data, metadata)`` for ``display(obj)``."""
    data: dict[str, Any] = {"text/plain": cap(repr(obj), limit)}
    metadata: dict[str, Any] = {}
    if type(obj) not in _PLAIN and not isinstance(obj, type):
        rich, metadata = _rich(obj, note)
        data.update(rich)
    return data, metadata


def _method(obj: Any, name: str) -> Callable[..., Any] | None:
    try:
        method = getattr(obj, name, None)
    except Exception:
        return None
    return method if callable(method) else None


def _rich(obj: Any, note: Note) -> tuple[dict[str, Any], dict[str, Any]]:
    found = [(mime, m) for mime, name in REPR_METHODS if (m := _method(obj, name)) is not None]
    mimebundle = _method(obj, "_repr_mimebundle_")
    if not found and mimebundle is None:
        return {}, {}
    if _method(obj, _CANARY) is not None:
        return {}, {}
    data: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    kind = type(obj).__name__
    for mime, method in found:
        try:
            result = method()
        except Exception as exc:
            note(f"{kind}.{method.__name__}() raised {type(exc).__name__}: {exc}; skipped")
            continue
        if isinstance(result, tuple) and len(result) == 2:
            result, md = result
            if isinstance(md, dict):
                metadata[mime] = md
        value = _mime_value(result, note, f"{kind}.{method.__name__}()")
        if value is not None:
            data[mime] = value
    if mimebundle is not None:
        try:
            result = mimebundle(include=None, exclude=None)
        except Exception as exc:
            note(f"{kind}._repr_mimebundle_() raised {type(exc).__name__}: {exc}; skipped")
            result = None
        md: Any = {}
        if isinstance(result, tuple) and len(result) == 2:
            result, md = result
        if isinstance(result, dict):
            for mime, raw in result.items():
                value = _mime_value(raw, note, f"{kind}._repr_mimebundle_()[{mime!r}]")
                if value is not None and isinstance(mime, str):
                    data[mime] = value
            if isinstance(md, dict):
                metadata.update(md)
        elif result is not None:
            note(f"{kind}._repr_mimebundle_() returned {type(result).__name__}, not a dict; "
                 "skipped")
    return data, _jsonable(metadata, note, "metadata") or {}


def _mime_value(value: Any, note: Note, where: str) -> Any:
    if value is None:
        return None
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        import base64

        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (dict, list)):
        return _jsonable(value, note, where)
    note(f"{where} returned {type(value).__name__}; skipped")
    return None


def _jsonable(value: Any, note: Note, where: str) -> Any:
    import msgspec

    try:
        msgspec.json.encode(value)
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
        note(f"{where} is not JSON-serializable ({exc}); skipped")
        return None
    return value


def make_display(emit: Callable[[Display], None], flush: Callable[[], None],
                 limit: Callable[[], int], note: Note) -> Callable[..., None]:
    """The ``display`` builtin: sends each object as one display event, after flushing the
    output writers so the event lands after what was printed before it."""

    def display(*objs: Any, raw: bool = False, metadata: dict[str, Any] | None = None,
                **_ignored: Any) -> None:
        """Show objects as rich output (like IPython's ``display``).

        ``raw=True``: each object is already a ``{mime: data}`` dict. ``metadata`` is added to
        every event. Other IPython options (``display_id``, ...) are accepted and ignored.
        """
        flush()
        for obj in objs:
            if raw:
                if not isinstance(obj, dict):
                    raise TypeError(f"display(raw=True) needs a dict, got {type(obj).__name__}")
                data = {str(k): v for k, v in obj.items()}
                data = {k: v for k, v in ((k, _mime_value(v, note, f"display()[{k!r}]"))
                                          for k, v in data.items()) if v is not None}
                md: dict[str, Any] = {}
            else:
                data, md = bundle(obj, limit(), note)
            if metadata:
                md = {**md, **metadata}
            md = _jsonable(md, note, "display metadata") or {}
            emit(Display(data=data, metadata=md))

    return display
