"""Child processes: spawning, killing whole trees, reaping, and naming why a child died.

Invariants:
- Every child runs in its own process group and has ``PR_SET_PDEATHSIG`` set (by itself, at
  start, against the supervisor's main thread, which spawned it).
- The supervisor is a subreaper: descendants that lose their parent (a double fork, a child
  that died) reparent here, where the ``Reaper`` reaps them. They carry the session's marker in
  their environment (``CELLBOX_SESSION``) and are found by ``orphans``; live descendants are
  found by walking the child's tree.
- A sentinel process (``start_sentinel``) kills whatever carries the server's marker once the
  supervisor is gone, however it died.
- Children start with no signal blocked and default dispositions (``SPAWN_SIGDEF``), whatever
  the server inherited.
- Only the ``Reaper`` calls ``waitpid``; a pid is never signalled after it was reaped (a zombie
  keeps its pid, so signalling before reaping is safe).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterable
from typing import NamedTuple

log = logging.getLogger("cellbox.supervisor")

PR_SET_CHILD_SUBREAPER = 36
CAP_SYS_ADMIN = 21
MARKER = "CELLBOX_SESSION"
SERVER_MARKER = "CELLBOX_SERVER"

_libc: ctypes.CDLL | None = None

#: Signals a spawned child gets with their default disposition, whatever the supervisor does
#: with them. Pass ``setsigdef=SPAWN_SIGDEF, setsigmask=()`` to every ``posix_spawn``: a mask
#: is inherited through exec, and a child with SIGINT blocked turns every interrupt into a kill.
SPAWN_SIGDEF = (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGCHLD, signal.SIGHUP, signal.SIGQUIT)


class Started(NamedTuple):
    """A child as a launcher started it: its pid (its init's, if it is contained in a PID
    namespace), its channel, its stdout and stderr pipes, and a contained child's status
    pipe (where its init writes the child's wait status)."""

    pid: int
    sock: socket.socket
    out_r: int
    err_r: int
    status_r: int | None = None


def clear_signal_mask() -> None:
    """Unblock every signal in this thread (call at server start, before any thread or child
    exists): the mask is inherited from whoever started the server, and children inherit ours."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def spawn_python(module: str, env: dict[str, str], file_actions: list[tuple]) -> int:
    """The supervisor's one ``posix_spawn``: ``python -c`` running ``module.main()`` in its own
    process group, with an empty signal mask and default dispositions (``SPAWN_SIGDEF``)."""
    return os.posix_spawn(
        sys.executable,
        [sys.executable, "-c", boot_code(module)],
        env,
        file_actions=file_actions,
        setsid=True,  # its own session (so its own process group) and no controlling terminal
        setsigdef=SPAWN_SIGDEF,
        setsigmask=(),
    )


#: The directory that holds the ``cellbox`` package, put on a child's ``sys.path`` if missing.
BOOT_PATH = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def boot_code(module: str) -> str:
    """``python -c`` code that runs ``module.main()`` with ``sys.path`` as a user expects."""
    return (
        "import sys\n"
        f"p = {BOOT_PATH!r}\n"
        "sys.argv = ['']\n"
        "if p not in sys.path: sys.path.append(p)\n"
        "del p\n"
        f"from {module} import main\n"
        "main()\n"
    )


def _prctl(option: int, arg: int | bytes) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    _libc.prctl(option, arg, 0, 0, 0)


def become_subreaper() -> None:
    """Make orphaned descendants of this process reparent to it instead of init."""
    if sys.platform.startswith("linux"):
        _prctl(PR_SET_CHILD_SUBREAPER, 1)


class Sentinel:
    """The supervisor's handle on its sentinel process (see ``start_sentinel``)."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self._fd = fd

    def stop(self) -> None:
        """At a clean exit: let the sentinel do its last sweep now, and reap it."""
        os.close(self._fd)
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass  # already reaped by the supervisor's reaper


def workdir_prefix(server: int | None = None) -> str:
    """The name prefix of the fresh work directories of the server ``server`` (default: this one)."""
    return f"cellbox-{server or os.getpid()}-"


def remove_workdirs(server: int) -> None:
    """Remove the fresh work directories a dead server ``server`` left."""
    import shutil
    import tempfile

    root = tempfile.gettempdir()
    try:
        names = [n for n in os.listdir(root) if n.startswith(workdir_prefix(server))]
    except OSError:
        return
    for name in names:
        path = os.path.join(root, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)


def start_sentinel() -> Sentinel:
    """Fork a process that outlives this one to kill whatever it leaves behind.

    ``PR_SET_PDEATHSIG`` kills a child when the supervisor dies, even by SIGKILL, but not the
    child's own descendants. The sentinel holds the read end of a pipe whose write end only the
    supervisor keeps; when the supervisor dies, the read returns end-of-file and the sentinel
    kills every process whose environment carries this server's marker, then removes the
    server's cgroups and fresh work directories. Call it once, early,
    while the process is single-threaded. It also sets the marker in ``os.environ``.
    """
    server = os.getpid()
    marker = f"{server}-{os.urandom(6).hex()}"
    os.environ[SERVER_MARKER] = marker
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(r)
        os.set_inheritable(w, False)
        return Sentinel(pid, w)
    try:
        os.close(w)
        os.setsid()
        _prctl(15, b"cellbox-sentry")  # PR_SET_NAME: tell it apart in ps
        for fd in (0, 1):
            devnull = os.open(os.devnull, os.O_RDWR)
            os.dup2(devnull, fd)
            os.close(devnull)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            try:
                if not os.read(r, 1):
                    break
            except InterruptedError:
                continue
        needle = f"{SERVER_MARKER}={marker}".encode()
        for _ in range(5):
            found = [p for p in _all_pids() if p != os.getpid() and _has_marker(p, needle)]
            if not found:
                break
            for p in found:
                _signal(p, signal.SIGSTOP)
            for p in found:
                _signal(p, signal.SIGKILL)
        # What the server would have removed at its exit: its cgroups and work directories.
        from cellbox.supervisor import cgroups

        cgroups.remove_server_groups(server)
        remove_workdirs(server)
    finally:
        os._exit(0)


def _all_pids() -> list[int]:
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(x) for x in f.read().split())
        except OSError:
            pass
    return out


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (not ``pid`` itself), parents before children."""
    seen: list[int] = []
    stack = [pid]
    while stack:
        for child in _children(stack.pop()):
            if child not in seen:
                seen.append(child)
                stack.append(child)
    return seen


def _has_marker(pid: int, marker: bytes) -> bool:
    return marker in _environ(pid)


def _environ(pid: int) -> list[bytes]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def child_marker(session_id: str) -> str:
    """A marker value for one child of ``session_id``: its descendants carry it (unless they
    empty their environment), which tells them from those of the session's other children."""
    return f"{session_id}.{os.urandom(4).hex()}"


