"""Codec and framing cost per message: cellbox's protocol layer against the stdlib.

Measures, in microseconds per message (median and p99 over many timed rounds):

1. decode + encode of a ~200-byte ``session/eval`` request: ``Dispatcher.receive`` (envelope,
   id, validated ``EvalParams``) plus ``encode_result`` of an ``EvalResult``, against
   ``json.loads`` + ``json.dumps`` of the same request and result as dicts (no validation, so
   the stdlib baseline does strictly less work);
2. NDJSON framing: ``NdjsonFramer.feed`` of a chunk holding 64 such messages, against a plain
   ``bytearray`` + ``split(b"\\n")`` loop;
3. LSP framing, for reference: ``LspFramer.feed`` of the same 64 messages with headers.

Run: ``python bench/bench_codec.py`` (not part of the test suite). Prints the Python version
and host with the results.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cellbox.protocol.framing import LspFramer, NdjsonFramer  # noqa: E402
from cellbox.protocol.jsonrpc import Dispatcher, encode_result  # noqa: E402
from cellbox.protocol.messages import EvalResult  # noqa: E402

REQUEST = (
    b'{"jsonrpc":"2.0","id":42,"method":"session/eval","params":{"session":"s-0f3a9c",'
    b'"code":"import math\\nx = sum(i * i for i in range(100))\\nprint(x)\\nx",'
    b'"timeout":30,"allowStdin":false,"collectOutput":true}}'
)
RESULT = EvalResult(status="ok", execution_count=3, stdout="328350\n", stderr="")
RESULT_DICT = json.loads(json.dumps({"status": "ok", "executionCount": 3, "value": None,
                                     "error": None, "stdout": "328350\n", "stderr": "",
                                     "displays": None, "truncated": {"stdout": 0, "stderr": 0},
                                     "warnings": [], "stateLost": False, "cause": None,
                                     "durationMs": 0.0}))
PER_CHUNK = 64


def measure(fn, ops_per_call: int, rounds: int = 400, calls: int = 50) -> tuple[float, float]:
    """(median, p99) in µs per operation over ``rounds`` timings of ``calls`` calls each."""
    for _ in range(calls * 10):
        fn()
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter_ns() - t0) / (calls * ops_per_call) / 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def main() -> None:
    dispatcher = Dispatcher()

    def cellbox_codec():
        request = dispatcher.receive(REQUEST)
        return encode_result(request.raw_id, RESULT)

    def stdlib_codec():
        request = json.loads(REQUEST)
        return json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": RESULT_DICT},
                          separators=(",", ":")).encode()

    ndjson_chunk = b"".join(REQUEST + b"\n" for _ in range(PER_CHUNK))
    lsp_chunk = b"".join(LspFramer().frame(REQUEST) for _ in range(PER_CHUNK))
    ndjson, lsp = NdjsonFramer(), LspFramer()

    def stdlib_split():
        buf = bytearray(ndjson_chunk)
        *lines, rest = buf.split(b"\n")
        return [bytes(line) for line in lines if line.strip()], rest

    assert cellbox_codec().startswith(b'{"jsonrpc":"2.0","id":42,"result":{"status":"ok"')
    assert len(ndjson.feed(ndjson_chunk)) == PER_CHUNK == len(lsp.feed(lsp_chunk))

    rows = [
        (f"decode+encode {len(REQUEST)}-byte eval request", "cellbox (msgspec)",
         measure(cellbox_codec, 1)),
        ("", "stdlib json", measure(stdlib_codec, 1)),
        ("NDJSON framing, per message", "cellbox NdjsonFramer",
         measure(lambda: ndjson.feed(ndjson_chunk), PER_CHUNK)),
        ("", "bytearray.split baseline", measure(stdlib_split, PER_CHUNK)),
        ("LSP framing, per message", "cellbox LspFramer",
         measure(lambda: lsp.feed(lsp_chunk), PER_CHUNK)),
    ]
    print(f"Python {sys.version.split()[0]} ({platform.python_implementation()}) on "
          f"{platform.node()} {platform.machine()} {platform.processor() or ''} "
          f"{os.cpu_count()} CPUs, {platform.platform()}")
    print(f"{'what':44} {'implementation':26} {'median µs':>10} {'p99 µs':>10}")
    for what, impl, (median, p99) in rows:
        print(f"{what:44} {impl:26} {median:10.3f} {p99:10.3f}")


if __name__ == "__main__":
    main()
