"""A cgroup per child, so that a session's limits hold for all its processes together.

Theory of operation: at start the server looks for the cgroup v1 hierarchies of the
``memory``, ``pids`` and ``cpu`` controllers that it may write to (``/proc/self/mountinfo``
and ``/proc/self/cgroup``) and makes one directory ``cellbox-<pid>`` under its own cgroup in
each. Every child the launcher starts gets a group of its own in each hierarchy (``create``),
joined before the child runs anything of a session's: a contained child's init joins itself
before it forks the child, an uncontained one joins in ``rechannel``, and the supervisor
moves a freshly spawned interpreter before it sends ``Configure``. When a session configures
the child, its ``Limits`` are written there: ``memoryMb`` is ``memory.limit_in_bytes`` for
all the session's processes together, ``processes`` is ``pids.max`` (which also holds for
root, unlike ``RLIMIT_NPROC``), ``cpuPercent`` a CFS quota. When the child has exited,
``oom_killed`` reads the kernel's own count of OOM kills in its group (so a SIGKILL is named
``memory`` only when it was one), ``kill`` kills whatever is left in the group, and
``remove`` deletes the directories.

cgroup v2 hosts are detected and reported (``cellbox doctor``) but not used yet: a cgroup v2
server must first move itself into a leaf of its own to delegate controllers.

Invariants: a directory is created only under the server's own ``cellbox-<pid>`` directory
and removed at the latest when the server exits; a failure to write a limit fails the
session's start, never silently.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterable

log = logging.getLogger("cellbox.supervisor")

CONTROLLERS = ("memory", "pids", "cpu")
CFS_PERIOD_US = 100_000


def _v1_mounts() -> dict[str, str]:
    """Controller name -> mount point of its cgroup v1 hierarchy."""
    found: dict[str, str] = {}
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return found
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] != "cgroup":
            continue
        for option in tail[2].split(","):
            if option in CONTROLLERS:
                found.setdefault(option, fields[4])
    return found


def _own_paths() -> dict[str, str]:
    """Controller name -> this process's cgroup path in its v1 hierarchy."""
    paths: dict[str, str] = {}
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return paths
    for line in lines:
        _, names, path = line.split(":", 2)
        for name in names.split(","):
            paths[name] = path
    return paths


