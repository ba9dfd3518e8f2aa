"""The shared base of the studies that run the real ``weaver`` command: the demo (:mod:`.demo`) and the
transfer-learning study (:mod:`.transfer`).

A study subclasses :class:`WeaverStudy`: it names its marker file, its stages and its summary file, and
implements ``build()`` (the stages, which fill ``self.summary``) and ``markdown(summary)``. The base gives it:

- the report folder (:class:`~omnijet_weaver.evaluation.report.ReportFolder`): checked before any work, built
  in a hidden sibling ``.<output>.partial-<host>-<pid>`` with ``data/`` (jets, checkpoints, predictions) and ``logs/``
  (the weaver logs), renamed to ``--output`` when complete; a failed run keeps the partial folder with its logs
  as ``<output>.failed`` and says where (an interrupted one keeps nothing); ``data/`` is deleted at the end
  unless ``keep_data``;
- ``say``, ``shown`` and the stage timer (``[i/n] name: done in ... s``);
- the weaver command lines: the options every run shares (:meth:`WeaverStudy.common_args`), a tagger training
  (:meth:`WeaverStudy.train_args`), a ``--predict`` run (:meth:`WeaverStudy.predict_args`), the validation
  tiling (:func:`validation_tiling`), the cost that starts the longest runs first (:func:`training_cost`), the
  runner, ``commands.sh``;
- the summary: written as strict JSON (NaN as null) and ``summary.md`` rendered from that JSON text alone, so
  the markdown never shows a number the JSON does not hold.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path

from ..errors import ConfigError
from ..evaluation.report import ReportFolder, json_text, write_text
from ..weaver.runner import MODES, WeaverRunner, repo_configs, weaver_executable

#: Batch size of every ``weaver --predict`` run.
PREDICT_BATCH = 256
#: Largest validation batch (jets); the validation jets are tiled into the fewest batches of at most this size.
MAX_VAL_BATCH = 512


def validation_tiling(n_val: int, max_batch: int = MAX_VAL_BATCH) -> tuple[int, int]:
    """``(batch_size, steps)`` of weaver's validation with ``n_val`` jets: ``batch_size * steps == n_val`` exactly,
    with the fewest steps whose batch is at most ``max_batch`` jets. weaver's in-memory validation cycles
    through the jets, so with these settings every epoch sees each validation jet exactly once."""
    if n_val < 1:
        raise ConfigError(f"the validation needs at least one jet, got {n_val}: raise --val-jets")
    steps = next(k for k in range(math.ceil(n_val / max_batch), n_val + 1) if n_val % k == 0)
    return n_val // steps, steps


def training_cost(epochs: int, steps: int, batch_size: int, n_val: int, mode: str) -> float:
    """Rough relative cost of one tagger training (jets passed through the network, a fixed start-up cost;
    a frozen backbone trains only its head): the runner starts the costliest runs first."""
    return epochs * (steps * batch_size * (0.4 if mode == "frozen" else 1.0) + n_val / 2) + 400


@dataclasses.dataclass(kw_only=True)
class JetStudyConfig:
    """Settings shared by the studies that read jet files and train their own classifiers (token quality,
    generation fidelity); each study's config adds its own and may change these defaults.

    Attributes:
        files: ROOT or parquet files of real jets (JetClass layout).
        output: report folder (refused when it exists and is not empty, unless ``overwrite``).
        data_config: weaver data config the jets are read with (default: the shipped ``qg_top.yaml``).
        seed: seed of the jet sampling and of the classifiers.
        epochs, patience: classifier training (maximum epochs; early stopping on the validation loss).
        batch_size: jets per batch when reading, tokenizing or generating.
        device: torch device.
        overwrite: replace an earlier report of the same command.
        figures: formats the figures are written in (of ``evaluation.plots.FIGURE_FORMATS``); empty: none (the
            report then has its tables only, and matplotlib is not needed).
    """

    files: list
    output: Path
    data_config: str | None = None
    seed: int = 0
    epochs: int = 30
    patience: int = 5
    batch_size: int = 256
    device: str = "cpu"
    overwrite: bool = False
    figures: tuple = ("png", "pdf")

    def check_figures(self) -> None:
        """Refuse a figure format that is not one of ``FIGURE_FORMATS``."""
        from ..evaluation.plots import FIGURE_FORMATS

        bad = [f for f in self.figures if f not in FIGURE_FORMATS]
        if bad:
            raise ValueError(f"unknown figure format(s) {', '.join(map(str, bad))}: choose from "
                             f"{', '.join(FIGURE_FORMATS)} (or none)")


class WeaverStudy:
    """A study run in a report folder that trains and predicts with the real ``weaver`` command (see the module
    docstring). ``config`` needs ``output``, ``overwrite``, ``keep_data``, ``n_workers`` and ``check()``.

    Subclasses set the class attributes and implement :meth:`build` and :meth:`markdown`; :meth:`prepare` may
    do work that must pass before any file is written.
    """

    #: File in every report of the study; ``--overwrite`` only ever replaces a folder that holds it.
    marker: str = ""
    #: What the folder is, in messages (e.g. "omnijet-weaver-demo report").
    kind: str = ""
    #: The stages, in the order :meth:`stage` runs them (printed as ``[i/n]``).
    stages: tuple = ()
    #: The summary JSON in the report (summary.md is rendered from it).
    summary_file: str = "summary.json"
    #: Comment lines at the top of ``commands.sh``.
    commands_comment: tuple = ()

    def __init__(self, config, out=None):
        config.check()
        self.cfg = config
        self.out = out
        self.folder = ReportFolder(config.output, self.marker, config.overwrite, keep_failed=True, kind=self.kind,
                                   scratch="data", keep_scratch=config.keep_data, say=self.say)
        self.output, self.work = self.folder.output, self.folder.work
        self.data, self.logs = self.work / "data", self.work / "logs"
        self.configs = repo_configs()
        self.network_config, self.data_config = self.configs["network"], self.configs["data"]
        weaver_executable()
        self.commands = []  # weaver command lines, for commands.sh
        self.times = {}  # stage name -> seconds
        self.summary = {}
        self._t0 = None

    # -- to implement -----------------------------------------------------------------------------------------
    def headline(self) -> str:
        """The first line printed."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Checks and reading before the report folder is made (nothing written)."""

    def build(self) -> None:
        """The stages (inside the work folder); they fill ``self.summary``."""
        raise NotImplementedError

    def markdown(self, summary: dict) -> str:
        """``summary.md`` from the summary as read back from its JSON."""
        raise NotImplementedError

    # -- messages ---------------------------------------------------------------------------------------------
    def say(self, message: str) -> None:
        print(message, file=self.out or sys.stdout, flush=True)

    def shown(self, path) -> str:
        """A path as the user will find it: inside the final report folder."""
        return str(path).replace(str(self.work), str(self.output), 1)

    def elapsed(self) -> float:
        """Seconds since :meth:`run` started."""
        return time.perf_counter() - self._t0

    def stage(self, name: str, fn):
        """Run ``fn()`` as the stage ``name`` (one of :attr:`stages`), printed with its wall time; returns its
        result."""
        head = f"[{self.stages.index(name) + 1}/{len(self.stages)}] {name}"
        self.say(f"{head} ...")
        start = time.perf_counter()
        result = fn()
        self.times[name] = time.perf_counter() - start
        self.say(f"{head}: done in {self.times[name]:.1f} s (total {self.elapsed():.1f} s)")
        return result

    # -- the run ----------------------------------------------------------------------------------------------
    def run(self) -> dict:
        """Run the study; returns the summary (as written to :attr:`summary_file`, NaN as None)."""
        self._t0 = time.perf_counter()
        self.say(self.headline())
        self.prepare()
        try:
            with self.folder:
                self.data.mkdir()
                self.logs.mkdir()
                self.build()
                written = self.write_summary()
        finally:
            self.work = self.folder.work  # where a failed run was kept
        self.say(f"done in {self.elapsed():.1f} s: {self.output / 'summary.md'}")
        return written

    def write_summary(self) -> dict:
        """:attr:`summary_file` and ``summary.md`` rendered from it (after the last stage, so that its wall time
        is in); returns the summary as read back from the JSON."""
        self.summary["stage_seconds"] = dict(self.times)
        self.summary["total_seconds"] = self.elapsed()
        text = json_text(self.summary)
        written = json.loads(text)
        write_text(self.work / self.summary_file, text)
        write_text(self.work / "summary.md", self.markdown(written))
        return written

    def write_commands(self) -> None:
        """``commands.sh``: every weaver command line of the run, with the report folder's paths."""
        lines = ["#!/usr/bin/env bash", *(f"# {c}" for c in self.commands_comment), ""]
        lines += [shlex.join([self.shown(c) if os.path.isabs(str(c)) else str(c) for c in cmd])
                  for cmd in self.commands]
        write_text(self.work / "commands.sh", "\n".join(lines) + "\n")

    # -- weaver command lines ---------------------------------------------------------------------------------
    def runner(self) -> WeaverRunner:
        """``n_workers`` weaver runs at a time, the CPU threads shared among them, run in ``data/``."""
        concurrent = self.cfg.n_workers
        failed = lambda path: str(path).replace(str(self.work), str(self.folder.failed), 1)  # noqa: E731
        return WeaverRunner(concurrent, max(1, (os.cpu_count() or 1) // concurrent), cwd=self.data, display=failed)

    def mode_options(self, mode: str) -> list:
        """weaver ``-o`` options of a tagger mode (:data:`~omnijet_weaver.weaver.runner.MODES`)."""
        return list(MODES[mode][1])

    def common_args(self) -> list:
        """The weaver options of every run: the data and network configs, CPU only, no loader workers."""
        return ["--data-config", self.data_config, "--network-config", self.network_config, "--gpus", "",
                "--num-workers", "0"]

    def train_args(self, train_files, val_files, options, prefix, *, batch_size: int, epochs: int, steps: int,
                   val_tiling: tuple, lr: float) -> list:
        """A tagger training: in memory, ``epochs`` of ``steps`` batches (one pass over the labelled jets),
        validation tiled as ``val_tiling`` = (batch size, steps), AdamW at ``lr`` with weaver's flat+decay."""
        val_batch, val_steps = val_tiling
        return ["--data-train", *train_files, "--data-val", *val_files, *self.common_args(), *options,
                "--model-prefix", prefix, "--in-memory", "--fetch-step", "1", "--batch-size", batch_size,
                "--num-epochs", epochs, "--steps-per-epoch", steps, "--batch-size-val", val_batch,
                "--steps-per-epoch-val", val_steps, "--optimizer", "adamw", "--start-lr", f"{lr:g}",
                "--lr-scheduler", "flat+decay", "--auto-clean"]

    def predict_args(self, test_files, options, prefix, output) -> list:
        """``weaver --predict`` of ``test_files`` with the best epoch of the training ``prefix`` (the same network
        ``options`` as the training), written to ``output``."""
        return ["--predict", "--data-test", *test_files, *self.common_args(), *options,
                "--model-prefix", f"{prefix}_best_epoch_state.pt", "--batch-size", PREDICT_BATCH,
                "--predict-output", output]


__all__ = ["WeaverStudy", "validation_tiling", "training_cost", "PREDICT_BATCH", "MAX_VAL_BATCH"]
