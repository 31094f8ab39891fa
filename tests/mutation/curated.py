"""The curated mutants: realistic one-line bugs, each with the tests that should catch it.

Each entry is data: the file, an exact snippet of its source (it must occur exactly once;
when the code changes and the snippet is gone, the mutant is reported ``stale`` and not
counted), its replacement, and a small test selection (pytest arguments: files, node ids,
``-k`` expressions, options). Ids starting with ``S`` are the six bugs an outside review found
the suite did not catch; the others are bugs of the kinds the suite is meant to catch.
"""

from __future__ import annotations

CURATED: list[dict] = [
    # -- the six survivors of the review -----------------------------------------------------
    {
        "id": "S1-no-group-kill",
        "why": "the kill skips the child's process group",
        "file": "cellbox/supervisor/process.py",
        "snippet": "            os.killpg(pid, signal.SIGKILL)\n",
        "replacement": "            pass\n",
        "tests": ["tests/process/test_ladder.py::test_timeout_kill_reaches_the_whole_process_group"],
    },
    {
        "id": "S2-no-sigint-while-exec-written",
        "why": "an interrupt that arrives while the Exec is being written never sends SIGINT",
        "file": "cellbox/supervisor/session.py",
        "snippet": "            if pe.interrupt_requested:  # asked for while the Exec was being written\n"
        "                self._sigint()\n",
        "replacement": "            if pe.interrupt_requested:  # asked for while the Exec was being written\n"
        "                pass\n",
        # The 200-interrupt test is xfail (defect 2) until the supervisor rebuild lands.
        "tests": ["--runxfail", "tests/process/test_ladder.py::test_interrupt_right_behind_each_eval_is_never_lost",
                  "tests/process/test_client.py::test_interrupt_sent_right_behind_its_eval_hits_it"],
    },
    {
        "id": "S3-engine-frames-in-chains",
        "why": "engine frames are stripped from the exception but not from what it chains to",
        "file": "cellbox/child/errors.py",
        "snippet": "        for linked in (e.__cause__, e.__context__):\n",
        "replacement": "        for linked in ():\n",
        "tests": ["tests/process/test_ladder.py::test_timeout_of_awaiting_cell_hides_engine_frames_in_its_chain"],
    },
    {
        "id": "S4-dropped-evals-keep-state",
        "why": "evals dropped from the queue by close/restart report stateLost: false",
        "file": "cellbox/supervisor/session.py",
        "snippet": 'pe.finish(_dropped("killed", cause, state_lost=True))',
        "replacement": 'pe.finish(_dropped("killed", cause))',
        "tests": ["tests/process/test_sessions.py", "-k", "close_and_restart or close_then"],
    },
    {
        "id": "S5-mcp-text-without-status",
        "why": "the MCP python tool's text loses its [cellbox: ...] outcome line",
        "file": "cellbox/supervisor/mcp.py",
        "snippet": "        parts.append(_status_line(result))\n",
        "replacement": "        pass\n",
        "tests": ["tests/conformance/test_mcp_sdk.py", "-k", "outcome"],
    },
    {
        "id": "S6-truncated-undercounts",
        "why": "bytes skipped to start the tail on a character are not counted as dropped",
        "file": "cellbox/supervisor/output.py",
        "snippet": "            self.dropped += start\n",
        "replacement": "            pass\n",
        "tests": ["tests/unit/test_output_cap.py", "tests/process/test_output.py", "-k", "cap or truncated"],
    },
    # -- bugs of the kinds the suite should catch --------------------------------------------
    {
        "id": "L1-interrupt-deadline-later",
        "why": "an interrupt moves the kill deadline later instead of earlier",
        "file": "cellbox/supervisor/ladder.py",
        "snippet": "self.deadline = min(self.deadline, now + self.grace)",
        "replacement": "self.deadline = max(self.deadline, now + self.grace)",
        "tests": ["tests/unit/test_ladder.py"],
    },
    {
        "id": "L2-kill-cause-swapped",
        "why": "a kill after the timeout is reported as an interrupt and vice versa",
        "file": "cellbox/supervisor/ladder.py",
        "snippet": 'self.reason = "timeout" if now >= self._timeout_at else "interrupt"',
        "replacement": 'self.reason = "timeout" if now < self._timeout_at else "interrupt"',
        "tests": ["tests/unit/test_ladder.py"],
    },
    {
        "id": "Q1-no-sigint-for-running-cell",
        "why": "session/interrupt never signals a running cell (it is killed after the grace)",
        "file": "cellbox/supervisor/session.py",
        "snippet": '        if run.ladder.interrupt(time.monotonic()) == "sigint" and run.sent:\n            self._sigint()\n',
        "replacement": '        if run.ladder.interrupt(time.monotonic()) == "sigint" and run.sent:\n            pass\n',
        "tests": ["tests/process/test_ladder.py::test_interrupt_sleep_keeps_namespace"],
    },
    {
        "id": "Q2-timeout-reported-as-interrupt",
        "why": "a cell the child stopped for its timeout is reported by the wrong status",
        "file": "cellbox/supervisor/session.py",
        "snippet": '            if done.stopped == "timeout":\n',
        "replacement": '            if done.stopped == "interrupt":\n',
        "tests": ["tests/process/test_ladder.py", "-k", "timeout_sync_sleep or interrupt_sleep"],
    },
    {
        "id": "Q3-silent-counts",
        "why": "silent evals advance the execution count and normal ones do not",
        "file": "cellbox/supervisor/session.py",
        "snippet": "        if not params.silent:\n            self.execution_count = count\n",
        "replacement": "        if params.silent:\n            self.execution_count = count\n",
        "tests": ["tests/process/test_output.py::test_silent"],
    },
    {
        "id": "Q4-unknown-sigkill-is-cpu",
        "why": "a SIGKILL the supervisor did not send is blamed on the CPU limit, not memory",
        "file": "cellbox/supervisor/session.py",
        "snippet": 'cause = "cpu" if cpu_limit and interp.cpu_used() >= cpu_limit else "memory"',
        "replacement": 'cause = "memory" if cpu_limit and interp.cpu_used() >= cpu_limit else "cpu"',
        "tests": ["tests/process/test_crashes.py", "-k", "sigkill"],
    },
    {
        "id": "O1-head-one-byte-longer",
        "why": "the live head of capped output is one byte over its half",
        "file": "cellbox/supervisor/output.py",
        "snippet": "        self.head_left = limit // 2\n",
        "replacement": "        self.head_left = limit // 2 + 1\n",
        "tests": ["tests/unit/test_output_cap.py"],
    },
    {
        "id": "P1-descendants-not-killed",
        "why": "stopped descendants of a killed child are never sent SIGKILL",
        "file": "cellbox/supervisor/process.py",
        "snippet": "    for pid in found:\n        _signal(pid, signal.SIGKILL)\n",
        "replacement": "    for pid in found:\n        pass\n",
        "tests": ["tests/process/test_ladder.py::test_grandchildren_and_setsid_killed"],
    },
    {
        "id": "P2-exit-cause-raw-status",
        "why": "an exit is reported with the raw wait status instead of the exit code",
        "file": "cellbox/supervisor/process.py",
        "snippet": 'return f"exit {os.WEXITSTATUS(status)}"',
        "replacement": 'return f"exit {status}"',
        "tests": ["tests/process/test_crashes.py", "-k", "exit3"],
    },
    {
        "id": "M1-timeout-not-an-error",
        "why": "the MCP result's isError is set only for exceptions, not timeouts or kills",
        "file": "cellbox/supervisor/mcp.py",
        "snippet": '"isError": result.status != "ok",',
        "replacement": '"isError": result.status == "error",',
        "tests": ["tests/conformance/test_mcp_sdk.py", "-k", "outcome"],
    },
    {
        "id": "M2-session-notifications-to-mcp",
        "why": "an MCP tool call streams cellbox's own session/output notifications",
        "file": "cellbox/supervisor/mcp.py",
        "snippet": "progress.output if progress else None, notify=False",
        "replacement": "progress.output if progress else None, notify=True",
        "tests": ["tests/conformance/test_mcp_sdk.py", "-k", "notifications"],
    },
    {
        "id": "E1-late-alarm-check-inverted",
        "why": "the child ignores its own timeout alarm (and would honour stale ones)",
        "file": "cellbox/child/executor.py",
        "snippet": "or time.monotonic() < cell.deadline - 0.005):",
        "replacement": "or time.monotonic() > cell.deadline - 0.005):",
        "tests": ["tests/unit/test_executor_interrupt.py"],
    },
    {
        "id": "E2-silent-value",
        "why": "a cell's value is kept only when it is silent",
        "file": "cellbox/child/executor.py",
        "snippet": "        if value is None or cell.silent:\n",
        "replacement": "        if value is None and cell.silent:\n",
        "tests": ["tests/unit/test_executor_basics.py"],
    },
    {
        "id": "F1-line-at-limit-rejected",
        "why": "an NDJSON line of exactly max_size bytes is rejected as too large",
        "file": "cellbox/protocol/framing.py",
        "snippet": "            if len(line) > max_size:\n",
        "replacement": "            if len(line) >= max_size:\n",
        "tests": ["tests/unit/test_framing.py"],
    },
    {
        "id": "J1-any-jsonrpc-version",
        "why": "requests with a wrong jsonrpc version are accepted",
        "file": "cellbox/protocol/jsonrpc.py",
        "snippet": '        if env.jsonrpc != "2.0":\n',
        "replacement": "        if not env.jsonrpc:\n",
        "tests": ["tests/unit/test_jsonrpc.py", "tests/conformance/test_codec_cases.py"],
    },
]
