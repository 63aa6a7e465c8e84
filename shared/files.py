"""Files that are never half-written (write to a temporary path beside the target, then rename), and
files that are what they say (a regular file, checked without blocking, before it is read)."""

import os
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A temporary path beside target that replaces it only when the block succeeds.

    The caller creates the file (with the process's usual permissions); on failure it is removed.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def check_regular(path: Path) -> Path:
    """The path, if it names a regular file; ValueError otherwise. Opened without blocking (O_NONBLOCK:
    a FIFO answers at once instead of waiting for a writer forever) and checked on the open file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise ValueError(f"{path}: cannot be opened ({exc.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{path} is not a regular file")
    finally:
        os.close(fd)
    return path
