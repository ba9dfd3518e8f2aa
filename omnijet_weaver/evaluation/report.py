"""Report folders of the evaluation commands: built in a hidden sibling, renamed into place when complete.

    with ReportFolder("report/", marker=".omnijet-weaver-token-quality", overwrite=False) as work:
        write_text(work / "summary.md", "...")       # work is the hidden folder; on success it becomes report/

An existing non-empty output is refused unless ``overwrite``, and even then only a folder that holds the
same ``marker`` file (a previous report of the same command), listing every file in it, is replaced; this is
checked when the command starts and again right before anything is replaced (:func:`omnijet_weaver.atomic.publish`),
so a file put into the folder during the run is never deleted. A run that fails or is interrupted (Ctrl-C,
SIGTERM) leaves no output: its hidden folder is removed, or, for a failure with ``keep_failed``, kept with its
logs as ``<output>.failed`` and the message says where. Hidden folders of killed runs (SIGKILL) are removed
by the next run with the same output.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from ..atomic import (
    check_writable_folder,
    clean_stale_partials,
    foreign_files,
    free_name,
    partial_path,
    publish,
)
from ..errors import OutputExistsError  # noqa: F401 (re-exported)


def check_report_folder(output, marker: str, overwrite: bool = False, kind: str | None = None) -> Path:
    """Validate ``output`` before any work; returns it as an absolute path (see the module docstring).
    ``kind`` names the report in messages (default: from the marker, e.g. "omnijet-weaver-demo report")."""
    kind = kind or f"{marker.lstrip('.')} report"
    output = Path(output).expanduser().absolute()
    if output.exists() and not output.is_dir():
        raise OutputExistsError(f"output {str(output)!r} exists and is not a folder")
    if output.is_dir() and any(output.iterdir()):
        if not overwrite:
            raise OutputExistsError(f"output folder {str(output)!r} exists and is not empty; pass --overwrite to "
                                    f"replace it, or choose another --output")
        if not (output / marker).is_file():
            raise OutputExistsError(f"output folder {str(output)!r} is not empty and is no {kind} (it has no {marker} "
                                    f"file): refusing to replace it even with --overwrite; choose another --output")
        foreign = foreign_files(output, marker)
        if foreign is None:
            raise OutputExistsError(f"output folder {str(output)!r} was written by an older omnijet-weaver (its "
                                    f"{marker} file lists no files): delete it yourself, or choose another --output")
        if foreign:
            raise OutputExistsError(f"output folder {str(output)!r} holds {len(foreign)} file(s) that its {kind} "
                                    f"did not write (e.g. {foreign[0]}): refusing to replace it even with "
                                    f"--overwrite; move them away, or choose another --output")
    parent = next(p for p in (output, *output.parents) if p.exists())
    if not parent.is_dir():
        raise OutputExistsError(f"output {str(output)!r}: {str(parent)!r} is a file, not a folder")
    check_writable_folder(parent, f"output {str(output)!r}")
    return output


class ReportFolder:
    """Context manager: yields the hidden work folder ``.<output>.partial-<host>-<pid>`` (``-2``, ... when the
    same process uses it again), holding the ``marker`` file; publishes it as ``output`` when the block succeeds
    (:func:`omnijet_weaver.atomic.publish`, which lists the files in the marker).

    When the block raises, the work folder is removed; only a failure (not Ctrl-C or SIGTERM) with
    ``keep_failed`` keeps it, with its logs, as ``<output>.failed`` (``-<pid>`` when that exists) and ``say``
    (default: print to stderr) tells where. ``scratch``: a sub-folder of bulky intermediate files (jets,
    checkpoints, predictions) deleted at the end either way unless ``keep_scratch``. ``kind`` names the folder
    in messages (default: from the marker, e.g. "omnijet-weaver-demo report").
    """

    def __init__(self, output, marker: str, overwrite: bool = False, keep_failed: bool = False, *,
                 kind: str | None = None, scratch: str | None = None, keep_scratch: bool = False, say=None):
        self.kind = kind or f"{marker.lstrip('.')} report"
        self.output = check_report_folder(output, marker, overwrite, kind=self.kind)
        self.marker = marker
        self.overwrite = overwrite
        self.keep_failed = keep_failed
        self.scratch = scratch
        self.keep_scratch = keep_scratch
        self.say = say or (lambda message: print(message, file=sys.stderr, flush=True))
        clean_stale_partials(self.output)
        work = partial_path(self.output)
        tries = (work.with_name(f"{work.name}-{i}") for i in range(2, 10_000))
        self.work = work if not work.exists() else next(w for w in tries if not w.exists())
        self.failed = free_name(self.output, ".failed")  # where a failed run is kept (named in its messages)

    def __enter__(self) -> Path:
        self.work.parent.mkdir(parents=True, exist_ok=True)
        self.work.mkdir()
        (self.work / self.marker).write_text(json.dumps(
            {"kind": self.kind, "started": datetime.datetime.now().isoformat(timespec="seconds")}) + "\n")
        return self.work

    def __exit__(self, exc_type, exc, tb):
        scratch = self.work / self.scratch if self.scratch else None
        if scratch is not None and not self.keep_scratch and scratch.exists():
            shutil.rmtree(scratch, ignore_errors=exc_type is not None)
        if exc_type is None:
            publish(self.work, self.output, self.marker, self.overwrite, kind=self.kind)
        elif not self.keep_failed or issubclass(exc_type, KeyboardInterrupt):
            shutil.rmtree(self.work, ignore_errors=True)
        elif self.work.exists():
            kept = self.failed if not os.path.lexists(self.failed) else free_name(self.output, ".failed")
            os.replace(self.work, kept)
            self.work = kept
            self.say(f"stopped ({exc_type.__name__}): the partial {self.kind}, with its logs, is kept in {kept}")
        return False


def write_text(path, text: str) -> None:
    """Write ``text`` under a temporary name, renamed at the end."""
    from ..atomic import atomic_output

    with atomic_output(path) as tmp:
        Path(tmp).write_text(text)


def _json_default(x):
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)  # paths and anything else: their text


def write_json(path, data) -> None:
    """``data`` as indented JSON (numpy scalars and arrays converted, other objects as text; NaN written as NaN)."""
    write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def finite(x):
    """``x`` (nested dicts, lists, tuples) with NaN and infinite floats replaced by None."""
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    if isinstance(x, (float, np.floating)) and not math.isfinite(x):
        return None
    if isinstance(x, np.ndarray):
        return finite(x.tolist())
    return x


def json_text(data) -> str:
    """``data`` as strict, indented JSON text: numpy scalars and arrays converted, NaN and infinities as null
    (:func:`finite`), other objects (paths) as their text."""
    return json.dumps(finite(data), indent=2, default=_json_default, allow_nan=False) + "\n"


def fmt(x, digits: int = 3) -> str:
    """A number for a table: ``digits`` decimals, "–" for None/NaN."""
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "–"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return f"{x:.{digits}f}"


def pm(mean, std, digits: int = 3, sign: bool = False) -> str:
    """``mean ± std`` for a table (just the mean without a finite std; "–" without a finite mean)."""
    if mean is None or not math.isfinite(mean):
        return "–"
    m = f"{mean:+.{digits}f}" if sign else f"{mean:.{digits}f}"
    return m if std is None or not math.isfinite(std) else f"{m} ± {std:.{digits}f}"


def mean_std(values) -> tuple[float, float]:
    """(mean, sample standard deviation with ddof = 1) of the finite values (None and NaN are left out): the one
    "mean ± std over seeds" convention of the reports. The std is NaN with fewer than two values (then
    :func:`pm` shows the mean alone), both are NaN without any."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if not len(v):
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan")


