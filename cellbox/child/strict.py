"""``isolation: "strict"``: the layers a strict session adds around its child, in the zygote.

Theory of operation (Linux, x86-64): the zygote's intermediate process, still root, joins the
session's cgroups, becomes the session's unprivileged uid and gid (``become_unprivileged``)
and unshares a user namespace together with the PID, mount and (unless the session keeps the
network) network namespaces, mapping its uid and gid to 1000 inside. The namespace's init
(``contain.become_init``) then builds the session's view with the capabilities it holds in
its own user namespace only (``build_view``): a private ``/tmp`` and ``/dev/shm``, the work
directory bound back in place, loopback up. The session child, before any user code, locks
itself down (``lock_down``): ``no_new_privs``, Landlock (writes only under the work
directory, ``/tmp``, ``/dev/shm`` and to devices and ``/proc``; no signals out of the
session), a seccomp filter that refuses ``ptrace``, ``process_vm_*``, mounts, ``bpf``,
``perf_event_open``, ``kexec_*``, keys, new namespaces and module loading, and no
capabilities.

Invariants: every step either succeeds or ends the process (a strict child is never weaker
than asked); the filter and the Landlock domain are inherited by every process the session
starts.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
import sys

from cellbox.child import kernel

INSIDE_ID = 1000
CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWIPC, CLONE_NEWUTS = 0x10000000, 0x40000000, 0x08000000, 0x04000000
NAMESPACE_FLAGS = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND = 1, 2, 4, 32, 4096

# Landlock (ABI 1-7): the rights that change the file system; reads are left alone.
_LL_WRITE = (1 << 1) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12)
_LL_REFER, _LL_TRUNCATE = 1 << 13, 1 << 14
_LL_SCOPE_ABSTRACT_UNIX, _LL_SCOPE_SIGNAL = 1 << 0, 1 << 1
_SYS_LANDLOCK_CREATE, _SYS_LANDLOCK_ADD, _SYS_LANDLOCK_RESTRICT = 444, 445, 446

# seccomp, x86-64.
AUDIT_ARCH_X86_64 = 0xC000003E
DENIED = {
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "mount": 165, "umount2": 166,
    "pivot_root": 155, "chroot": 161, "bpf": 321, "perf_event_open": 298, "kexec_load": 246,
    "kexec_file_load": 320, "keyctl": 250, "add_key": 248, "request_key": 249, "unshare": 272,
    "setns": 308, "open_by_handle_at": 304, "init_module": 175, "finit_module": 313,
    "delete_module": 176, "userfaultfd": 323, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442, "pidfd_getfd": 438,
    "swapon": 167, "swapoff": 168, "reboot": 169, "acct": 163,
}
_SYS_CLONE, _SYS_CLONE3, _SYS_IOCTL = 56, 435, 16
_RET_ALLOW, _RET_ERRNO = 0x7FFF0000, 0x00050000
_EPERM, _ENOSYS = 1, 38


def landlock_abi() -> int:
    """The kernel's Landlock ABI version (0: none)."""
    try:
        return max(int(kernel.libc().syscall(_SYS_LANDLOCK_CREATE, None, 0, 1)), 0)
    except (OSError, AttributeError):
        return 0


