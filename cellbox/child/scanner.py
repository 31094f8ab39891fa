"""The context at the cursor, read from the text alone (for ``cellbox.child.editor``).

The scanner works on text that is usually incomplete Python (the cell up to the cursor), so it
uses regular expressions only, never ``ast`` or ``tokenize``: it finds the open brackets, an
open string or comment, where the statement holding the cursor starts, and the last closed
string and bracket pair. It also owns the grammar of a *chain*, the expressions completion and
inspection can follow: names, attributes and literal subscripts (``d["a"][0].real``).
Nothing here looks at an object.
"""

from __future__ import annotations

import keyword
import re

ID = r"[^\W\d]\w*"
_LITERAL = r"""[bB]?(?:'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")|-?\d+"""
# a chain of names, attributes and literal subscripts: os.path, d["a"][0].real
CHAIN = re.compile(rf"""(?<![\w.\])'"])(?:{ID})(?:[ \t]*\.[ \t]*{ID}|[ \t]*\[[ \t]*(?:{_LITERAL})[ \t]*\])*\Z""")
CHAIN_PART = re.compile(rf"({ID})|\[[ \t]*({_LITERAL})[ \t]*\]")
# offered as names, never looked up as objects (``if (`` is not a call)
KEYWORDS = sorted(set(keyword.kwlist) | (set(keyword.softkwlist) - {"_"}))

_TOKEN = re.compile(r"""#[^\n]*|(?:(?<!\w)[rRbBuUfF]{1,2})?(?:'''|\"\"\"|'|")|[()\[\]{}]|\\\r?\n|\n|;""")
_STRING_END = {
    # a lone backslash may end the text: the user is in the middle of typing an escape
    "'": re.compile(r"(?:[^'\\\n]|\\.|\\\Z)*('|\n|\Z)", re.DOTALL),
    '"': re.compile(r'(?:[^"\\\n]|\\.|\\\Z)*("|\n|\Z)', re.DOTALL),
    "'''": re.compile(r"(?:[^\\]|\\.|\\\Z)*?('''|\Z)", re.DOTALL),
    '"""': re.compile(r'(?:[^\\]|\\.|\\\Z)*?("""|\Z)', re.DOTALL),
}
_CLOSE = {")": "(", "]": "[", "}": "{"}


class Context:
    """What surrounds the end of a text: open brackets, an open string or comment."""

    __slots__ = ("brackets", "comment", "last_closed", "last_string", "stmt_start", "string")

    def __init__(self) -> None:
        self.brackets: list[tuple[str, int]] = []  # (opener, offset), innermost last
        self.string: tuple[int, str, str] | None = None  # (offset of prefix, prefix, quote)
        self.comment = False
        self.stmt_start = 0  # where the logical line that holds the end starts
        self.last_string = (0, 0)  # span of the last closed string literal
        self.last_closed = ("", 0, 0)  # (opener, span) of the last closed bracket pair


def scan(text: str) -> Context:
    """The context at the end of ``text`` (the code before the cursor)."""
    ctx = Context()
    pos = 0
    while True:
        m = _TOKEN.search(text, pos)
        if m is None:
            return ctx
        tok = m.group()
        pos = m.end()
        c = tok[0]
        if c == "#":
            if pos == len(text):
                ctx.comment = True
        elif tok[-1] in "'\"":
            quote = tok.lstrip("rRbBuUfF")
            end = _STRING_END[quote].match(text, pos)
            assert end is not None  # every pattern can match the empty rest
            if end.group(1) == "" or (end.group(1) == "\n" and end.end() == len(text)):
                ctx.string = (m.start(), tok[: len(tok) - len(quote)], quote)
                return ctx
            pos = end.end()
            ctx.last_string = (m.start(), pos)
        elif c in "([{":
            ctx.brackets.append((c, m.start()))
        elif c in ")]}":
            if ctx.brackets and ctx.brackets[-1][0] == _CLOSE[c]:
                opener, start = ctx.brackets.pop()
                ctx.last_closed = (opener, start, pos)
            else:
                ctx.brackets = []
        elif c == "\\":
            pass  # a continuation line: same statement
        elif not ctx.brackets:  # newline or ";" outside brackets
            ctx.stmt_start = pos


def chain_end(text: str) -> str | None:
    """The chain (``a.b["k"][0]``) that ends ``text``, or None if ``text`` does not end with one."""
    window = text[-400:]
    m = CHAIN.search(window)
    return m.group() if m else None
