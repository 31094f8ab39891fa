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

_DEFAULT = (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP, signal.SIGQUIT)


def reset() -> None:
    """Unblock every signal of the calling thread and set the dispositions above. Call on the
    main thread (``signal.signal`` requires it) before any other thread exists."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for sig in _DEFAULT:
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.default_int_handler)