def become_unprivileged(uid: int, gid: int, network: bool) -> None:
    """In the intermediate process (root): the session's ids, then the new namespaces, with
    the uid and gid mapped to ``INSIDE_ID``. Raises ``OSError``."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    kernel.check(kernel.libc().prctl(4, 1, 0, 0, 0), "dumpable")  # PR_SET_DUMPABLE: own /proc/self again
    flags = CLONE_NEWUSER | 0x20000000 | 0x00020000 | CLONE_NEWIPC | CLONE_NEWUTS | (0 if network else CLONE_NEWNET)
    kernel.check(kernel.libc().unshare(flags), "unshare")
    kernel.map_ids(INSIDE_ID, uid, INSIDE_ID, gid)


def _hidden_needs(workdir: str) -> list[tuple[str, bool]]:
    """What a private /tmp or /dev/shm would hide that the session needs, as (path,
    writable): the work directory, and the Python installation and import paths (a venv or
    checkout under /tmp), outermost first."""
    wanted = [(os.path.realpath(workdir), True)] if workdir else []
    for path in {sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path}:
        if path and os.path.isdir(path):
            wanted.append((os.path.realpath(path), False))
    under = [(p, w) for p, w in wanted if p.startswith(("/tmp/", "/dev/shm/"))]
    out: list[tuple[str, bool]] = []
    for path, writable in sorted(under, key=lambda pw: (len(pw[0]), not pw[1])):
        if not any(path == q or path.startswith(q + "/") for q, _ in out):
            out.append((path, writable))
    return out


def build_view(workdir: str, network: bool) -> None:
    """In the namespace's init: a private /tmp and /dev/shm with the work directory and the
    Python the session runs bound back in place (the latter read-only), and loopback up.
    Raises ``OSError``."""
    libc = kernel.libc()
    keep = [(path, writable, os.open(path, os.O_PATH | os.O_DIRECTORY)) for path, writable in _hidden_needs(workdir)]
    # Without the network, no host service by a socket path either (/run holds them).
    hidden = ("/tmp", "/dev/shm") if network else ("/tmp", "/dev/shm", "/run", "/var/run")
    for target in hidden:
        if os.path.isdir(target) and not os.path.islink(target):
            kernel.check(libc.mount(b"tmpfs", target.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=1777"),
                   f"mount tmpfs on {target}")
    for path, writable, fd in keep:
        os.makedirs(path, exist_ok=True)
        kernel.check(libc.mount(f"/proc/self/fd/{fd}".encode(), path.encode(), None, MS_BIND, None), f"bind {path}")
        if not writable:
            kernel.check(libc.mount(None, path.encode(), None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, None),
                   f"read-only {path}")
        os.close(fd)
    if not network:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", 0x1 | 0x8 | 0x40))  # SIOCSIFFLAGS: up


def lock_down(workdir: str) -> None:
    """In the session child, before any user code: no new privileges, Landlock, seccomp, no
    capabilities. Raises ``OSError``."""
    libc = kernel.libc()
    kernel.check(libc.prctl(38, 1, 0, 0, 0), "no_new_privs")  # PR_SET_NO_NEW_PRIVS
    _landlock(libc, [workdir, "/tmp", "/dev/shm"], devices=["/dev", "/proc"])
    _seccomp(libc)
    kernel.drop_capabilities(range(64))  # all of them, the bounding set too


def _landlock(libc: ctypes.CDLL, writable: list[str], devices: list[str]) -> None:
    abi = landlock_abi()
    if abi < 1:
        raise OSError(38, "Landlock is not available")
    handled = _LL_WRITE | (_LL_REFER if abi >= 2 else 0) | (_LL_TRUNCATE if abi >= 3 else 0)
    scoped = _LL_SCOPE_ABSTRACT_UNIX | _LL_SCOPE_SIGNAL if abi >= 6 else 0
    attr = struct.pack("<QQQ", handled, 0, scoped)[: 24 if abi >= 6 else 16 if abi >= 4 else 8]
    buf = ctypes.create_string_buffer(attr, len(attr))
    ruleset = kernel.check(int(libc.syscall(_SYS_LANDLOCK_CREATE, buf, len(attr), 0)), "landlock ruleset")
    try:
        rules = [(p, handled) for p in writable if p] + [(p, (1 << 1) | (_LL_TRUNCATE if abi >= 3 else 0)) for p in devices]
        for path, access in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                rule = ctypes.create_string_buffer(struct.pack("<Qi", access, fd), 12)
                kernel.check(int(libc.syscall(_SYS_LANDLOCK_ADD, ruleset, 1, rule, 0)), f"landlock rule {path}")
            finally:
                os.close(fd)
        kernel.check(int(libc.syscall(_SYS_LANDLOCK_RESTRICT, ruleset, 0)), "landlock restrict")
    finally:
        os.close(ruleset)


def _seccomp(libc: ctypes.CDLL) -> None:
    if os.uname().machine != "x86_64":
        raise OSError(38, "no seccomp table for this architecture")

    def stmt(code: int, k: int) -> bytes:
        return struct.pack("<HBBI", code, 0, 0, k)

    def jump(code: int, k: int, jt: int, jf: int) -> bytes:
        return struct.pack("<HBBI", code, jt, jf, k)

    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    deny, allow = ret, ret
    prog = [
        stmt(ld, 4),  # arch
        jump(jeq, AUDIT_ARCH_X86_64, 1, 0),
        stmt(deny, _RET_ERRNO | _EPERM),
        stmt(ld, 0),  # syscall number
        jump(jge, 0x40000000, 0, 1),  # x32
        stmt(deny, _RET_ERRNO | _EPERM),
        jump(jeq, _SYS_CLONE3, 0, 1),  # its flags are out of reach: glibc falls back to clone
        stmt(deny, _RET_ERRNO | _ENOSYS),
    ]
    for nr in sorted(DENIED.values()):
        prog += [jump(jeq, nr, 0, 1), stmt(deny, _RET_ERRNO | _EPERM)]
    prog += [  # ioctl TIOCSTI / TIOCLINUX: no typing into a terminal
        jump(jeq, _SYS_IOCTL, 0, 5),
        stmt(ld, 24),  # its request (low half)
        jump(jeq, 0x5412, 2, 0),
        jump(jeq, 0x541C, 1, 0),
        stmt(allow, _RET_ALLOW),
        stmt(deny, _RET_ERRNO | _EPERM),
        jump(jeq, _SYS_CLONE, 0, 3),
        stmt(ld, 16),  # clone's flags (low half): no new namespaces
        jump(jset, NAMESPACE_FLAGS, 0, 1),
        stmt(deny, _RET_ERRNO | _EPERM),
        stmt(allow, _RET_ALLOW),
    ]
    code = b"".join(prog)
    filt = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("<HxxxxxxQ", len(prog), ctypes.addressof(filt))
    fbuf = ctypes.create_string_buffer(fprog, len(fprog))
    kernel.check(libc.prctl(22, 2, fbuf, 0, 0), "seccomp")  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
