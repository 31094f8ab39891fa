"""Resource limits applied inside the child with ``setrlimit`` before any user code runs."""

from __future__ import annotations

import resource

from cellbox.protocol.messages import Limits

_MIB = 1024 * 1024


def apply(limits: Limits) -> None:
    """Set soft and hard limits. CPU gets a hard limit one second above the soft one, so the
    child first receives SIGXCPU (reported as ``cpu``) and SIGKILL only if it ignores it."""
    if limits.memory_mb:
        import threading

        _limit_malloc_arenas()
        # Threads reserve their stack in the address space: keep them small enough that a
        # limited child can still start a few.
        threading.stack_size(4 * _MIB)
        _set(resource.RLIMIT_AS, limits.memory_mb * _MIB)
    if limits.cpu_seconds:
        _set(resource.RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 1)
    if limits.processes:
        _set(resource.RLIMIT_NPROC, limits.processes)
    if limits.open_files:
        _set(resource.RLIMIT_NOFILE, limits.open_files)
    if limits.file_size_mb is not None:
        _set(resource.RLIMIT_FSIZE, limits.file_size_mb * _MIB)


def _limit_malloc_arenas() -> None:
    """Two malloc arenas, as ``MALLOC_ARENA_MAX=2`` would (a forked child cannot use the env):
    each thread's arena reserves 64 MiB of address space, which a memory limit counts."""
    try:
        import ctypes

        ctypes.CDLL(None).mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def _set(which: int, soft: int, hard: int | None = None) -> None:
    _, cur_hard = resource.getrlimit(which)
    hard = soft if hard is None else hard
    if cur_hard != resource.RLIM_INFINITY:
        soft, hard = min(soft, cur_hard), min(hard, cur_hard)
    resource.setrlimit(which, (soft, hard))
