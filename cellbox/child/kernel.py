"""The few kernel calls containment and strict isolation share (libc through ctypes).

Every call here either succeeds or raises ``OSError`` naming what failed: a layer that cannot
be set up must never be skipped without a word.
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Iterable

_CAP_VERSION_3 = 0x20080522


def libc() -> ctypes.CDLL:
    lib = ctypes.CDLL(None, use_errno=True)
    lib.syscall.restype = ctypes.c_long
    return lib


def check(result: int, what: str) -> int:
    """``result`` of a libc call or syscall (-1 and ``errno`` on failure), or ``OSError``."""
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    return result


def map_ids(inside_uid: int, uid: int, inside_gid: int, gid: int) -> None:
    """Map one uid and gid into the user namespace this process just unshared."""
    for name, text in (("setgroups", "deny"), ("uid_map", f"{inside_uid} {uid} 1"),
                       ("gid_map", f"{inside_gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)


def drop_capabilities(caps: Iterable[int]) -> None:
    """Remove ``caps`` from this process's bounding, effective, permitted and inheritable sets
    (a capability the kernel does not know is skipped)."""
    lib = libc()
    caps = list(caps)
    for cap in caps:
        if lib.prctl(24, cap, 0, 0, 0) != 0 and ctypes.get_errno() != 22:  # PR_CAPBSET_DROP; EINVAL: unknown
            check(-1, f"dropping capability {cap}")
    header = ctypes.create_string_buffer(struct.pack("<Ii", _CAP_VERSION_3, 0), 8)
    data = ctypes.create_string_buffer(24)
    check(lib.capget(header, data), "capget")
    words = list(struct.unpack("<6I", data.raw))  # (effective, permitted, inheritable) x 2
    mask = [0, 0]
    for cap in caps:
        mask[cap // 32] |= 1 << (cap % 32)
    for i in range(6):
        words[i] &= ~mask[i // 3] & 0xFFFFFFFF
    check(lib.capset(header, ctypes.create_string_buffer(struct.pack("<6I", *words), 24)), "capset")
