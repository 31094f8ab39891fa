"""``cellbox doctor``: what this host lets cellbox do to contain sessions, for a person.

It reports the same containment as ``initialize`` (``capabilities.cellbox.isolation``) and,
for each kernel mechanism cellbox uses or may use, whether it is there and, if not, why.
Nothing here changes the system: it reads ``/proc`` and ``/sys`` and asks the kernel.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from typing import NamedTuple

from cellbox.supervisor import cgroups, process


class Check(NamedTuple):
    name: str
    ok: bool
    detail: str
    used: str  # what cellbox does with it


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _cgroups() -> Check:
    why = cgroups.unavailable()
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        controllers = _read("/sys/fs/cgroup/cgroup.controllers") or "none"
        return Check("cgroup v2", False, f"controllers: {controllers}; {why}", "not yet (v1 only)")
    return Check("cgroup v1 per session", why is None, why or "memory, pids and cpu writable",
                 "memoryMb and processes for all a session's processes, cpuPercent, OOM counts")


def _userns() -> Check:
    limit = _read("/proc/sys/user/max_user_namespaces")
    clone = _read("/proc/sys/kernel/unprivileged_userns_clone")
    if limit == "0":
        return Check("user namespaces", False, "user.max_user_namespaces is 0", "strict sessions")
    if clone == "0" and os.geteuid() != 0:
        return Check("user namespaces", False, "kernel.unprivileged_userns_clone is 0", "strict sessions")
    return Check("user namespaces", limit is not None, f"max_user_namespaces: {limit}", "strict sessions")


def _landlock() -> Check:
    try:
        abi = ctypes.CDLL(None, use_errno=True).syscall(444, None, 0, 1)  # landlock_create_ruleset: ABI
    except (OSError, AttributeError):
        abi = -1
    return Check("Landlock", abi > 0, f"ABI {abi}" if abi > 0 else "not enabled in this kernel", "strict sessions")


def _seccomp() -> Check:
    status = _read("/proc/self/status") or ""
    ok = any(line.startswith("Seccomp:") for line in status.splitlines())
    return Check("seccomp", ok, "filters available" if ok else "the kernel has no seccomp", "strict sessions")


def checks() -> list[Check]:
    why = process.containment_unavailable()
    pidns = Check("PID namespace per session", why is None, why or "available",
                  "every session (the zygote starts it inside one), unless --no-containment or --no-zygote")
    return [pidns, _cgroups(), _userns(), _landlock(), _seccomp()]


def main(as_json: bool = False) -> int:
    found = checks()
    if as_json:
        print(json.dumps([c._asdict() for c in found], indent=2))
        return 0
    print(f"cellbox doctor: Python {sys.version.split()[0]}, {os.uname().sysname} {os.uname().release}, "
          f"{'root' if os.geteuid() == 0 else 'uid ' + str(os.geteuid())}")
    width = max(len(c.name) for c in found)
    for c in found:
        print(f"  {'yes' if c.ok else 'no ':3}  {c.name:<{width}}  {c.detail}  [cellbox: {c.used}]")
    contained = found[0].ok
    print("Sessions here are " + ("contained: nothing a session starts outlives it, a cell cannot signal the "
                                  "server or other sessions, and its /proc shows only its own processes."
                                  if contained else
                                  "not contained by the kernel: closing a session kills its process group and "
                                  "the descendants that keep its marker; a daemon that leaves both can survive."))
    missing = process.strict_missing(zygote=True)
    print('isolation: "strict" (user, network and mount namespaces, Landlock, seccomp): '
          + ("available." if not missing else "unavailable: needs " + "; ".join(missing) + "."))
    return 0
