"""Matplotlib figures as displays: the session's backend, like Jupyter's inline backend.

Theory of operation: ``install(emit)`` puts a one-shot import hook on ``sys.meta_path``; when
user code first imports ``matplotlib``, the hook makes ``cellbox.child.mplbackend`` the default
backend, unless the user chose one (``MPLBACKEND`` or a ``matplotlibrc``). Nothing is set in the
environment, so subprocesses are not affected, and matplotlib is never imported by cellbox
itself. ``plt.show()`` sends every open figure as an ``image/png`` display and closes it;
``flush()``, called by the host when a cell ends, does the same for figures the cell left open.
Rendering uses Agg, so no display server is needed.
"""

from __future__ import annotations

import base64
import importlib.abc
import importlib.util
import io
import os
import sys
from collections.abc import Callable
from typing import Any

BACKEND = "module://cellbox.child.mplbackend"

_emit: Callable[[dict[str, Any]], None] | None = None


def install(emit: Callable[[dict[str, Any]], None]) -> None:
    """Send figures through ``emit`` (a MIME bundle each) and arm the import hook."""
    global _emit
    _emit = emit
    if "matplotlib" in sys.modules:
        _choose_backend(sys.modules["matplotlib"])
    elif not any(isinstance(f, _Hook) for f in sys.meta_path):
        sys.meta_path.insert(0, _Hook())


class _Hook(importlib.abc.MetaPathFinder):
    """Runs ``_choose_backend`` right after ``matplotlib`` is imported, once."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "matplotlib":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_choose(module: Any) -> None:
            exec_module(module)
            _choose_backend(module)

        spec.loader.exec_module = exec_then_choose  # type: ignore[method-assign]
        return spec


def _choose_backend(matplotlib: Any) -> None:
    if os.environ.get("MPLBACKEND"):
        return
    # The raw value: a string if a matplotlibrc chose a backend, a sentinel if none did.
    if not isinstance(dict.get(matplotlib.rcParams, "backend"), str):
        matplotlib.rcParams["backend"] = BACKEND


def flush() -> None:
    """Send the figures that are open in pyplot, then close them (no-op without pyplot)."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None or _emit is None or pyplot.get_backend() != BACKEND:
        return
    for num in pyplot.get_fignums():
        figure = pyplot.figure(num)
        try:
            _emit(_bundle(figure))
        except Exception as exc:  # a figure that cannot render must not break the session
            _emit({"text/plain": f"<figure {num} could not be rendered: {type(exc).__name__}: {exc}>"})
    pyplot.close("all")


def _bundle(figure: Any) -> dict[str, Any]:
    buf = io.BytesIO()
    figure.savefig(buf, format="png", bbox_inches="tight")
    return {
        "image/png": base64.b64encode(buf.getvalue()).decode("ascii"),
        "text/plain": repr(figure),
    }
