"""The zygote: a pre-imported, single-threaded template process that forks session children.

Theory of operation: the supervisor starts this module once with a SOCK_SEQPACKET control
socket on fd 3. The zygote imports what every child needs (asyncio, msgspec, the executor) and
nothing user-visible, announces itself, then serves ``Spawn`` requests: each carries the new
child's environment and, as SCM_RIGHTS, its four descriptors (stdin, stdout, stderr, channel).
For each request the zygote forks an intermediate process, which forks the child and exits at
once; the orphaned child is adopted by the supervisor (a subreaper), so the supervisor reaps it
and its death signal watches the supervisor, exactly as for a child the supervisor spawned
itself. ``rechannel`` is the one place that turns a fork into a session child: own process
group, death signal, descriptors in place, environment, fresh random state. A live session's
checkpoint/fork will reuse it.

Invariants: the zygote never starts a thread or an event loop (a fork must copy one thread and
no loop state); one request is answered before the next is read; a failed fork is answered
with pid 0, never with silence.
"""

from __future__ import annotations

import os
import signal
import socket
import sys

from cellbox.child import contain, signals

CONTROL_FD = 3


def rechannel(fds: list[int], env: dict[str, str], supervisor: int, *, contained: bool = False) -> None:
    """Turn this freshly forked process into a session child of ``supervisor``.

    ``fds`` are stdin, stdout, stderr and the channel; they land on 0, 1, 2 and 3, where
    ``cellbox.child.main`` expects them. Waits until the process has been adopted by
    ``supervisor`` before setting the death signal (set earlier, it would fire when the
    intermediate parent exits). A ``contained`` child's parent is its namespace's init
    (pid 1), which watches the supervisor for it.
    """
    os.setsid()  # its own session and process group, and no controlling terminal to type into
    while not contained and os.getppid() != supervisor:
        if os.getppid() == 1:  # no subreaper adopted us: the supervisor is gone
            os._exit(70)
        os.sched_yield()
    for target, fd in enumerate(fds):
        if fd != target:
            os.dup2(fd, target)
    for fd in fds:
        if fd > 3:
            os.close(fd)
    signals.reset()  # the zygote ignores SIGINT; a child starts like a fresh interpreter
    os.environ.clear()
    os.environ.update(env)
    os.environ["CELLBOX_PARENT"] = "1" if contained else str(supervisor)


def serve(control: socket.socket, supervisor: int) -> None:
    from cellbox.protocol import channel as ch

    decoder = ch.ChannelReader(to_child=True)
    control.sendall(ch.encode(ch.Spawned(pid=os.getpid())))
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(control, 1 << 20, 8)
        except InterruptedError:
            continue
        if not data:
            os._exit(0)  # the supervisor is gone
        msgs = decoder.feed(data)
        for msg in msgs:
            if isinstance(msg, ch.Spawn) and len(fds) == 5:
                _fork(control, fds, msg, supervisor)
            else:
                control.sendall(ch.encode(ch.Spawned(pid=0)))
        for fd in fds:
            os.close(fd)


def _fork(control: socket.socket, fds: list[int], msg, supervisor: int) -> None:
    from cellbox.protocol import channel as ch

    try:
        middle = os.fork()
    except OSError:
        control.sendall(ch.encode(ch.Spawned(pid=0)))
        return
    if middle == 0:
        contain.join(msg.cgroup)  # everything forked from here on is in the session's cgroups
        try:
            pidfd = contain.enter(supervisor, msg.strict) if msg.contain or msg.strict else None
        except OSError as exc:  # a strict child cannot be made: say why, never make a weaker one
            try:
                control.sendall(ch.encode(ch.Spawned(pid=0, error=f"strict isolation: {exc}")))
            finally:
                os._exit(0)
        try:
            child = os.fork()
        except OSError:
            child = -1
        if child == 0:
            control.close()
            *fds, status = fds
            if pidfd is not None:  # pid 1 of the session's namespace: returns in its child
                contain.become_init(pidfd, status, keep=fds, strict=msg.strict)
            else:
                os.close(status)
            rechannel(fds, msg.env, supervisor, contained=pidfd is not None)
            if msg.argv:  # a fresh interpreter, in the namespace
                try:
                    os.execve(msg.argv[0], msg.argv, os.environ)
                finally:
                    os._exit(127)
            from cellbox.child.main import main, set_name

            set_name("cellbox-warm")  # until a session configures it

            main()
            os._exit(0)
        try:
            control.sendall(ch.encode(ch.Spawned(pid=max(child, 0), contained=pidfd is not None)))
        finally:
            os._exit(0)
    os.waitpid(middle, 0)


def main() -> None:
    signals.reset()  # first: a mask or SIG_IGN its parent left would pass to every child
    supervisor = int(os.environ.get("CELLBOX_PARENT", "0") or 0)
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        if supervisor and os.getppid() != supervisor:
            os._exit(70)
    from cellbox.child.main import set_name

    set_name("cellbox-zygote")
    control = socket.socket(fileno=os.dup(CONTROL_FD))
    os.close(CONTROL_FD)
    control.set_inheritable(False)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # What every child needs, imported once here and shared copy-on-write.
    import ctypes  # noqa: F401
    import getpass  # noqa: F401
    import resource  # noqa: F401
    import select  # noqa: F401
    import types  # noqa: F401
    import asyncio  # noqa: F401
    import asyncio.base_events  # noqa: F401
    import asyncio.selector_events  # noqa: F401
    import asyncio.unix_events  # noqa: F401

    import cellbox.child.executor  # noqa: F401
    import cellbox.child.main  # noqa: F401
    import cellbox.child.limits  # noqa: F401
    import cellbox.child.richrepr  # noqa: F401
    import cellbox.child.errors  # noqa: F401
    import cellbox.child.figures  # noqa: F401

    # Move everything imported so far out of the collector's reach: a child's collections then
    # never write to these pages, so they stay shared with the zygote (copy-on-write).
    import gc

    gc.collect()
    gc.freeze()
    serve(control, supervisor)


if __name__ == "__main__":
    main()
