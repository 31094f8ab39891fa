"""``session/isComplete``: is this multi-line input ready to run, like a REPL decides."""

from __future__ import annotations

import ast
import codeop
import warnings

_compiler = codeop.CommandCompiler()
_compiler.compiler.flags |= ast.PyCF_ALLOW_TOP_LEVEL_AWAIT


def is_complete(code: str) -> tuple[str, str]:
    """``("complete" | "incomplete" | "invalid", indent)`` for ``code``.

    ``indent`` is the indentation a console should offer on the next line when incomplete.
    A block opener (``if x:``) is incomplete until a blank line ends it, as in the REPL.
    """
    if not code.strip():
        return "complete", ""
    lines = code.splitlines()
    last = lines[-1] if lines else ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compiled = _compiler(code, "<input>", "exec")
    except SyntaxError as exc:
        # "1 +" or "x = ": the statement stops mid-expression at the end of the input, which a
        # console should treat as "keep typing" rather than an error.
        at_end = exc.lineno == len(lines) and (exc.offset or 0) > len(last.rstrip())
        if at_end and exc.msg == "invalid syntax" and not code.endswith("\n"):
            return "incomplete", _indent_after(lines)
        return "invalid", ""
    except (ValueError, OverflowError):
        return "invalid", ""
    if compiled is None:
        return "incomplete", _indent_after(lines)
    # A compound statement stays open until an empty line (what the REPL does).
    if len(lines) > 1 and last.strip() and lines[0].rstrip().endswith(":") and not code.endswith("\n"):
        return "incomplete", _indent_after(lines)
    if last[:1].isspace() and last.strip() and not code.endswith("\n"):
        return "incomplete", _indent_after(lines)
    return "complete", ""


def _indent_after(lines: list[str]) -> str:
    last = next((ln for ln in reversed(lines) if ln.strip()), "")
    indent = last[: len(last) - len(last.lstrip())]
    if last.rstrip().endswith(":"):
        indent += "    "
    return indent
