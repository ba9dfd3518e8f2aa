"""Report folders of the evaluation commands: built in a hidden sibling, renamed into place when complete.

    with ReportFolder("report/", marker=".omnijet-weaver-token-quality", overwrite=False) as work:
        write_text(work / "summary.md", "...")       # work is the hidden folder; on success it becomes report/

An existing non-empty output is refused unless ``overwrite``, and even then only a folder that holds the
same ``marker`` file (a previous report of the same command) is replaced. A failed run leaves no output
and removes its hidden folder.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np

from ..atomic import publish  # noqa: F401 (re-exported)
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
    return output


class ReportFolder:
    """Context manager: yields the hidden work folder; publishes it as ``output`` when the block succeeds,
    removes it when the block raises (unless ``keep_failed``)."""

    def __init__(self, output, marker: str, overwrite: bool = False, keep_failed: bool = False):
        self.output = check_report_folder(output, marker, overwrite)
        self.marker = marker
        self.keep_failed = keep_failed
        self.work = self.output.parent / f".{self.output.name}.partial-{os.getpid()}"

    def __enter__(self) -> Path:
        self.work.parent.mkdir(parents=True, exist_ok=True)
        self.work.mkdir()
        (self.work / self.marker).write_text(f"report of {self.marker.lstrip('.')}\n")
        return self.work

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            publish(self.work, self.output)
        elif not self.keep_failed:
            shutil.rmtree(self.work, ignore_errors=True)
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


def markdown_table(headers, rows) -> str:
    """A GitHub-flavoured markdown table; cells are converted with ``str`` (format numbers with :func:`fmt`)."""
    lines = ["| " + " | ".join(map(str, headers)) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


__all__ = ["OutputExistsError", "ReportFolder", "check_report_folder", "publish", "write_text", "write_json", "fmt",
           "pm", "markdown_table"]
