"""Kernel containment of a session: its own PID namespace, with a small init as its pid 1.

Theory of operation: the zygote's intermediate process calls ``enter``, which opens a pidfd
of the supervisor and unshares a new PID namespace and mount namespace; the next process it
forks is pid 1 of the new namespace and runs ``become_init``: it mounts a ``/proc`` of its
own (the session sees only its own processes, never the supervisor or other sessions), forks
the session child (pid 2), and then only waits. It reaps every process the kernel hands it
(orphans of the session are reparented to it), and it exits when the session child exits,
after writing the child's wait status to the status pipe, or when the supervisor's pidfd says
the supervisor is gone. When pid 1 of a namespace exits the kernel kills every process left
in it, so nothing a session started outlives it: not a double fork, not ``setsid``, not an
emptied environment. The supervisor kills a session by SIGKILLing its init.

Invariants: init never runs user code and never touches the channel; it holds only the
supervisor's pidfd, the status pipe and a wake-up pipe; whatever happens to the session child,
init writes at most one status and then exits.
"""

from __future__ import annotations

import os
import select
import signal
from typing import Any

from cellbox.child import kernel
from cellbox.protocol.channel import STATUS

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWIPC = 0x08000000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
MS_REC, MS_PRIVATE = 1 << 14, 1 << 18


def enter(supervisor: int, strict: Any = None) -> int | None:
    """In the zygote's intermediate process: a pidfd of ``supervisor``, then new PID and
    mount namespaces for the next fork. None if that fails (the child is then not contained).
    ``strict`` (a ``channel.Strict``): also the strict layers' ids and namespaces; their
    failure raises ``OSError``."""
    if strict is not None:
        from cellbox.child import strict as layers

        pidfd = os.pidfd_open(supervisor)
        try:
            layers.become_unprivileged(strict.uid, strict.gid, strict.network)
        except BaseException:
            os.close(pidfd)
            raise
        return pidfd
    try:
        pidfd = os.pidfd_open(supervisor)
    except OSError:
        return None
    uid, gid = os.geteuid(), os.getegid()
    try:
        # Not root: a user namespace of its own, with the same ids, is what lets it have the rest.
        # Its own System V IPC too: shared memory a session makes dies with it.
        kernel.check(kernel.libc().unshare(CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | (CLONE_NEWUSER if uid else 0)), "unshare")
        if uid:
            kernel.map_ids(uid, uid, gid, gid)
    except OSError:
        os.close(pidfd)
        return None
    return pidfd


def join(cgroup: list[str]) -> None:
    """Join the cgroups whose ``cgroup.procs`` files are listed (children follow)."""
    for path in cgroup:
        try:
            with open(path, "w") as f:
                f.write("0")
        except OSError as exc:
            os.write(2, f"cellbox: could not join {path}: {exc}\n".encode())


def become_init(pidfd: int, status_fd: int, keep: list[int], strict: Any = None) -> None:
    """In pid 1 of the new namespace: set up, fork the session child and return in it; the
    init itself never returns. ``keep`` are the descriptors the child needs (stdin, stdout,
    stderr, channel: init closes its own copies of them); ``strict``: see ``enter``."""
    libc = kernel.libc()
    libc.prctl(15, b"cellbox-init", 0, 0, 0)  # PR_SET_NAME, first: it is not the zygote
    try:
        kernel.check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "making mounts private")
        kernel.check(libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None), "mounting /proc")
        if os.path.isdir("/sys/fs/cgroup"):  # its cgroups are not its to leave or change
            kernel.check(libc.mount(b"tmpfs", b"/sys/fs/cgroup", b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, b"mode=555"),
                   "hiding /sys/fs/cgroup")
        if strict is not None:
            from cellbox.child import strict as layers

            layers.build_view(strict.workdir, strict.network)
    except OSError as exc:
        if strict is not None:  # never weaker than asked: the child's stderr says why
            _fail(keep[2], f"strict isolation: {exc}")
        os.write(2, f"cellbox: containment: {exc}\n".encode())
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    child = os.fork()
    if child == 0:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in (pidfd, status_fd, wake_r, wake_w):
            os.close(fd)
        try:
            if strict is not None:
                from cellbox.child import strict as layers

                layers.lock_down(strict.workdir)
            else:
                kernel.drop_capabilities(ESCAPES)
        except OSError as exc:
            _fail(keep[2], f"{'strict isolation' if strict else 'containment'}: {exc}")
        return
    if os.geteuid() == 0 or strict is not None:  # (a server not root could not read it either)
        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: its /proc/1/* are out of the session's reach
    for fd in keep:
        os.close(fd)
    _wait(child, pidfd, status_fd, wake_r)


#: Capabilities a contained root child gives up for good (bounding set too): they would let it
#: leave its namespaces (unmount its /proc, mount cgroupfs), trace init or load modules.
ESCAPES = (16, 17, 19, 21, 22, 32, 33, 38, 39)  # SYS_MODULE, SYS_RAWIO, SYS_PTRACE, SYS_ADMIN,
# SYS_BOOT, MAC_OVERRIDE, MAC_ADMIN, PERFMON, BPF


def _fail(stderr: int, text: str) -> None:
    """End this process, saying why on the session child's stderr (the supervisor shows it)."""
    try:
        os.write(stderr, (text + "\n").encode())
    finally:
        os._exit(1)


def _wait(child: int, pidfd: int, status_fd: int, wake_r: int) -> None:
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    while True:
        while True:  # reap everything the kernel handed us
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = 0
            if pid == 0:
                break
            if pid == child:
                try:
                    os.write(status_fd, STATUS.pack(status))
                finally:
                    os._exit(0)  # the kernel kills what is left in the namespace
        for fd, _ in poller.poll(1000):
            if fd == pidfd:
                os._exit(0)  # the supervisor is gone: so is the session
            try:
                os.read(wake_r, 512)
            except BlockingIOError:
                pass