def process_name(session_id: str) -> str:
    """The name (``comm``) a session's child gives itself; forks without exec keep it."""
    return f"cbx{session_id}"[:15]


def orphans(marker: str, known: Iterable[int]) -> list[int]:
    """Processes reparented to this supervisor that a child left: their environment carries
    its ``marker`` (``child_marker``), or carries no marker and their name is its session's
    process name (an emptied environment). A process marked by another child is not one."""
    if not marker:
        return []
    entry = f"{MARKER}={marker}".encode()
    prefix = f"{MARKER}=".encode()
    name = process_name(marker.split(".")[0])
    skip = set(known)
    found = []
    for p in _children(os.getpid()):
        if p in skip:
            continue
        environ = _environ(p)
        if entry in environ or (_comm(p) == name and not any(e.startswith(prefix) for e in environ)):
            found.append(p)
    return found


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def kill_tree(roots: Iterable[int]) -> None:
    """SIGKILL ``roots``, their process groups and every descendant.

    Descendants are stopped first (SIGSTOP, rescanning until no new ones appear) so none can
    fork a new process between the scan and the kill. Safe to call on pids that have exited but
    are not reaped yet; never call it on a reaped pid.
    """
    roots = list(roots)
    found: list[int] = []
    for _ in range(20):
        new = [d for r in roots for d in descendants(r) if d not in found]
        if not new:
            break
        for pid in new:
            _signal(pid, signal.SIGSTOP)
        found.extend(new)
    for pid in roots:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        _signal(pid, signal.SIGKILL)
    for pid in found:
        _signal(pid, signal.SIGKILL)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass


