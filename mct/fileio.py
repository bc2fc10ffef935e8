"""Files that are never half written, outputs checked before long work, and one writer per run folder.

- `atomic_path` / `atomic_write_*`: a file is either the old one or the complete new one. A write that
  the system refuses (no permission, disk full, a file where a folder should be) is one `MctError`
  naming the path, and the old file is kept.
- `check_writable`: before an hour of work, say now that its output cannot be written.
- `folder_lock`: one process at a time writes a run folder; a second one is refused at once.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from mct.errors import MctError

_UMASK = os.umask(0)
os.umask(_UMASK)
LOCK_NAME = ".mct.lock"


def describe_os_error(exc: OSError) -> str:
    """The reason of an OSError in words, with the fix where there is an obvious one."""
    if exc.errno == errno.ENOSPC:
        return "no space left on the device; free some space or write elsewhere"
    if exc.errno == errno.EDQUOT:
        return "disk quota exceeded; free some space or write elsewhere"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied; choose a folder you can write to"
    if exc.errno == errno.EROFS:
        return "the file system is read-only; choose another folder"
    if exc.errno == errno.ENOTDIR:
        return "a file stands where a folder is needed"
    if exc.errno == errno.EISDIR:
        return "it is a folder, not a file"
    if exc.errno == errno.ENAMETOOLONG:
        return "the name is too long"
    return exc.strerror or str(exc)


def _first_existing(path: Path) -> Path:
    current = path
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def check_writable(path: str | Path, what: str = "output", folder: bool = False) -> None:
    """Raise MctError unless `path` (a file, or a folder when `folder`) could be created or replaced.

    Nothing is created: the nearest existing ancestor must be a folder this process may write to, on a
    file system with free space; an existing `path` must be of the right kind.
    """
    path = Path(path)
    if path.exists():
        if folder and not path.is_dir():
            raise MctError(f"{what} {path} is a file, not a folder; choose a folder")
        if not folder and path.is_dir():
            raise MctError(f"{what} {path} is a folder; give a file name")
        parent = path if folder else path.parent
    else:
        parent = _first_existing(path.parent if path.parent != path else path)
        if not parent.is_dir():
            raise MctError(f"{what} {path} cannot be created: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        reason = "the file system is read-only" if _read_only(parent) else "permission denied"
        raise MctError(f"{what} {path} cannot be written: {reason} in {parent}; choose another location")
    try:
        usage = shutil.disk_usage(parent)
    except OSError:
        return
    if usage.total and not usage.free:  # /proc and /sys report no size at all: not a full disk
        raise MctError(f"{what} {path} cannot be written: no space left on the device that holds {parent}; "
                       "free some space or choose another location")


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; on success it is renamed over `path`, else removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; results should be readable like any other
    except OSError as exc:
        raise MctError(f"cannot write {path}: {describe_os_error(exc)}") from None
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise MctError(f"cannot write {path}: {describe_os_error(exc)}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_torch_save(payload: dict, path: str | Path) -> None:
    """`torch.save(payload, path)` through `atomic_path`. torch reports a failed write (a full disk) as a
    RuntimeError whose text names no cause ("unexpected pos 128064 vs 127952"): it becomes one MctError
    naming the path, the free space decides the reason, and the previous file is kept."""
    import torch

    with atomic_path(path) as tmp:
        try:
            torch.save(payload, tmp)
        except RuntimeError:
            try:
                full = shutil.disk_usage(tmp.parent).free < 1 << 20
            except OSError:
                full = False
            reason = "no space left on the device; free some space or write elsewhere" if full else \
                "the write failed; check the device and write elsewhere"
            raise MctError(f"cannot write {path}: {reason} (the previous file, if any, is kept)") from None


# --------------------------------------------------------------------------------------------------
# one writer per folder

_held: dict[str, list] = {}  # resolved folder -> [open lock file, depth]: re-entrant within a process


@contextmanager
def folder_lock(folder: str | Path, what: str = "run folder"):
    """Hold an exclusive lock on `folder` (created if missing) for the duration of the block.

    A second process that asks for the same folder gets an MctError at once, naming the holder's pid.
    Re-entrant within one process, so a caller and the library it calls may both take it. Where the
    system has no `fcntl` (Windows) this only creates the folder.
    """
    folder = Path(folder)
    try:
        created = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MctError(f"cannot create {what} {folder}: {describe_os_error(exc)}") from None
    key = os.path.realpath(folder)
    if key in _held:
        _held[key][1] += 1
        try:
            yield folder
        finally:
            _held[key][1] -= 1
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield folder
        return
    lock_path = folder / LOCK_NAME
    handle = _acquire(lock_path, what, folder, fcntl)
    _held[key] = [handle, 1]
    try:
        yield folder
    finally:
        del _held[key]
        lock_path.unlink(missing_ok=True)  # still ours: a waiting process re-checks the inode after locking
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
        if created:
            try:
                folder.rmdir()  # only when empty: a run that never started leaves no empty folder
            except OSError:
                pass


def _acquire(lock_path: Path, what: str, folder: Path, fcntl):
    for _ in range(10):
        try:
            handle = open(lock_path, "a+")
        except OSError as exc:
            raise MctError(f"cannot lock {what} {folder}: {describe_os_error(exc)}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            raise MctError(f"{what} {folder} is in use by another mct process{f' (pid {holder})' if holder else ''}; "
                           "wait for it to finish or use another folder") from None
        try:  # the holder before us may have removed the file after we opened it: lock the current one
            same = os.fstat(handle.fileno()).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            return handle
        handle.close()
    raise MctError(f"cannot lock {what} {folder}: the lock file keeps changing")  # pragma: no cover
