"""``cellbox serve | console | schema | doctor`` (also ``python -m cellbox``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys


def _nonneg_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _pos_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cellbox", description="Run Python cells for other programs.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="JSON-RPC server on stdio (NDJSON or Content-Length)")
    serve.add_argument("--framing", choices=["ndjson", "lsp"], default=None, help="default: detect")
    serve.add_argument("--max-sessions", type=_pos_int, default=512)
    serve.add_argument("--timeout", type=_nonneg_float, default=600.0, help="default eval timeout, s (0: none)")
    serve.add_argument("--kill-grace", type=_nonneg_float, default=2.0, help="s between interrupt and kill")
    serve.add_argument("--memory-mb", type=_pos_int, default=None, help="address-space limit per child")
    serve.add_argument("--cpu-seconds", type=_pos_int, default=None, help="CPU time per child")
    serve.add_argument("--output-bytes", type=_pos_int, default=1 << 20, help="output cap per eval and stream")
    serve.add_argument(
        "--ast-cache-size", type=int, default=None, help="parsed-cell LRU size (0 disables; env CELLBOX_AST_CACHE_SIZE)"
    )
    serve.add_argument("--no-zygote", action="store_true", help="start every child as a fresh interpreter")
    serve.add_argument("--warm", type=int, default=2, help="children kept started ahead of sessions (0: none)")
    serve.add_argument("--isolation", choices=["process", "strict"], default="process",
                       help="the default isolation of sessions (see `cellbox doctor`)")
    serve.add_argument("--no-containment", action="store_true",
                       help="do not give each session a PID namespace of its own (see `cellbox doctor`)")
    serve.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])

    console = sub.add_parser("console", help="interactive terminal REPL through the server")
    console.add_argument("--timeout", type=_nonneg_float, default=0.0, help="per-cell timeout, s (0: none)")

    sub.add_parser("schema", help="print the JSON Schema of every method")
    doctor = sub.add_parser("doctor", help="what this host lets cellbox do to contain sessions")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("bench", help="benchmarks beside Jupyter (from a source checkout; see bench/README.md)")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # ``cellbox schema | head``: the reader left; end quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "bench":  # bench passes its own flags on to python -m bench
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "serve":
        return _serve(args)
    if args.command == "schema":
        import json

        from cellbox.protocol.schema import schema

        print(json.dumps(schema(), indent=2))
        return 0
    if args.command == "doctor":
        from cellbox.doctor import main as doctor_main

        return doctor_main(as_json=args.json)
    if args.command == "bench":
        try:
            from bench.runner import main as bench_main
        except ImportError:
            print("cellbox bench runs from a source checkout: cd into it and run python -m bench", file=sys.stderr)
            return 2
        return bench_main(extra)
    if args.command == "console":
        from cellbox.console import run_console

        return run_console(timeout=args.timeout or None)
    return 2


def _serve(args: argparse.Namespace) -> int:
    import anyio

    from cellbox.supervisor.process import become_subreaper, clear_signal_mask, start_sentinel
    from cellbox.supervisor.server import ServeOptions, Server

    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s cellbox %(levelname)s %(message)s",
    )
    # Without the flag the child reads CELLBOX_AST_CACHE_SIZE / ASYNC_EXECUTOR_AST_CACHE_SIZE.
    cache = args.ast_cache_size
    options = ServeOptions(
        framing=args.framing,
        max_sessions=args.max_sessions,
        timeout=args.timeout,
        kill_grace=args.kill_grace,
        memory_mb=args.memory_mb,
        cpu_seconds=args.cpu_seconds,
        output_bytes=args.output_bytes,
        ast_cache_size=cache,
        zygote=not args.no_zygote,
        warm=max(0, args.warm),
        containment=not args.no_containment,
        isolation=args.isolation,
    )
    clear_signal_mask()  # a parent's blocked SIGINT would make every interrupt a kill
    become_subreaper()
    sentinel = start_sentinel()
    # Nothing but protocol bytes may reach stdout: keep the real fd for the server and point
    # Python's sys.stdout at stderr, so a stray print in the server cannot corrupt the stream.
    out_fd = os.dup(1)
    sys.stdout = sys.stderr
    try:
        return anyio.run(Server(options).serve, 0, out_fd)
    finally:
        sentinel.stop()
