"""Outputs written under a temporary name and renamed into place only when complete.

An interrupted command therefore never leaves a file that looks finished.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path next to ``path``; rename it to ``path`` only if the block succeeds."""
    path = os.fspath(path)
    base, ext = os.path.splitext(path)
    tmp = f"{base}.tmp-{os.getpid()}{ext}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def publish(work: Path, output: Path) -> None:
    """Move the finished folder ``work`` to ``output``, replacing a previous report there."""
    output.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if output.exists():
        if any(output.iterdir()):
            old = output.with_name(f".{output.name}.old-{os.getpid()}")
            os.replace(output, old)
        else:
            output.rmdir()
    os.replace(work, output)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
