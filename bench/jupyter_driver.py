"""The Jupyter peer: an ipykernel started by jupyter_client's ``KernelManager`` and driven by a
``BlockingKernelClient``, the way notebook front ends and nbclient drive one.

A cell counts as finished, as in ``execute_interactive`` and nbclient, when its
``execute_reply`` has arrived on the shell channel *and* the kernel has published
``status: idle`` for it on IOPub (so all of its output has reached the client). IOPub is read
first (output streams there while the cell runs; the reply waits in its socket), then the
shell. Interrupts use ``km.interrupt_kernel()`` (SIGINT to the kernel). Code that ignores the
interrupt never returns in Jupyter: ``finish`` takes a deadline and returns None instead of
hanging.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from queue import Empty
from typing import Any


class JupyterKernel:
    """One kernel and its client. ``start()`` returns once the kernel answered
    ``kernel_info`` (``wait_for_ready``)."""

    def __init__(self, transport: str = "tcp") -> None:
        """``transport="ipc"`` puts the kernel's sockets on Unix socket files: for starting
        many kernels at once, where TCP ports chosen by jupyter_client can collide."""
        from jupyter_client import KernelManager

        self.km = KernelManager(kernel_name="python3", transport=transport)
        if transport == "ipc":
            import tempfile

            self._ipc_dir = tempfile.mkdtemp(prefix="cellbox-bench-ipc-")
            self.km.ip = os.path.join(self._ipc_dir, "kernel")
        self.kc: Any = None

    def start(self, ready_timeout: float = 60.0) -> JupyterKernel:
        self.km.start_kernel(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def connect(self, ready_timeout: float = 60.0, settle: bool = True) -> JupyterKernel:
        """Start the channels and wait for ``kernel_info``. With ``settle``, also run empty
        cells until one's IOPub ``idle`` arrives: ``wait_for_ready`` does not wait for the IOPub
        subscription, and messages published before it is live are lost (ZeroMQ's "slow
        joiner"), which would leave a later wait for a cell's output hanging."""
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=ready_timeout)
        if settle:
            for _ in range(20):
                msg_id = self.send("")
                if self.finish(msg_id, timeout=1.0) is not None:
                    break
            else:
                raise RuntimeError("the kernel's IOPub never delivered an idle status")
        return self

    @property
    def pid(self) -> int:
        return self.km.provisioner.pid  # type: ignore[union-attr]

    def send(self, code: str) -> str:
        """Send ``execute_request``; return its msg_id (answer with ``finish``)."""
        return self.kc.execute(code)

    def finish(self, msg_id: str, timeout: float | None = None,
               on_iopub: Callable[[dict], None] | None = None) -> dict | None:
        """Wait until the cell ``msg_id`` is finished (IOPub idle, then its reply); return the
        reply's content, or None if that did not happen within ``timeout`` seconds."""
        deadline = None if timeout is None else time.perf_counter() + timeout

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.perf_counter())

        get_iopub = self.kc.iopub_channel.get_msg
        try:
            while True:
                msg = get_iopub(timeout=left())
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                if on_iopub is not None:
                    on_iopub(msg)
                if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    break
            get_shell = self.kc.shell_channel.get_msg
            while True:
                reply = get_shell(timeout=left())
                if reply["parent_header"].get("msg_id") == msg_id:
                    return reply["content"]
        except Empty:
            return None

    def finish_reply(self, msg_id: str, timeout: float = 30.0) -> dict | None:
        """Consume the shell reply to ``msg_id`` (when IOPub was already read to its idle)."""
        try:
            while True:
                reply = self.kc.shell_channel.get_msg(timeout=timeout)
                if reply["parent_header"].get("msg_id") == msg_id:
                    return reply["content"]
        except Empty:
            return None

    def execute(self, code: str, timeout: float | None = 60.0,
                on_iopub: Callable[[dict], None] | None = None) -> dict:
        content = self.finish(self.send(code), timeout, on_iopub)
        if content is None:
            raise TimeoutError(f"Jupyter did not finish {code!r} within {timeout} s")
        return content

    def interrupt(self) -> None:
        self.km.interrupt_kernel()

    def shutdown(self) -> None:
        """Stop the channels and kill the kernel; never leaves the kernel process running
        (a kernel spinning in C ignores everything but SIGKILL)."""
        proc = getattr(self.km.provisioner, "process", None)  # the kernel's Popen
        try:
            if self.kc is not None:
                self.kc.stop_channels()
            self.km.shutdown_kernel(now=True)
        except Exception:
            pass
        if proc is not None and proc.poll() is None:
            proc.kill()  # Popen never signals a process it has already reaped
            proc.wait()
        try:
            self.km.cleanup_resources()
        except Exception:
            pass
        if getattr(self, "_ipc_dir", None):
            import shutil

            shutil.rmtree(self._ipc_dir, ignore_errors=True)

    def __enter__(self) -> JupyterKernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def start_kernel() -> JupyterKernel:
    """A started and connected kernel."""
    return JupyterKernel().start().connect()
