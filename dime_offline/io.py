"""Crash-safe writes: a failed or killed write never leaves a half-written file or directory in
place of the old one, and naming symbolic links that lead nowhere.

Two ways to replace something:

* :func:`atomic_path` (files, and directories nobody reads while they are replaced): the new
  content is written beside the target, fsynced, and renamed over it. A file is replaced in one
  step; a directory takes two renames (POSIX cannot rename over a non-empty directory).
* :func:`versioned_directory` (directories that must exist at every instant, such as checkpoints):
  each write is a new directory ``<name>.v000007`` and ``<name>`` is a symbolic link to the newest,
  replaced in one atomic rename; older versions beyond ``keep`` are removed afterwards. Readers that
  open ``<name>/...`` see the old or the new version, never a mixture or nothing.

Temporaries are hidden ``.<name>.<pid>.<random>.tmp`` entries beside the target; those of
processes that no longer run (killed mid-write) are removed at the next write of the same target.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

VERSION_DIGITS = 6
"""Digits of the version number in ``<name>.v000007``."""


@contextlib.contextmanager
def naming_path(path: str | os.PathLike[str]) -> Iterator[None]:
    """Re-raise a filesystem error that names no file as an ``OSError`` naming ``path``: a write or
    flush deep inside a library (pyarrow, pandas, h5py, a buffered file) that met a full disk reports
    only the errno, and the CLI can then say in one line which output failed."""
    try:
        yield
    except OSError as err:
        if err.filename is not None or err.errno is None:
            raise
        raise OSError(err.errno, os.strerror(err.errno), os.fspath(path)) from err
    except RuntimeError as err:  # h5py reports a failed write or flush as a RuntimeError quoting the errno
        quoted = re.search(r"\berrno = (\d+)", str(err))
        if quoted is None:
            raise
        code = int(quoted.group(1))
        raise OSError(code, os.strerror(code), os.fspath(path)) from err


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; fsync it and rename it onto ``target`` only on success.

    Works for files and directories: the caller writes whatever it likes at the yielded path.
    On an exception the temporary path is removed and ``target`` is left as it was; a filesystem
    error that names no file is re-raised naming ``target`` (:func:`naming_path`).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    tmp = _make_temporary(target)
    staging = tmp / target.name
    try:
        with naming_path(target):
            yield staging
            if not staging.exists():
                raise FileNotFoundError(f"nothing was written to {staging}")
            fsync_tree(staging)
            if target.is_dir() and not target.is_symlink():
                # os.replace cannot replace a non-empty directory: move the old one aside first.
                old = tmp / (target.name + ".old")
                os.replace(target, old)
                os.replace(staging, target)
            else:
                os.replace(staging, target)
            fsync_directory(target.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(target: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def versioned_directory(target: str | os.PathLike[str], *, keep: int = 2) -> Iterator[Path]:
    """Yield an empty directory to fill; on success it becomes the newest version of ``target``.

    The filled directory is fsynced and renamed to ``<target>.v<N>`` (N one above the highest
    version present), then ``target`` becomes a relative symbolic link to it in one atomic rename;
    then all but the newest ``keep`` versions are removed. On an exception nothing changes (a
    filesystem error that names no file is re-raised naming ``target``: :func:`naming_path`).

    A ``target`` that is a plain directory (written before versioning) becomes a version itself
    at the swap, so it stays findable: :func:`newest_version` is the fallback for readers when
    ``target`` is missing (a crash between that rename and the link's).
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    target = Path(target)
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    staging = _make_temporary(target)
    try:
        with naming_path(target):
            yield staging
            fsync_tree(staging)
            number = max((n for n, _ in versions(target)), default=0) + 1
            if target.is_dir() and not target.is_symlink():
                os.rename(target, version_path(target, number))
                number += 1
            final = version_path(target, number)
            os.rename(staging, final)
            fsync_directory(parent)
            link = parent / f"{_temporary_prefix(target)}link.tmp"
            os.symlink(final.name, link)
            os.replace(link, target)
            fsync_directory(parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for _, old in versions(target)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def version_path(target: str | os.PathLike[str], number: int) -> Path:
    """The directory of version ``number`` of ``target``: ``<target>.v000007``."""
    target = Path(target)
    return target.with_name(f"{target.name}.v{number:0{VERSION_DIGITS}d}")


def versions(target: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """The versions of ``target`` present, as (number, directory), oldest first."""
    target = Path(target)
    pattern = re.compile(re.escape(target.name) + rf"\.v(\d{{{VERSION_DIGITS},}})")
    found = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in target.parent.iterdir():
            match = pattern.fullmatch(entry.name)
            if match and entry.is_dir() and not entry.is_symlink():
                found.append((int(match.group(1)), entry))
    return sorted(found)


def newest_version(target: str | os.PathLike[str]) -> Path | None:
    """The newest version directory of ``target``, or None when there is none."""
    found = versions(target)
    return found[-1][1] if found else None


def versioned_entries(target: str | os.PathLike[str]) -> list[Path]:
    """Everything :func:`versioned_directory` may have written for ``target``: the link (or plain
    directory), its versions and hidden temporaries (what a clean start removes)."""
    target = Path(target)
    entries = [path for _, path in versions(target)]
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        entries += [p for p in target.parent.iterdir() if _is_temporary_of(p.name, target)]
    if target.is_symlink() or target.exists():
        entries.append(target)
    return entries


def remove_stale_temporaries(target: str | os.PathLike[str]) -> None:
    """Remove the hidden temporaries of ``target`` left by writers that no longer run (kill -9)."""
    target = Path(target)
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in target.parent.iterdir():
            pid = _temporary_owner(entry.name, target)
            if pid is not None and not _process_alive(pid):
                remove_path(entry)


def remove_path(path: Path) -> None:
    """Remove a file, a symbolic link (not what it points to) or a directory tree."""
    if path.is_symlink() or not path.is_dir():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def fsync_tree(path: Path) -> None:
    """fsync a file, or every file and directory under a directory (children before parents)."""
    if path.is_symlink():
        return
    if path.is_dir():
        for child in path.iterdir():
            fsync_tree(child)
        fsync_directory(path)
    else:
        with path.open("rb") as handle:
            os.fsync(handle.fileno())


def fsync_directory(path: Path) -> None:
    """fsync a directory, so the renames and creations in it survive a power cut (where the OS allows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a directory
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):  # filesystems without directory fsync
            raise
    finally:
        os.close(fd)


def _temporary_prefix(target: Path) -> str:
    return f".{target.name}.{os.getpid()}."


def _make_temporary(target: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix=_temporary_prefix(target), suffix=".tmp", dir=target.parent))


def _temporary_owner(name: str, target: Path) -> int | None:
    """The pid in a temporary's name ``.<target>.<pid>.<random>.tmp``, None for other names."""
    match = re.fullmatch(re.escape(f".{target.name}.") + r"(\d+)\.[^/]*\.tmp", name)
    return int(match.group(1)) if match else None


def _is_temporary_of(name: str, target: Path) -> bool:
    return _temporary_owner(name, target) is not None


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process has no write of the same target in progress
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's), or cannot tell: keep it
    return True


def broken_link_reason(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` is a symbolic link that leads nowhere (it loops, or its target is missing), or
    None when it is not such a link.

    ``Path.exists()`` and ``Path.is_file()`` are simply False for such a link, so code that lists or
    creates paths would skip it silently or fail with a misleading "File exists".
    """
    path = Path(path)
    if not path.is_symlink():
        return None
    try:
        path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symbolic link that loops (it never reaches a file or folder)"
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return f"is a broken symbolic link (its target {os.readlink(path)} does not exist)"
        raise
    return None
