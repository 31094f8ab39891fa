"""Files in a session's work directory: ``session/writeFile``, ``readFile``, ``listFiles``.

Theory of operation: every session has a work directory, its child's cwd: a fresh temporary
directory (removed when the session closes, unless ``keepWorkdir``) or the existing ``cwd``
it was created with (kept). The session holds a descriptor of it, opened when it was made,
and the server reads and writes relative to that descriptor itself (in a worker thread), so
these methods work while a cell runs and a cell that renames or replaces its directory does
not redirect them. A path is relative to the work directory; it is opened with ``openat2``
and ``RESOLVE_BENEATH``, which refuses, race-free, every path whose resolution (symlinks
included) leaves the directory; where ``openat2`` is missing each component is opened
without following symlinks. An absolute path, a ``..`` component or an escape gets -32602
with ``data`` saying why.

Invariants: no byte is read or written outside the work directory; nothing here blocks on a
FIFO or device; a file is read up to ``max_bytes`` (at most ``READ_CAP``), a listing holds at
most ``LIST_CAP`` entries.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import errno
import os
import stat
import struct
from datetime import datetime, timezone

from cellbox.protocol import errors
from cellbox.protocol import messages as m

READ_CAP = 16 << 20  # bytes: what one reply carries at most (base64 grows it by a third)
DEFAULT_READ = 1 << 20
LIST_CAP = 10_000
_RESOLVE_BENEATH, _RESOLVE_NO_MAGICLINKS = 0x08, 0x02
_SYS_OPENAT2 = 437
_openat2_works: bool | None = None


def open_root(path: str) -> int:
    """A descriptor of a work directory, for ``write``, ``read`` and ``listing``."""
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def _check_path(path: str, *, allow_root: bool = False) -> list[str]:
    if "\0" in path:
        raise errors.InvalidParams(data=f"{path!r} has a NUL byte")
    if not path and not allow_root:
        raise errors.InvalidParams(data="path is empty")
    if os.path.isabs(path):
        raise errors.InvalidParams(data=f"{path!r} is absolute: paths are relative to the work directory")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise errors.InvalidParams(data=f"{path!r} has a '..' component")
    if not parts and not allow_root:
        raise errors.InvalidParams(data=f"{path!r} is the work directory itself")
    return parts


def _openat(root: int, rel: str, flags: int, mode: int = 0o644) -> int:
    """Open ``rel`` beneath the directory ``root``; escapes raise ``InvalidParams``."""
    global _openat2_works
    flags |= os.O_CLOEXEC | os.O_NOCTTY
    if _openat2_works is not False and rel:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        how = ctypes.create_string_buffer(struct.pack("<QQQ", flags, mode if flags & os.O_CREAT else 0,
                                                      _RESOLVE_BENEATH | _RESOLVE_NO_MAGICLINKS), 24)
        fd = int(libc.syscall(_SYS_OPENAT2, root, rel.encode(), how, 24))
        if fd >= 0:
            _openat2_works = True
            return fd
        err = ctypes.get_errno()
        if err == errno.ENOSYS:
            _openat2_works = False
        elif err == errno.EXDEV:
            raise errors.InvalidParams(data=f"{rel!r} leads outside the work directory")
        else:
            raise OSError(err, os.strerror(err), rel)
    # No openat2: every component without following symlinks.
    parts = rel.split("/") if rel else []
    cur = os.dup(root)
    try:
        for part in parts[:-1]:
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=cur)
            os.close(cur)
            cur = nxt
        if not parts:
            return os.dup(cur)
        return os.open(parts[-1], flags | os.O_NOFOLLOW, mode, dir_fd=cur)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise errors.InvalidParams(data=f"{rel!r} goes through a symlink") from None
        raise
    finally:
        os.close(cur)


def write(root: int, p: m.WriteFileParams, owner: tuple[int, int] | None = None) -> m.WriteFileResult:
    """Write the file under the work directory ``root`` (a descriptor); ``owner`` (uid,
    gid): a strict session's ids, which the file and the directories made for it get."""
    if (p.text is None) == (p.base64 is None):
        raise errors.InvalidParams(data="give exactly one of text and base64")
    if p.text is not None:
        data = p.text.encode()
    else:
        try:
            data = base64.b64decode(p.base64 or "", validate=True)
        except (binascii.Error, ValueError) as exc:
            raise errors.InvalidParams(data=f"base64: {exc}") from None
    parts = _check_path(p.path)
    try:
        for i in range(1, len(parts)):  # the directories, made beneath the root one by one
            parent = _openat(root, "/".join(parts[: i - 1]), os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.mkdir(parts[i - 1], dir_fd=parent)
                if owner is not None:
                    os.chown(parts[i - 1], *owner, dir_fd=parent, follow_symlinks=False)
            except FileExistsError:
                pass
            finally:
                os.close(parent)
        # O_NONBLOCK: a FIFO there must not block the server; it is refused below.
        fd = _openat(root, "/".join(parts), os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK,
                     0o644 if p.mode is None else p.mode)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise errors.InvalidParams(data=f"{p.path!r} exists and is not a regular file")
            if info.st_nlink > 1:  # another name of it may be outside: not the server's to change
                raise errors.InvalidParams(data=f"{p.path!r} has other hard links")
            os.set_blocking(fd, True)
            os.ftruncate(fd, 0)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if p.mode is not None:
                os.fchmod(fd, p.mode)
            if owner is not None:
                os.fchown(fd, *owner)
        finally:
            os.close(fd)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO nobody reads (or a device without one)
            raise errors.InvalidParams(data=f"{p.path!r} exists and is not a regular file") from None
        raise errors.InvalidParams(data=f"cannot write {p.path!r}: {exc.strerror}") from None
    return m.WriteFileResult(path=p.path, size=len(data))


def read(root: int, p: m.ReadFileParams) -> m.ReadFileResult:
    parts = _check_path(p.path)
    limit = min(p.max_bytes or DEFAULT_READ, READ_CAP)
    try:
        fd = _openat(root, "/".join(parts), os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise errors.InvalidParams(data=f"{p.path!r} is not a regular file")
            os.set_blocking(fd, True)
            chunks, left = [], limit
            while left:
                chunk = os.read(fd, min(left, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
        finally:
            os.close(fd)
    except OSError as exc:
        raise errors.InvalidParams(data=f"cannot read {p.path!r}: {exc.strerror}") from None
    data = b"".join(chunks)
    truncated = info.st_size > len(data)
    try:
        text: str | None = data.decode()
        encoded = None
    except UnicodeDecodeError:
        text, encoded = None, base64.b64encode(data).decode()
    return m.ReadFileResult(path=p.path, size=info.st_size, text=text, base64=encoded, truncated=truncated)


def listing(root: int, p: m.ListFilesParams) -> m.ListFilesResult:
    parts = _check_path(p.path or "", allow_root=True)
    prefix = "/".join(parts)
    entries = []
    truncated = False
    try:
        fd = _openat(root, prefix, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with os.scandir(fd) as it:
                for entry in it:
                    if len(entries) == LIST_CAP:
                        truncated = True
                        break
                    info = entry.stat(follow_symlinks=False)
                    kind = ("link" if stat.S_ISLNK(info.st_mode) else "dir" if stat.S_ISDIR(info.st_mode)
                            else "file" if stat.S_ISREG(info.st_mode) else "other")
                    mtime = datetime.fromtimestamp(info.st_mtime, timezone.utc).isoformat(timespec="milliseconds")
                    path = f"{prefix}/{entry.name}" if prefix else entry.name
                    entries.append(m.FileEntry(path=path, size=info.st_size, kind=kind, mtime=mtime))
        finally:
            os.close(fd)
    except NotADirectoryError:
        raise errors.InvalidParams(data=f"{p.path!r} is not a directory") from None
    except OSError as exc:
        raise errors.InvalidParams(data=f"cannot list {p.path!r}: {exc.strerror}") from None
    entries.sort(key=lambda e: e.path)
    return m.ListFilesResult(entries=entries, truncated=truncated)