def rss_bytes(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def child_of_init(init: int) -> int | None:
    """The pid of a contained session's child: the one child of its ``init``, seen from
    this (the supervisor's) PID namespace."""
    try:
        with open(f"/proc/{init}/task/{init}/children") as f:
            pids = [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return None
    return pids[0] if pids else None


def containment_unavailable() -> str | None:
    """Why sessions cannot be contained in PID namespaces here (None: they can)."""
    if not sys.platform.startswith("linux"):
        return "not Linux"
    if not os.path.exists("/proc/self/ns/pid"):
        return "the kernel has no PID namespaces"
    if not hasattr(os, "pidfd_open"):
        return "no pidfd_open (Linux 5.3 or newer is needed)"
    try:
        with open("/proc/self/status") as f:
            caps = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError):
        return "cannot read this process's capabilities"
    if not caps & (1 << CAP_SYS_ADMIN):
        # Not root: a user namespace of its own gives a session its PID namespace.
        blocked = _userns_blocked()
        if blocked is not None:
            return f"not root, and no user namespaces for other users ({blocked})"
    return None


def _userns_blocked() -> str | None:
    """The setting that keeps users other than root from creating user namespaces, if any."""
    for path, what in (("/proc/sys/user/max_user_namespaces", "user.max_user_namespaces is 0"),
                       ("/proc/sys/kernel/unprivileged_userns_clone", "kernel.unprivileged_userns_clone is 0")):
        try:
            with open(path) as f:
                if f.read().strip() == "0":
                    return what
        except OSError:
            pass
    return None


def strict_missing(zygote: bool) -> list[str]:
    """The layers ``isolation: "strict"`` needs that this host (or server) lacks, each with
    why; empty when strict sessions can be made."""
    missing = []
    why = containment_unavailable()
    if why is not None:
        missing.append(f"pidns ({why})")
    if os.geteuid() != 0:
        missing.append("root (a strict session runs as an unprivileged id of its own)")
    if not zygote:
        missing.append("zygote (--no-zygote was given)")
    blocked = _userns_blocked()
    if blocked is not None:
        missing.append(f"userns ({blocked})")
    if os.uname().machine != "x86_64":
        missing.append(f"seccomp (no filter table for {os.uname().machine})")
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        if libc.syscall(444, None, 0, 1) < 1:  # landlock_create_ruleset: ABI version
            missing.append("landlock (not enabled in this kernel)")
    except (OSError, AttributeError):
        missing.append("landlock (cannot ask the kernel)")
    blocked = _unreadable_for_others([sys.base_prefix, BOOT_PATH])
    if blocked:
        missing.append(f"a Python an unprivileged user can read ({blocked} is not world-readable)")
    return missing


def _unreadable_for_others(paths: list[str]) -> str | None:
    """The first directory on the way to one of ``paths`` that other users cannot enter."""
    for path in paths:
        current = "/"
        for part in os.path.abspath(path).split("/")[1:]:
            current = os.path.join(current, part)
            try:
                if not os.stat(current).st_mode & 0o001:
                    return current
            except OSError:
                return current
    return None


LEASES = "/run/cellbox/ids"  # one locked file per id in use, host-wide


def lease_id(base: int, span: int = 1 << 20) -> tuple[int, int]:
    """An id in ``[base, base + span)`` that no other session on this host holds: its file
    under ``LEASES`` locked by the returned descriptor, which holds it until closed (or this
    process dies). Raises ``OSError`` if none is free."""
    import fcntl

    root = LEASES if os.access(os.path.dirname(os.path.dirname(LEASES)), os.W_OK) else os.path.join(
        "/tmp", f"cellbox-ids-{os.geteuid()}")
    os.makedirs(root, mode=0o700, exist_ok=True)
    start = int.from_bytes(os.urandom(4), "little") % span
    for i in range(span):
        candidate = base + (start + i) % span
        fd = os.open(os.path.join(root, str(candidate)), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return candidate, fd
    raise OSError("no free id for a strict session")
