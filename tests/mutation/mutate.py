#!/usr/bin/env python3
"""Mutation testing for cellbox: plant one small bug at a time, run the tests that should
catch it, and report which bugs they caught (killed) and which they missed (survived).

Two sources of mutants:

- ``curated`` (``curated.py``): realistic one-line bugs, each with a small test selection.
  A mutant whose snippet is no longer in the code (the code was rewritten) is ``stale`` and
  not counted.
- ``auto``: generated over the files given, by simple operators (``<``/``<=``/``>``/``>=``,
  ``==``/``!=``, ``True``/``False``, ``and``/``or``, ``+ 1`` to ``- 1``, a call statement
  replaced by ``pass``), sampled with a seed and capped in number.

The working tree is never touched: the repository is copied to a temporary directory once,
each mutant is applied there, its tests run (with ``PYTHONPATH`` on the copy and a fresh
bytecode cache), and the file is restored. Outcomes: ``killed`` (the tests failed or timed
out), ``survived`` (they passed), ``stale``, ``error`` (pytest found no tests or was misused),
``invalid`` (the selection already fails without the mutant), ``equivalent`` (it survived and
its curated entry says why no test can tell it from the code). Score = killed / (killed +
survived).

Usage (from the repository root)::

    python tests/mutation/mutate.py curated [--only ID ...] [--list] [--json FILE]
    python tests/mutation/mutate.py auto [PATH ...] [--seed 1] [--max 20] [--tests ARGS] [--list]

See tests/mutation/README.md.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import io
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tokenize
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

#: What ``auto`` mutates when no path is given.
AUTO_DEFAULT = ["cellbox/supervisor", "cellbox/protocol", "cellbox/child/executor.py"]

#: Tests run for an auto mutant of a file, by the longest matching path prefix.
AUTO_TESTS = {
    "cellbox/supervisor/machine.py": [
        "tests/unit/test_machine.py",
        "tests/unit/test_machine_props.py",
        "tests/unit/test_output_cap.py",
    ],
    "cellbox/supervisor/session.py": ["tests/unit/test_session_shell.py", "tests/process/test_ladder.py"],
    "cellbox/supervisor/child.py": [
        "tests/unit/test_child_io.py",
        "tests/unit/test_session_shell.py",
        "tests/process/test_ladder.py::test_interrupt_sleep_keeps_namespace",
        "tests/process/test_output.py::test_output_streams_in_order_with_request_id",
    ],
    "cellbox/supervisor/outbox.py": ["tests/unit/test_outbox.py"],
    "cellbox/supervisor/mcp.py": ["tests/conformance/test_mcp_sdk.py"],
    "cellbox/supervisor/completeness.py": ["tests/unit/test_completeness.py"],
    "cellbox/supervisor": ["tests/process/test_ladder.py", "tests/process/test_sessions.py"],
    "cellbox/protocol/framing.py": ["tests/unit/test_framing.py"],
    "cellbox/protocol/channel.py": ["tests/unit/test_child_link.py", "tests/unit/test_child_io.py"],
    "cellbox/protocol": ["tests/unit/test_jsonrpc.py", "tests/conformance/test_codec_cases.py"],
    "cellbox/child/executor.py": [
        "tests/unit/test_executor_basics.py",
        "tests/unit/test_executor_interrupt.py",
        "tests/unit/test_executor_async.py",
    ],
    "cellbox/child/link.py": ["tests/unit/test_child_link.py"],
}

_IGNORE = shutil.ignore_patterns(
    ".git", "__pycache__", "node_modules", "*.egg-info", ".hypothesis", ".pytest_cache", "build", "dist"
)


@dataclass
class Mutant:
    id: str
    file: str  # relative to the repository root
    snippet: str  # exact source text; must occur exactly once (or be line ``line``, for auto)
    replacement: str
    tests: list[str]  # pytest arguments
    why: str = ""
    line: int | None = None  # auto mutants: the 1-based line the snippet is
    equivalent: str = ""  # why no test can catch it (a survivor is then ``equivalent``)


@dataclass
class Outcome:
    id: str
    file: str
    status: str  # killed, survived, stale, error, invalid
    seconds: float = 0.0
    detail: str = ""
    why: str = ""
    tests: list[str] = field(default_factory=list)


# -- applying a mutant ---------------------------------------------------------------------


def mutated_source(source: str, m: Mutant) -> tuple[str | None, str]:
    """The source with the mutant applied, or ``(None, reason)`` if it no longer applies."""
    if m.line is not None:
        lines = source.splitlines(keepends=True)
        if m.line > len(lines) or lines[m.line - 1] != m.snippet:
            return None, f"line {m.line} changed"
        lines[m.line - 1] = m.replacement
        return "".join(lines), ""
    count = source.count(m.snippet)
    if count != 1:
        return None, "snippet not found" if count == 0 else f"snippet found {count} times"
    return source.replace(m.snippet, m.replacement), ""


# -- generating mutants ----------------------------------------------------------------------

_SWAP_OPS = {"<": "<=", "<=": "<", ">": ">=", ">=": ">", "==": "!=", "!=": "=="}
_SWAP_NAMES = {"True": "False", "False": "True", "and": "or", "or": "and"}


def generate(path: Path, rel: str, tests: list[str]) -> list[Mutant]:
    """Every single-line mutant the operators can make in one file."""
    source = path.read_text()
    lines = source.splitlines(keepends=True)
    out: list[Mutant] = []

    def add(lineno: int, col: int, new_line: str, op: str) -> None:
        old = lines[lineno - 1]
        if new_line != old:
            out.append(Mutant(f"{rel}:{lineno}:{col}:{op}", rel, old, new_line, tests, line=lineno))

    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    for i, tok in enumerate(tokens):
        (row, col), (erow, ecol) = tok.start, tok.end
        if row != erow or row > len(lines):
            continue
        line = lines[row - 1]
        new = None
        if tok.type == tokenize.OP and tok.string in _SWAP_OPS:
            new = _SWAP_OPS[tok.string]
        elif tok.type == tokenize.NAME and tok.string in _SWAP_NAMES:
            new = _SWAP_NAMES[tok.string]
        elif tok.type == tokenize.OP and tok.string == "+" and i + 1 < len(tokens):
            nxt = tokens[i + 1]
            if nxt.type == tokenize.NUMBER and nxt.string == "1":
                new = "-"
        if new is not None:
            add(row, col, line[:col] + new + line[ecol:], f"{tok.string}->{new}")

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and node.lineno == node.end_lineno:
            line = lines[node.lineno - 1]
            indent = line[: len(line) - len(line.lstrip())]
            add(node.lineno, node.col_offset, f"{indent}pass\n", "del-call")
    return out


def auto_tests(rel: str) -> list[str]:
    best = max((p for p in AUTO_TESTS if rel == p or rel.startswith(p.rstrip("/") + "/")), key=len, default=None)
    return list(AUTO_TESTS[best]) if best else []


def auto_mutants(paths: list[str], seed: int, cap: int, tests: list[str] | None) -> list[Mutant]:
    files: list[Path] = []
    for p in paths:
        full = ROOT / p
        files.extend(sorted(full.rglob("*.py")) if full.is_dir() else [full])
    every: list[Mutant] = []
    for f in files:
        rel = f.relative_to(ROOT).as_posix()
        every.extend(generate(f, rel, tests if tests else auto_tests(rel)))
    rng = random.Random(seed)
    return rng.sample(every, min(cap, len(every)))


def curated_mutants() -> list[Mutant]:
    spec = importlib.util.spec_from_file_location("cellbox_curated_mutants", HERE / "curated.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [Mutant(**entry) for entry in module.CURATED]


# -- running ------------------------------------------------------------------------------------


class Workspace:
    """A copy of the repository in a temporary directory, where mutants are applied."""

    def __init__(self, keep: bool = False) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="cellbox-mutation-"))
        self.repo = self.tmp / "repo"
        self.keep = keep
        shutil.copytree(ROOT, self.repo, ignore=_IGNORE, symlinks=True)
        self._runs = 0
        found = subprocess.run(
            [sys.executable, "-c", "import cellbox; print(cellbox.__file__)"],
            env=self.env(), cwd=self.repo, capture_output=True, text=True, check=True,
        ).stdout.strip()
        if not found.startswith(str(self.repo)):
            raise SystemExit(f"the copy's cellbox is shadowed by {found}; mutants would not be tested")

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(self.repo) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        # A fresh bytecode cache per run: a restored file must never reuse a mutant's .pyc.
        env["PYTHONPYCACHEPREFIX"] = str(self.tmp / f"pyc-{self._runs}")
        return env

    def pytest(self, tests: list[str], timeout: float) -> tuple[str, float, str]:
        """Run a selection; ``(passed|failed|timeout|error, seconds, last lines)``."""
        self._runs += 1
        cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:xdist", "-p", "no:randomly", *tests]
        t0 = time.monotonic()
        proc = subprocess.Popen(
            cmd, cwd=self.repo, env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            return "timeout", time.monotonic() - t0, "timed out"
        finally:
            shutil.rmtree(self.tmp / f"pyc-{self._runs}", ignore_errors=True)
        seconds = time.monotonic() - t0
        last = (out.strip().splitlines() or [""])[-1]
        if proc.returncode == 0:
            return "passed", seconds, last
        if proc.returncode in (4, 5):  # usage error, no tests collected
            return "error", seconds, last
        return "failed", seconds, last

    def run(self, m: Mutant, timeout: float) -> Outcome:
        target = self.repo / m.file
        if not target.exists():
            return Outcome(m.id, m.file, "stale", detail="file not found", why=m.why, tests=m.tests)
        original = target.read_text()
        source, reason = mutated_source(original, m)
        if source is None:
            return Outcome(m.id, m.file, "stale", detail=reason, why=m.why, tests=m.tests)
        target.write_text(source)
        try:
            result, seconds, last = self.pytest(m.tests, timeout)
        finally:
            target.write_text(original)
        status = {"failed": "killed", "timeout": "killed", "passed": "survived", "error": "error"}[result]
        if status == "survived" and m.equivalent:
            status = "equivalent"
        return Outcome(m.id, m.file, status, seconds, last if result != "timeout" else "timed out", m.why, m.tests)

    def close(self) -> None:
        if self.keep:
            print(f"workspace kept: {self.repo}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def run_all(mutants: list[Mutant], timeout: float, baseline: bool, keep: bool) -> list[Outcome]:
    ws = Workspace(keep)
    outcomes: list[Outcome] = []
    try:
        broken: set[tuple[str, ...]] = set()
        if baseline:
            for sel in dict.fromkeys(tuple(m.tests) for m in mutants):
                result, seconds, last = ws.pytest(list(sel), timeout)
                print(f"baseline {result:8} {seconds:6.1f}s  {shlex.join(sel)}", flush=True)
                if result != "passed":
                    broken.add(sel)
        for n, m in enumerate(mutants, 1):
            if tuple(m.tests) in broken:
                o = Outcome(m.id, m.file, "invalid", detail="the selection fails without the mutant", why=m.why, tests=m.tests)
            else:
                o = ws.run(m, timeout)
            outcomes.append(o)
            print(f"[{n:2}/{len(mutants)}] {o.status:8} {o.seconds:6.1f}s  {o.id}  ({o.detail})", flush=True)
    finally:
        ws.close()
    return outcomes


def summary(outcomes: list[Outcome]) -> dict[str, object]:
    counts = {
        s: sum(o.status == s for o in outcomes)
        for s in ("killed", "survived", "equivalent", "stale", "error", "invalid")
    }
    scored = counts["killed"] + counts["survived"]
    score = counts["killed"] / scored if scored else None
    return {"counts": counts, "score": score, "survivors": [o.id for o in outcomes if o.status == "survived"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    for name in ("curated", "auto"):
        p = sub.add_parser(name)
        p.add_argument("--list", action="store_true", help="list the mutants (and whether they apply); run nothing")
        p.add_argument("--timeout", type=float, default=300.0, help="seconds per test run (a timeout kills)")
        p.add_argument("--no-baseline", action="store_true", help="skip running each selection unmutated first")
        p.add_argument("--json", help="also write the outcomes to this file")
        p.add_argument("--keep", action="store_true", help="keep the temporary copy")
        if name == "curated":
            p.add_argument("--only", nargs="+", metavar="ID", help="only these mutant ids (or id prefixes)")
        else:
            p.add_argument("paths", nargs="*", default=AUTO_DEFAULT, help="files or directories to mutate")
            p.add_argument("--seed", type=int, default=1)
            p.add_argument("--max", type=int, default=20, help="at most this many mutants")
            p.add_argument("--tests", help="pytest arguments for every mutant (default: by file, see AUTO_TESTS)")
    args = parser.parse_args(argv)

    if args.mode == "curated":
        mutants = curated_mutants()
        if args.only:
            mutants = [m for m in mutants if any(m.id == o or m.id.startswith(o) for o in args.only)]
    else:
        mutants = auto_mutants(args.paths, args.seed, args.max, shlex.split(args.tests) if args.tests else None)
    if not mutants:
        print("no mutants")
        return 1

    if args.list:
        for m in mutants:
            source = (ROOT / m.file).read_text() if (ROOT / m.file).exists() else ""
            applies = mutated_source(source, m)[0] is not None
            print(f"{m.id:40} {'ok   ' if applies else 'STALE'} {shlex.join(m.tests)}")
            print(f"    - {m.snippet.strip()}\n    + {m.replacement.strip()}")
        return 0

    outcomes = run_all(mutants, args.timeout, not args.no_baseline, args.keep)
    result = summary(outcomes)
    counts = result["counts"]
    score = result["score"]
    print(
        "\n" + ", ".join(f"{k} {v}" for k, v in counts.items())  # type: ignore[union-attr]
        + (f"; score {score:.0%} ({counts['killed']}/{counts['killed'] + counts['survived']})" if score is not None else "")  # type: ignore[index]
    )
    for o in outcomes:
        if o.status == "survived":
            print(f"survived: {o.id}: {o.why or o.file}")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": result, "outcomes": [asdict(o) for o in outcomes]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
