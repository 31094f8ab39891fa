"""The signal state a child (and the zygote) starts from, whatever its parent left it.

A parent that blocks SIGINT (a server started from a thread, a Ray actor) or ignores it hands
that on through fork and exec: the child would never see the supervisor's wake-up and every
interrupt would end in a kill. ``reset()`` runs first thing and gives the process the state a
fresh ``python`` has: no signal blocked; SIGINT raising ``KeyboardInterrupt``; SIGPIPE ignored
(a write to a closed pipe raises ``BrokenPipeError``, as Python arranges at startup);
SIGTERM, SIGCHLD, SIGHUP and SIGQUIT at their defaults.
"""

from __future__ import annotations

import signal
import threading

_DEFAULT = (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP, signal.SIGQUIT)


def reset() -> None:
    """Unblock every signal of the calling thread and set the dispositions above. Call on the
    main thread (``signal.signal`` requires it) before any other thread exists."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for sig in _DEFAULT:
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def start_blocked(thread: threading.Thread) -> None:
    """Start ``thread`` with every signal blocked (it inherits the mask). The kernel delivers a
    process-directed signal to any thread that does not block it; one delivered to a helper
    thread would leave the main thread asleep in a system call (``time.sleep``, a ``recv``)
    instead of waking it to run the handler, and the interrupt would end in a kill."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
