"""``session/isComplete`` decisions (``cellbox.supervisor.completeness``), in-process."""

from __future__ import annotations

import pytest

from cellbox.supervisor.completeness import is_complete

COMPLETE = [
    "",
    "   ",
    "\n\n",
    "x = 1",
    "x = 1\n",
    "x = 1;",
    "print('hi')",
    "#comment",
    "if x: pass",
    "while True: pass",
    "await asyncio.sleep(1)",
    "x = await f()",
    "async with a: pass",
    "1 + \\\n2",
    'x = """\nabc\n"""',
    "x = [1,\n     2]",
    "x = [1,\n     2]\n",
    "if x:\n    y\nz = [1,\n  2]",
    "@dec\ndef f(): pass",
    "if x:\n    y\n",  # the blank line closes the block
    "if x:\n    y\n\n",
    "def f():\n    return 1\n",
    "async def f():\n    await g()\n",
    "class A:\n    def f(self):\n        pass\n",
    "for i in range(3):\n    print(i)\n\n",
    "if x:\n    y\nz",  # a statement at column 0 ends the block
    "if x:\n    pass\n    ",  # an empty auto-indented line ends it too
    "try:\n    pass\nexcept E:\n    pass\n",
    "match x:\n    case 1:\n        pass\n",
    "x = 1\r\n",
    "if x:\r\n    y\r\n",
]

INCOMPLETE = [
    ("if x:", "    "),
    ("if x:\n", "    "),
    ("if x:\n\n", "    "),  # codeop (and IPython) wait for the block
    ("if x:\n    y = [1,\n         2]", "    "),
    ("if (a and\n        b):", "    "),
    ("if x:  # comment", "    "),
    ("if x == '#':", "    "),
    ("if x:\n    y", "    "),
    ("if x:\n    if y:", "        "),
    ("if x:\n\ty", "\t"),
    ("for a in b:\n    pass\nelse:", "    "),
    ("try:\n    pass", ""),  # "pass" ends a level
    ("try:\n    pass\n", ""),  # no except/finally yet: still open
    ("def f():", "    "),
    ("def f():\n    return 1", ""),
    ("def f():\n    x = 1", "    "),
    ("for i in x:\n    if i:\n        break", "    "),
    ("if x:\n    raise E", ""),
    ("class A:\n    def f(self):\n        pass", "    "),
    ("def f():\n    '''doc", "    "),
    ("@dec", ""),
    ("@dec\n", ""),
    ("@dec\ndef f():", "    "),
    ("async with a:", "    "),
    ("async def f():", "    "),
    ("async def f():\n    await g()", "    "),
    ("match x:", "    "),
    ("lambda:", "    "),
    ("1 +", ""),
    ("1 + # a comment", ""),
    ("x = ", ""),
    ("x = 1 if", ""),
    ("x: int =", ""),
    ("from os import", ""),
    ("not", ""),
    ("x.", ""),
    ("(", ""),
    ("(1 +", ""),
    ("foo(1,", ""),
    ("x = {", ""),
    ("a = 1\nb = (", ""),
    ("x = [1,\n 2", " "),
    ("x = \\", ""),
    ('"""abc', ""),
    ('"""abc\n', ""),
    ("if x:\n    y = 1 +", "    "),
    ("x = 1\nif x:\n    y", "    "),
]

INVALID = [
    ")",
    "a b",
    "1 2",
    "1 * *",
    "'abc",
    "f'{x'",
    "def f(:",
    "else:",
    "return 1",
    "x = yield",
    "  x = 1",  # the first line is indented: the executor would reject it too
    "x = 1\n  y = 2",
    "if x:\n    pass\n  y",
    "pass\n  pass",
    "1 +\n",  # the blank line ends it: nothing can complete it now
    "x = 0o9",
    "x = 1\0",
]


@pytest.mark.parametrize("code", COMPLETE)
def test_complete(code):
    assert is_complete(code) == ("complete", "")


@pytest.mark.parametrize("code, indent", INCOMPLETE)
def test_incomplete(code, indent):
    assert is_complete(code) == ("incomplete", indent)


@pytest.mark.parametrize("code", INVALID)
def test_invalid(code):
    assert is_complete(code) == ("invalid", "")


def test_a_long_valid_cell_is_complete():
    code = "\n".join(f"x{i} = {i}" for i in range(5000))
    assert is_complete(code) == ("complete", "")