def figure_lines(figures: dict, level: str = "##") -> list[str]:
    """The "Figures" section of a summary.md: one line per figure (``{name: [file names]}``), the PNG shown inline
    where there is one, else a link to the first file; a note when the report has none (``--figures none``);
    ``level``: the heading's markdown level."""
    lines = [f"{level} Figures", ""]
    for key, files in figures.items():
        png = [f for f in files if f.endswith(".png")]
        if png:
            lines.append(f"- {key}: ![{key}]({png[0]})")
        elif files:
            lines.append(f"- {key}: [{files[0]}]({files[0]})")
    if not any(figures.values()):
        lines.append("None written (`--figures none`).")
    return lines


def markdown_table(headers, rows) -> str:
    """A GitHub-flavoured markdown table (``tabulate``, ``tablefmt="github"``), ending in a newline. Cells are
    converted with ``str`` and never reformatted (format numbers with :func:`fmt` first)."""
    import tabulate

    rows = [[str(c) for c in r] for r in rows]
    return tabulate.tabulate(rows, headers=[str(h) for h in headers], tablefmt="github", disable_numparse=True) + "\n"


__all__ = ["OutputExistsError", "ReportFolder", "check_report_folder", "publish", "write_text", "write_json",
           "figure_lines",
           "finite", "json_text", "fmt", "pm", "mean_std",
           "markdown_table"]