class ChildGroup:
    """The cgroup directories of one child (one per controller)."""

    def __init__(self, dirs: dict[str, str]) -> None:
        self.dirs = dirs

    @property
    def procs(self) -> list[str]:
        """The ``cgroup.procs`` files a process writes ``0`` to, to join the group at its
        start. Not the ``cpu`` one: a move into a v1 ``cpu`` group waits for an RCU grace
        period (10-20 ms), so a child joins it only when its session asks for ``cpuPercent``."""
        return [os.path.join(d, "cgroup.procs") for name, d in self.dirs.items() if name != "cpu"]

    def join(self, pid: int) -> None:
        for path in self.procs:
            _write(path, str(pid))

    def move(self, pid: int, controllers: list[str]) -> None:
        """Move ``pid`` into the group of each of ``controllers`` that exists (see ``procs``)."""
        for name in controllers:
            if name in self.dirs:
                _write(os.path.join(self.dirs[name], "cgroup.procs"), str(pid))

    def apply(self, memory_mb: int | None, processes: int | None, cpu_percent: int | None) -> None:
        """Write the session's limits (raises ``OSError`` if the kernel refuses one)."""
        if memory_mb is not None and "memory" in self.dirs:
            _write(os.path.join(self.dirs["memory"], "memory.limit_in_bytes"), str(memory_mb << 20))
        if processes is not None and "pids" in self.dirs:
            _write(os.path.join(self.dirs["pids"], "pids.max"), str(processes))
        if cpu_percent is not None and "cpu" in self.dirs:
            _write(os.path.join(self.dirs["cpu"], "cpu.cfs_period_us"), str(CFS_PERIOD_US))
            _write(os.path.join(self.dirs["cpu"], "cpu.cfs_quota_us"), str(CFS_PERIOD_US * cpu_percent // 100))

    def oom_killed(self) -> bool | None:
        """True if the kernel OOM-killed a process of the group (None: cannot tell)."""
        path = self.dirs.get("memory")
        if path is None:
            return None
        try:
            with open(os.path.join(path, "memory.oom_control")) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value) > 0
        except (OSError, ValueError):
            pass
        return None

    def kill(self) -> None:
        """SIGKILL every process still in the group (a process cannot leave it by forking,
        by ``setsid`` or by emptying its environment)."""
        for _ in range(10):
            pids = set(_pids(self.procs))
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    def remove(self) -> bool:
        """Delete the directories; False if one is still busy (a process is still exiting)."""
        done = True
        for path in self.dirs.values():
            try:
                os.rmdir(path)
            except FileNotFoundError:
                pass
            except OSError:
                done = False
        return done


class Cgroups:
    """This server's cgroup directories, one per controller it may use."""

    def __init__(self, bases: dict[str, str]) -> None:
        self.bases = bases
        self._count = 0

    @classmethod
    def detect(cls) -> tuple[Cgroups | None, str | None]:
        """The server's cgroups (its directories made), or None and why not."""
        why = unavailable()
        if why is not None:
            return None, why
        mounts, own = _v1_mounts(), _own_paths()
        bases: dict[str, str] = {}
        for name, mount in mounts.items():
            path = os.path.join(mount, own.get(name, "/").lstrip("/"), f"cellbox-{os.getpid()}")
            # (``_bases`` names the same directories for the sentinel.)
            try:
                os.makedirs(path, exist_ok=True)
            except OSError:
                continue
            bases[name] = path
        if not bases:
            return None, "no writable cgroup v1 hierarchy (memory, pids, cpu)" if mounts else "no cgroup v1 mounted"
        return cls(bases), None

    @property
    def controllers(self) -> list[str]:
        return sorted(self.bases)

    def create(self) -> ChildGroup:
        """A new, empty group for one child."""
        self._count += 1
        dirs = {}
        for name, base in self.bases.items():
            path = os.path.join(base, f"c{self._count}")
            try:
                os.mkdir(path)
            except FileExistsError:
                pass
            dirs[name] = path
        return ChildGroup(dirs)

    def close(self) -> None:
        """Remove what is left (at exit, once every child has been killed)."""
        for base in self.bases.values():
            _remove_base(base)


def _bases(server: int) -> list[str]:
    mounts, own = _v1_mounts(), _own_paths()
    return [os.path.join(mount, own.get(name, "/").lstrip("/"), f"cellbox-{server}") for name, mount in mounts.items()]


def remove_server_groups(server: int) -> None:
    """Kill what is left in the cgroups of the dead server ``server`` and remove them (its
    sentinel calls this)."""
    for base in _bases(server):
        if os.path.isdir(base):
            _remove_base(base)


def _remove_base(base: str) -> None:
    for entry in _subdirs(base):
        ChildGroup({"x": entry}).kill()
        for _ in range(50):  # the killed may take a moment to leave
            try:
                os.rmdir(entry)
                break
            except FileNotFoundError:
                break
            except OSError:
                import time

                time.sleep(0.02)
    try:
        os.rmdir(base)
    except OSError as exc:
        log.warning("could not remove %s: %s", base, exc)


def unavailable() -> str | None:
    """Why this process cannot give children cgroups of their own (None: it can)."""
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return "cgroup v2 only: not used yet"
    mounts, own = _v1_mounts(), _own_paths()
    if not mounts:
        return "no cgroup v1 hierarchy of memory, pids or cpu is mounted"
    for name, mount in mounts.items():
        if os.access(os.path.join(mount, own.get(name, "/").lstrip("/")), os.W_OK):
            return None
    return "the cgroup v1 hierarchies are not writable by this user"


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _pids(procs: Iterable[str]) -> list[int]:
    out = []
    for path in procs:
        try:
            with open(path) as f:
                out += [int(p) for p in f.read().split()]
        except (OSError, ValueError):
            pass
    return out


def _subdirs(base: str) -> list[str]:
    try:
        return [e.path for e in os.scandir(base) if e.is_dir()]
    except OSError:
        return []
