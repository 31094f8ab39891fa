"""``Sandbox``: one cellbox session driven from synchronous code.

For scripts and agent frameworks that are not async::

    with cellbox.Sandbox(timeout=30) as sb:
        sb.run("x = 41")
        sb.run("x + 1").value.repr          # '42'

Theory of operation: an anyio event loop runs in a background thread
(``anyio.from_thread.start_blocking_portal``) and holds the async client (``connect()``) and
one session; every method hands a coroutine to that loop and blocks until it is done. The
methods are thread-safe: ``interrupt()`` from another thread stops a ``run()`` in progress.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from contextlib import ExitStack
from functools import partial
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal

from cellbox.client import Client, OnOutput, Session, connect
from cellbox.protocol import messages as m

__all__ = ["Sandbox"]


class Sandbox:
    """A cellbox server with one session, for synchronous code.

    - ``serve_args``: flags for ``cellbox serve`` (e.g. ``"--memory-mb", "1024"``).
    - ``timeout``: the session's default per-run timeout in seconds (None: the server's,
      600 s; ``0``: none).
    - ``name``, ``cwd``, ``env``, ``limits``, ``detection``: as for
      ``Client.create_session`` (``env`` is the session's; ``server_env`` the server's).

    The server starts on ``with`` (or ``start()``, or the first call) and stops on
    ``close()`` or at the end of the ``with`` block; nothing it started outlives it.
    A Sandbox that was closed cannot be started again.
    """

    def __init__(
        self,
        *serve_args: str,
        timeout: float | None = None,
        name: str | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        limits: m.Limits | Mapping[str, Any] | None = None,
        detection: m.DetectionPolicy | Mapping[str, Any] | None = None,
        server_env: Mapping[str, str] | None = None,
    ) -> None:
        self._serve_args = serve_args
        self._server_env = server_env
        limits_dict: dict[str, Any] = {}
        if isinstance(limits, m.Limits):
            limits_dict = {f: getattr(limits, f) for f in limits.__struct_fields__ if getattr(limits, f) is not None}
        elif limits is not None:
            limits_dict = dict(limits)
        if timeout is not None:
            limits_dict["timeout"] = timeout
        self._session_options = dict(name=name, cwd=cwd, env=env, limits=limits_dict or None, detection=detection)
        self._lock = threading.Lock()
        self._stack: ExitStack | None = None
        self._portal: BlockingPortal | None = None
        self._client: Client | None = None
        self._session: Session | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Start the server and the session (done for you by ``with`` and the first call)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("this Sandbox is closed")
            if self._session is not None:
                return self
            stack = ExitStack()
            try:
                portal = stack.enter_context(start_blocking_portal())
                client = stack.enter_context(
                    portal.wrap_async_context_manager(connect(*self._serve_args, env=self._server_env))
                )
                session = portal.call(partial(client.create_session, **self._session_options))
            except BaseException:
                stack.close()
                raise
            self._stack, self._portal, self._client, self._session = stack, portal, client, session
            return self

    def close(self) -> None:
        """Stop the server: every process it started is gone when this returns. Idempotent."""
        with self._lock:
            self._closed = True
            stack, self._stack = self._stack, None
            self._portal = self._client = self._session = None
        if stack is not None:
            stack.close()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._session is not None else "not started"
        return f"<cellbox.Sandbox {state}>"

    # -- work ------------------------------------------------------------------------------

    def run(self, code: str, timeout: float | None = None, *, on_output: OnOutput | None = None) -> m.EvalResult:
        """Run ``code`` and return its ``EvalResult`` (see ``Session.eval``).

        A failure of the code is a result: check ``status`` and ``error``. ``on_output``
        gets each output/display event as it arrives, called in the Sandbox's loop thread.
        ``input()`` in the code raises ``EOFError``. A ``KeyboardInterrupt`` while waiting
        interrupts the code on the server, then propagates. Raises ``ServerGone`` if the
        server died.
        """
        portal, session = self._ready()
        future = portal.start_task_soon(partial(session.eval, code, timeout=timeout, on_output=on_output))
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()  # cancels the eval's task, which sends $/cancelRequest
            raise

    def interrupt(self) -> bool:
        """Interrupt the code running now (from another thread); True iff there was some."""
        portal, session = self._ready()
        return portal.call(session.interrupt)

    def restart(self) -> None:
        """A fresh interpreter: every variable and import is gone."""
        portal, session = self._ready()
        portal.call(session.restart)

    @property
    def sessions(self) -> list[m.SessionInfo]:
        """The server's sessions (this Sandbox has one), with state, pid and cell count."""
        portal, _ = self._ready()
        assert self._client is not None
        return portal.call(self._client.list_sessions)

    @property
    def session(self) -> Session:
        """The async ``Session`` behind this Sandbox (use it through ``portal``)."""
        return self._ready()[1]

    @property
    def portal(self) -> BlockingPortal:
        """The portal of the Sandbox's loop, to call the async client from this thread."""
        return self._ready()[0]

    def _ready(self) -> tuple[BlockingPortal, Session]:
        if self._session is None:
            self.start()
        portal, session = self._portal, self._session
        if portal is None or session is None:
            raise RuntimeError("this Sandbox is closed")
        return portal, session
