"""Atomic writes (a failed write never leaves a half-written file or directory behind), and
naming symbolic links that lead nowhere."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only on success.

    Works for files and directories: the caller writes whatever it likes at the yielded path.
    On an exception the temporary path is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    staging = tmp / target.name
    try:
        yield staging
        if not staging.exists():
            raise FileNotFoundError(f"nothing was written to {staging}")
        if target.is_dir() and not target.is_symlink():
            # os.replace cannot replace a non-empty directory: move the old one aside first.
            old = tmp / (target.name + ".old")
            os.replace(target, old)
            os.replace(staging, target)
        else:
            os.replace(staging, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(target: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)


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
