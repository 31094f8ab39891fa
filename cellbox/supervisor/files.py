"""Files in a session's work directory: ``session/writeFile``, ``readFile``, ``listFiles``.

Theory of operation: every session has a work directory, its child's cwd: a fresh temporary
directory (removed when the session closes, unless ``keepWorkdir``) or the existing ``cwd``
it was created with (kept). The server reads and writes there itself, so these methods work
while a cell runs. A path is relative to the work directory; ``resolve`` refuses an absolute
path, a ``..`` component and a path whose real location (symlinks followed) is outside the
directory, with -32602 and ``data`` saying why.

Invariants: no byte is read or written outside the work directory's real path; a file is
read up to ``max_bytes`` (at most ``READ_CAP``), a write takes what one message can carry.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from datetime import datetime, timezone

from cellbox.protocol import errors
from cellbox.protocol import messages as m

READ_CAP = 16 << 20  # bytes: what one reply carries at most (base64 grows it by a third)
DEFAULT_READ = 1 << 20


def resolve(root: str, path: str, *, allow_root: bool = False) -> str:
    """The absolute path of ``path`` inside ``root``; raises ``InvalidParams`` if it is not."""
    if not path and not allow_root:
        raise errors.InvalidParams(data="path is empty")
    if os.path.isabs(path):
        raise errors.InvalidParams(data=f"{path!r} is absolute: paths are relative to the work directory")
    if ".." in path.replace("\\", "/").split("/"):
        raise errors.InvalidParams(data=f"{path!r} has a '..' component")
    real_root = os.path.realpath(root)
    full = os.path.realpath(os.path.join(real_root, path))
    if full != real_root and not full.startswith(real_root + os.sep):
        raise errors.InvalidParams(data=f"{path!r} leads outside the work directory (through a symlink)")
    if full == real_root and not allow_root:
        raise errors.InvalidParams(data=f"{path!r} is the work directory itself")
    return full


def write(root: str, p: m.WriteFileParams, owner: tuple[int, int] | None = None) -> m.WriteFileResult:
    """Write the file; ``owner`` (uid, gid): a strict session's ids, which the file and the
    directories made for it get, so that the session can change them."""
    if (p.text is None) == (p.base64 is None):
        raise errors.InvalidParams(data="give exactly one of text and base64")
    if p.text is not None:
        data = p.text.encode()
    else:
        try:
            data = base64.b64decode(p.base64 or "", validate=True)
        except (binascii.Error, ValueError) as exc:
            raise errors.InvalidParams(data=f"base64: {exc}") from None
    full = resolve(root, p.path)
    try:
        made = _missing_dirs(os.path.dirname(full))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        resolve(root, p.path)  # the directories made must not have let it out
        if owner is not None:
            for directory in made:
                os.chown(directory, *owner, follow_symlinks=False)
        try:
            if not stat.S_ISREG(os.lstat(full).st_mode):
                raise errors.InvalidParams(data=f"{p.path!r} exists and is not a regular file")
        except FileNotFoundError:
            pass
        # O_NONBLOCK: a FIFO a cell puts there meanwhile must not block the server either.
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
        fd = os.open(full, flags, 0o644 if p.mode is None else p.mode)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise errors.InvalidParams(data=f"{p.path!r} exists and is not a regular file")
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
        raise errors.InvalidParams(data=f"cannot write {p.path!r}: {exc.strerror}") from None
    return m.WriteFileResult(path=p.path, size=len(data))


def _missing_dirs(path: str) -> list[str]:
    """The directories ``os.makedirs(path)`` would make, outermost first."""
    out = []
    while path and not os.path.exists(path):
        out.append(path)
        path = os.path.dirname(path)
    return out[::-1]


def read(root: str, p: m.ReadFileParams) -> m.ReadFileResult:
    full = resolve(root, p.path)
    limit = min(p.max_bytes or DEFAULT_READ, READ_CAP)
    try:
        fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO must not block
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


def listing(root: str, p: m.ListFilesParams) -> m.ListFilesResult:
    full = resolve(root, p.path or "", allow_root=True)
    entries = []
    try:
        with os.scandir(full) as it:
            for entry in it:
                info = entry.stat(follow_symlinks=False)
                kind = ("link" if stat.S_ISLNK(info.st_mode) else "dir" if stat.S_ISDIR(info.st_mode)
                        else "file" if stat.S_ISREG(info.st_mode) else "other")
                rel = os.path.relpath(entry.path, os.path.realpath(root))
                mtime = datetime.fromtimestamp(info.st_mtime, timezone.utc).isoformat(timespec="milliseconds")
                entries.append(m.FileEntry(path=rel, size=info.st_size, kind=kind, mtime=mtime))
    except NotADirectoryError:
        raise errors.InvalidParams(data=f"{p.path!r} is not a directory") from None
    except OSError as exc:
        raise errors.InvalidParams(data=f"cannot list {p.path!r}: {exc.strerror}") from None
    entries.sort(key=lambda e: e.path)
    return m.ListFilesResult(entries=entries)
