"""Outputs that appear only when complete, never replace what they must not, and leave nothing behind.

Every file a command writes is first written as a *partial*: a hidden name in the target folder that does not
end in the real extension, ``.<name>.partial-<host>-<pid>-<random>`` (so no tool mistakes it for a finished
``.root`` or ``.parquet``), created exclusively. When the writing succeeds it is published under the final name
in one atomic step, and only if that name is still absent (a hard link, which fails when the name exists; or,
with ``overwrite``, a rename over it). So two commands writing the same output never silently replace one
another, and an interrupted command leaves no file that looks finished. Partials of processes that are no longer
alive (killed with SIGKILL, a node that rebooted) are removed by the next run that writes the same output.

Report folders (:class:`omnijet_weaver.evaluation.report.ReportFolder`) are built the same way, as hidden
``.<folder>.partial-<host>-<pid>`` folders, and published with :func:`publish`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import socket
from pathlib import Path

from .errors import OutputExistsError

#: Between the hidden name of an output and the owner of a partial (``.out.root.partial-<host>-<pid>-<rnd>``).
PARTIAL_TAG = ".partial-"
#: The host part of partial names (only partials of this host's dead processes are ever cleaned up).
HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host exists (a process of another user counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def partial_path(path, suffix: str = "") -> Path:
    """The partial name of ``path`` owned by this process: ``.<name>.partial-<host>-<pid><suffix>``."""
    path = Path(path)
    return path.with_name(f".{path.name}{PARTIAL_TAG}{HOST}-{os.getpid()}{suffix}")


def stale_partials(path) -> list[Path]:
    """Partials of ``path`` (files or folders) left by processes of this host that are no longer alive."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    pattern = re.compile(re.escape(f".{path.name}{PARTIAL_TAG}{HOST}-") + r"(\d+)(?:-[0-9a-f]+)?")
    found = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if m and not pid_alive(int(m.group(1))):
            found.append(entry)
    return found


def clean_stale_partials(path) -> list[Path]:
    """Remove :func:`stale_partials` of ``path``; returns what was removed."""
    removed = []
    for stale in stale_partials(path):
        try:
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale)
            else:
                stale.unlink()
        except FileNotFoundError:
            pass  # another run cleaned it first
        except OSError:
            continue
        removed.append(stale)
    return removed


def check_writable_folder(folder, what: str) -> None:
    """Raise a clear error unless a file can be created in ``folder`` (tried: permissions, read-only file
    systems and quotas are all seen), before any work is done. ``what`` names the output in the message."""
    folder = os.fspath(folder)
    try:
        fd, probe = _mkstemp(folder)
    except OSError as err:
        reason = os.strerror(err.errno) if err.errno else str(err)
        raise OutputExistsError(f"{what}: cannot write in folder {folder!r} ({reason}); choose a --output in a "
                                f"writable folder") from None
    os.close(fd)
    os.unlink(probe)


def _mkstemp(folder):
    import tempfile

    return tempfile.mkstemp(dir=folder, prefix=f".omnijet-weaver-probe-{os.getpid()}-")


