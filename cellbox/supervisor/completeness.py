"""``session/isComplete``: is this multi-line input ready to run, like a REPL decides."""

from __future__ import annotations

import ast
import codeop
import io
import re
import tokenize
import warnings

_compiler = codeop.CommandCompiler()
_compiler.compiler.flags |= ast.PyCF_ALLOW_TOP_LEVEL_AWAIT

_DEDENTERS = re.compile(r"(?:return|pass|break|continue|raise)\b")


def is_complete(code: str) -> tuple[str, str]:
    """``("complete" | "incomplete" | "invalid", indent)`` for ``code``.

    Rules, in order:

    - empty or blank input is complete;
    - input the compiler accepts is complete, unless its last logical line is inside a block
      and the input does not end with ``"\\n"`` (a block stays open until a blank line, as
      in the REPL; a final ``"\\n"`` is that blank line; a statement back at column 0 also
      ends it);
    - input the compiler could still accept with more lines (an open bracket, string or
      block header, a ``\\`` continuation, a decorator) is incomplete, even after a blank
      line (``"if x:\\n\\n"`` waits for its block, as in IPython);
    - a syntax error at the very end of the input (``1 +``, ``x =``, ``from os import``) is
      incomplete while the input does not end with ``"\\n"``; any other error is invalid
      (the code runs as it is sent, so a first line that is indented is invalid, as in the
      executor).

    ``indent`` is what a console should put at the start of the next line when incomplete:
    the indentation of the last logical line, one level more after a line ending with ``:``
    (a tab if the indentation ends with one, else four spaces), one level
    less after ``return``, ``pass``, ``break``, ``continue`` or ``raise``. It is ``""``
    when the input is complete or invalid.
    """
    if not code.strip():
        return "complete", ""
    lines = code.splitlines()
    last = lines[-1] if lines else ""
    ends_with_blank = code.endswith(("\n", "\r"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compiled = _compiler(code, "<input>", "exec")
    except SyntaxError as exc:
        if not ends_with_blank and _at_end(code, exc):
            return "incomplete", _indent_after(lines, code)
        return "invalid", ""
    except (ValueError, OverflowError):  # null bytes, huge literals
        return "invalid", ""
    if compiled is None:
        return "incomplete", _indent_after(lines, code)
    if last.strip() and not ends_with_blank and _in_block(code):
        return "incomplete", _indent_after(lines, code)
    return "complete", ""


def _in_block(code: str) -> bool:
    """True iff the last logical line of ``code`` (which tokenizes) is indented: inside a block."""
    found = _last_logical_line(code)
    return found is not None and found[1] > 0


def _last_logical_line(code: str) -> tuple[int, int] | None:
    """``(row, depth)``: where the last logical line starts (1-based) and its block depth;
    None if ``code`` does not tokenize (an open bracket or string)."""
    depth = 0
    at_start = True
    last = (0, 0)
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type == tokenize.INDENT:
                depth += 1
            elif tok.type == tokenize.DEDENT:
                depth -= 1
            elif tok.type == tokenize.NEWLINE:
                at_start = True
            elif tok.type not in (tokenize.NL, tokenize.COMMENT, tokenize.ENDMARKER):
                if at_start:
                    last = (tok.start[0], depth)
                at_start = False
    except (tokenize.TokenError, SyntaxError):
        return None
    return last if last[0] else None


def _at_end(code: str, exc: SyntaxError) -> bool:
    """True iff the error is reported at or after the end of the last token (comments and
    whitespace excepted): the statement stops short, more text could complete it."""
    if exc.lineno is None or exc.offset is None or "f-string" in exc.msg:
        return False
    end = (0, 0)
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                                tokenize.DEDENT, tokenize.ENDMARKER):
                end = tok.end
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return False
    return (exc.lineno, exc.offset - 1) >= end


def _indent_after(lines: list[str], code: str) -> str:
    last = next((ln for ln in reversed(lines) if ln.strip()), "")
    found = _last_logical_line(code)
    first = lines[found[0] - 1] if found is not None and found[0] <= len(lines) else last
    indent = first[: len(first) - len(first.lstrip())]
    step = "\t" if indent.endswith("\t") else "    "
    text = last.strip()
    if text.endswith(":") or text.split("#", 1)[0].rstrip().endswith(":"):
        indent += step
    elif _DEDENTERS.match(text):
        indent = indent[: max(0, len(indent) - len(step))]
    return indent
