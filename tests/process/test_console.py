"""``cellbox console`` under a real pseudo-terminal (pexpect), talking to a real server.

Each console gets a unique tag in its environment, which the server and every child inherit,
so the end of each test can check that nothing the console started is still running.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import uuid

import pexpect
import pytest

from tests.harness import assert_no_leftovers, leftovers

# pexpect forks the pty child from a threaded pytest (its timeout thread); the child execs at
# once, so the fork-in-a-threaded-process hazard does not apply.
pytestmark = pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROMPT = r"In \[(\d+)\]: "
MORE = r"\.\.\.: "


class Console:
    def __init__(self, tmp_path, *args: str) -> None:
        self.tag = uuid.uuid4().hex
        self.home = tmp_path
        env = dict(os.environ)
        env.update(
            CELLBOX_TEST_TAG=self.tag,
            PYTHONPATH=ROOT,
            HOME=str(tmp_path),  # the history file goes here
            TERM="dumb",
            INPUTRC=os.devnull,
        )
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "cellbox", "console", *args],
            env=env,
            cwd=str(tmp_path),
            encoding="utf-8",
            timeout=15,
            dimensions=(40, 200),
        )
        self.child.delaybeforesend = None

    def prompt(self) -> int:
        """Wait for the next ``In [n]:`` prompt; return n."""
        self.child.expect(PROMPT)
        return int(self.child.match.group(1))

    def run(self, line: str) -> str:
        """Type one line at a prompt; return what was printed before the next prompt."""
        self.child.sendline(line)
        self.child.expect(PROMPT)
        return self.child.before

    def exit(self) -> int:
        self.child.sendeof()
        self.child.expect(pexpect.EOF)
        self.child.close()
        return self.child.exitstatus

    def assert_no_leftovers(self, timeout: float = 5.0) -> None:
        assert_no_leftovers(self.tag, timeout)


@pytest.fixture
def console(tmp_path):
    c = Console(tmp_path)
    try:
        yield c
    finally:
        if c.child.isalive():
            c.child.terminate(force=True)
        c.assert_no_leftovers()


def test_multiline_function_and_values(console):
    assert console.prompt() == 1
    console.child.sendline("def double(x):")
    console.child.expect(MORE)
    console.child.sendline("return x * 2")  # the console pre-fills the indent
    console.child.expect(MORE)
    console.child.sendline("")  # a blank line ends the block
    assert console.prompt() == 2
    out = console.run("double(21)")
    assert re.search(r"Out\[2\]: 42\r?\n", out), out
    console.child.sendline("for i in range(2):")
    console.child.expect(MORE)
    console.child.sendline("print(i * 10)")
    console.child.expect(MORE)
    console.child.sendline("")
    console.child.expect(PROMPT)
    assert re.search(r"0\r?\n10\r?\n", console.child.before), console.child.before
    assert console.exit() == 0


def test_top_level_await_value(console):
    console.prompt()
    console.run("import asyncio")
    out = console.run("await asyncio.sleep(0, 5)")
    assert re.search(r"Out\[2\]: 5\r?\n", out), out


def test_output_streams_and_tracebacks(console):
    console.prompt()
    out = console.run("print('hello'); 1/0")
    assert "hello" in out and "ZeroDivisionError: division by zero" in out and "Traceback" in out
    out = console.run("x = 'no value shown'")
    assert "Out[" not in out


def test_ctrl_c_interrupts_a_running_cell_and_keeps_variables(console):
    console.prompt()
    console.run("kept = 41")
    console.child.sendline("import time; print('sle' + 'eping', flush=True); time.sleep(100)")
    console.child.expect("sleeping\r?\n")  # the output, not the echo of the typed line
    console.child.sendintr()
    console.child.expect("KeyboardInterrupt")
    console.prompt()
    out = console.run("kept + 1")
    assert re.search(r"Out\[\d+\]: 42", out), out


def test_ctrl_c_at_the_prompt_clears_the_line(console):
    n = console.prompt()
    console.child.send("this is not run")
    console.child.expect("not run")
    console.child.sendintr()
    console.child.expect("KeyboardInterrupt")
    assert console.prompt() == n
    out = console.run("1 + 1")
    assert re.search(rf"Out\[{n}\]: 2", out), out


def test_ctrl_d_exits_cleanly_with_every_process_gone_and_history_saved(console):
    console.prompt()
    console.run("import subprocess, sys")
    console.run("p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(100)'])")
    assert len(leftovers(console.tag)) >= 3  # console, server, child, grandchild
    assert console.exit() == 0
    console.assert_no_leftovers()
    history = (console.home / ".cellbox_history").read_text()
    assert "import subprocess, sys" in history


def test_input_reads_from_the_terminal(console):
    console.prompt()
    console.child.sendline("name = input('who? ')")
    console.child.expect("who\\? ")
    console.child.sendline("Ada")
    console.prompt()
    out = console.run("name")
    assert "Out[2]: 'Ada'" in out, out


def test_tab_completes_from_the_live_namespace(console):
    console.prompt()
    console.run("a_long_variable_name = 7")
    console.child.send("a_long_var\t")
    console.child.sendline("")
    # Completion needs the child's editor module; without it the line stays as typed.
    has_editor = importlib.util.find_spec("cellbox.child.editor") is not None
    found = console.child.expect([r"Out\[2\]: 7", r"NameError"])
    assert found == 0 if has_editor else found in (0, 1)


def test_killed_cell_prints_a_notice(console):
    console.prompt()
    out = console.run("import os; os._exit(3)")
    assert "[cellbox] the interpreter was killed (exit 3)" in out, out
    out = console.run("'alive'")
    assert "'alive'" in out


def test_ctrl_c_on_code_that_ignores_it_ends_in_a_kill_notice(console):
    console.prompt()
    console.run("kept = 1")
    console.child.sendline(
        "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
        "print('spin' + 'ning', flush=True); exec('while True: pass')"
    )
    console.child.expect("spinning\r?\n")
    console.child.sendintr()
    console.child.expect(r"\[cellbox\] the interpreter was killed \(interrupt\)")
    console.prompt()
    out = console.run("kept")
    assert "NameError" in out, out  # the notice told the truth: the variables are gone


def test_timeout_flag_stops_a_long_cell(tmp_path):
    c = Console(tmp_path, "--timeout", "0.5")
    try:
        c.prompt()
        c.run("kept = 1")
        out = c.run("import time; time.sleep(30)")
        assert "[cellbox] the cell hit its timeout" in out, out
        assert "Out[3]: 1" in c.run("kept")
        assert c.exit() == 0
    finally:
        if c.child.isalive():
            c.child.terminate(force=True)
        c.assert_no_leftovers()