@contextlib.contextmanager
def signals_deferred():
    """Hold SIGINT, SIGTERM and SIGHUP back during the block (a publishing step that must not stop half-way);
    they are delivered when it ends. A no-op where signal masks are not available or off the main thread."""
    import signal
    import threading

    held = {signal.SIGINT, signal.SIGTERM} | ({signal.SIGHUP} if hasattr(signal, "SIGHUP") else set())
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def publish_file(tmp, path, overwrite: bool) -> None:
    """Give the finished file ``tmp`` its final name ``path``: atomically and, without ``overwrite``, only if
    ``path`` does not exist (else :class:`OutputExistsError`; ``tmp`` is left for the caller to remove)."""
    tmp, path = os.fspath(tmp), os.fspath(path)
    if overwrite:
        if os.path.isdir(path):
            raise OutputExistsError(f"output {path!r} is a folder; name a file")
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails if the name exists: publish-if-absent in one step
    except FileExistsError:
        raise OutputExistsError(f"output {path!r} appeared while this command ran (another run writing the same "
                                f"file?) and was left as it is; pass --overwrite to replace it, or choose another "
                                f"--output") from None
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.EXDEV):
            raise
        # a file system without hard links: the closest we can get is check, then rename
        if os.path.lexists(path):
            raise OutputExistsError(f"output {path!r} appeared while this command ran and was left as it is; "
                                    f"pass --overwrite to replace it") from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def disk_full(err: BaseException):
    """The errno (``ENOSPC`` or ``EDQUOT``) if ``err`` or an exception it was raised from or during is a full
    disk or quota, else ``None``. Writers wrap it (awkward's parquet writer raises a ``RuntimeError`` while
    closing a file whose write ran out of space)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return err.errno
        if "No space left on device" in str(err):
            return errno.ENOSPC
        err = err.__cause__ or err.__context__
    return None


@contextlib.contextmanager
def atomic_output(path, overwrite: bool = True):
    """Yield a partial path (see the module docstring) to write ``path`` to (its folder made if needed); publish
    it if the block succeeds.

    ``overwrite``: replace an existing ``path`` (the default, for files a command owns, e.g. inside its own
    report folder); with ``False`` an existing ``path`` raises :class:`OutputExistsError` at the end and nothing
    is replaced. The partial is removed whatever happens (an exception, Ctrl-C, SIGTERM through
    :func:`omnijet_weaver.cli.run_command`); one left by a killed process is removed by the next run.
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)  # as uproot.recreate does for a plain path
    clean_stale_partials(path)
    tmp = os.fspath(partial_path(path, f"-{secrets.token_hex(3)}"))
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)  # ours alone
    os.close(fd)
    try:
        yield tmp
        with signals_deferred():
            publish_file(tmp, path, overwrite)
    except Exception as err:
        full = disk_full(err)
        if full is not None:
            raise OutputExistsError(f"no space left on the device while writing {path!r} ({os.strerror(full)}); "
                                    f"nothing was written: free some space or choose a --output elsewhere") from None
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


# --------------------------------------------------------------------------------------------------------
# report folders
# --------------------------------------------------------------------------------------------------------


def folder_files(folder: Path) -> list[str]:
    """The files (and links) under ``folder``, as sorted POSIX paths relative to it."""
    folder = Path(folder)
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir() or p.is_symlink())


def read_manifest(folder: Path, marker: str):
    """The files a report folder says it holds (the list in its ``marker`` file), or None when the marker is
    absent or holds no list (written by an older omnijet-weaver, or not by us)."""
    try:
        data = json.loads((Path(folder) / marker).read_text())
    except (OSError, ValueError):
        return None
    files = data.get("files") if isinstance(data, dict) else None
    return set(files) if isinstance(files, list) and all(isinstance(f, str) for f in files) else None


def foreign_files(folder: Path, marker: str):
    """Files in ``folder`` that its marker does not list (None when it has no usable marker)."""
    listed = read_manifest(folder, marker)
    if listed is None:
        return None
    return [f for f in folder_files(folder) if f not in listed and f != marker]


def remove_listed(folder: Path, files) -> list[str]:
    """Delete exactly ``files`` (relative paths) in ``folder``, then the folders left empty; returns what is left."""
    folder = Path(folder)
    for rel in files:
        with contextlib.suppress(FileNotFoundError):
            (folder / rel).unlink()
    for d in sorted((p for p in folder.rglob("*") if p.is_dir() and not p.is_symlink()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            d.rmdir()
    left = folder_files(folder)
    if not left:
        with contextlib.suppress(OSError):
            folder.rmdir()
    return left


def write_manifest(work: Path, marker: str, kind: str) -> list[str]:
    """Write the ``marker`` file of the finished report folder ``work``: what it is and the files it holds (the
    list :func:`publish` checks before it ever deletes one). Returns the list."""
    import datetime

    files = [f for f in folder_files(work) if f != marker]
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    (Path(work) / marker).write_text(json.dumps({"kind": kind, "written": stamp, "files": files}, indent=1) + "\n")
    return files


def publish(work: Path, output: Path, marker: str, overwrite: bool, kind: str = "report") -> None:
    """Publish the finished report folder ``work`` (whose ``marker`` file lists its files) as ``output``.

    What is at ``output`` is looked at again right here, not only when the command started: an absent or empty
    ``output`` is taken at once; a previous report of the same command (its marker lists every file in it) is
    replaced only with ``overwrite``, and only the files it lists are deleted. Anything else (a file a user put
    there during the run, a folder of another tool) is left untouched: the new report is kept beside it, as
    ``<output>.new`` (or ``.new-<pid>``), and :class:`OutputExistsError` says so.
    """
    with signals_deferred():
        _publish(Path(work), Path(output), marker, overwrite, kind)


def _publish(work: Path, output: Path, marker: str, overwrite: bool, kind: str) -> None:
    write_manifest(work, marker, kind)
    output.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if output.is_dir() and not output.is_symlink() and any(output.iterdir()):
        foreign = foreign_files(output, marker)
        if overwrite and foreign == []:
            old = output.with_name(f".{output.name}.old{PARTIAL_TAG}{HOST}-{os.getpid()}")
            os.replace(output, old)
            foreign = foreign_files(old, marker)  # again, now that nobody can add to it under its name
            if foreign != []:
                os.replace(old, output)
                old = None
        if old is None:
            _refuse(work, output, foreign, marker, overwrite, kind)
    try:
        os.replace(work, output)  # an empty folder there is replaced; a non-empty one fails
    except OSError as err:
        if old is not None:
            with contextlib.suppress(OSError):
                os.replace(old, output)
        if err.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            _refuse(work, output, foreign_files(output, marker) if output.is_dir() else None, marker, overwrite, kind)
        raise
    if old is not None:
        left = remove_listed(old, (read_manifest(old, marker) or set()) | {marker})
        if left:
            keep = free_name(output, ".leftover")
            os.replace(old, keep)
            raise OutputExistsError(f"the report is in {str(output)!r}; {len(left)} file(s) that appeared in the "
                                    f"previous one while it was replaced (e.g. {left[0]}) are kept in {str(keep)!r}")


def free_name(output: Path, tag: str) -> Path:
    """``<output><tag>``, or ``<output><tag>-<pid>[-i]`` when that exists."""
    first = output.with_name(output.name + tag)
    if not os.path.lexists(first):
        return first
    candidates = (output.with_name(f"{output.name}{tag}-{os.getpid()}" + (f"-{i}" if i else "")) for i in range(10_000))
    return next(c for c in candidates if not os.path.lexists(c))


def _refuse(work: Path, output: Path, foreign, marker: str, overwrite: bool, kind: str):
    """Keep the finished report ``work`` beside ``output`` (left as it is) and raise why."""
    keep = free_name(output, ".new")
    os.replace(work, keep)
    if foreign is None and (output / marker).is_file():
        why = (f"was written by an older omnijet-weaver (its {marker} file lists no files, so its files cannot be "
               f"told from yours)")
    elif foreign is None:
        why = f"is not a {kind} (it has no {marker} file)"
    elif foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        why = f"holds {len(foreign)} file(s) this command did not write ({shown})"
    else:
        why = "holds a report that appeared while this command ran (another run with the same --output?)"
    hint = "" if overwrite or foreign else " (--overwrite was not given)"
    raise OutputExistsError(f"output folder {str(output)!r} {why}{hint}: it was left as it is, and the new {kind} "
                            f"is in {str(keep)!r}; move it where you want it")
