"""Running the real ``weaver`` command from Python: the pieces shared by the demo (:mod:`omnijet_weaver.studies.demo`)
and the transfer-learning study (:mod:`omnijet_weaver.studies.transfer`).

- :func:`repo_configs`, :func:`weaver_executable`: the shipped network / data configs and the ``weaver``
  command of this environment;
- :class:`WeaverJob`, :class:`WeaverRunner`: weaver command lines run several at a time, each with its share of
  the CPU threads and its own log, every process stopped when one fails or on Ctrl-C;
- :meth:`WeaverJob.history`: a training's per-epoch record, the ``<model-prefix>_history.jsonl`` our hooks write
  (:mod:`omnijet_weaver.weaver.history`; weaver's log text is for humans only);
- :func:`read_predictions`, :func:`read_class_predictions`: ``weaver --predict`` outputs.

The studies' report folders are :class:`omnijet_weaver.evaluation.report.ReportFolder`
(:mod:`omnijet_weaver.studies.base`).
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from ..errors import (
    OutputExistsError,  # noqa: F401 (re-exported)
    WeaverRunError,  # noqa: F401 (re-exported)
)

#: Tagger training modes: name -> (label in tables and plots, weaver ``-o`` options). Fine-tuning from the
#: packaged generative model is the network config's default, so it needs no option.
MODES = {
    "finetune": ("fine-tuned", []),
    "scratch": ("from scratch", ["-o", "pretrained", "None"]),
    "frozen": ("backbone fixed", ["-o", "freeze_backbone", "True"]),
}




#: A Python program that asks Linux to send it SIGTERM when its parent dies (prctl PR_SET_PDEATHSIG, kept across
#: exec), then becomes ``argv[2:]`` (weaver). argv[1] is the parent's pid: if the parent is gone already, it stops.
EXEC_TIED_TO_PARENT = """import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)
except Exception:
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(143)
os.execv(sys.argv[2], sys.argv[2:])
"""


# --------------------------------------------------------------------------------------------------------
# the shipped configs and the weaver command
# --------------------------------------------------------------------------------------------------------


def repo_configs() -> dict:
    """Paths of the shipped network and data configs weaver runs with (``omnijet_cls.py``, ``qg_top.yaml``
    inside the installed package, :mod:`omnijet_weaver.weaver.configs`)."""
    from .configs import data_config, network_config

    return {"network": network_config("omnijet_cls"), "data": data_config("qg_top")}


def weaver_executable() -> str:
    """The ``weaver`` command of this Python environment."""
    local = Path(sys.executable).parent / "weaver"
    if local.is_file():
        return str(local)
    found = shutil.which("weaver")
    if not found:
        raise FileNotFoundError("the `weaver` command is not installed: pip install weaver-core==0.5.3")
    return found


# --------------------------------------------------------------------------------------------------------
# weaver runs
# --------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class WeaverJob:
    """One weaver command line, its log and what it is (for messages and the report).

    ``then``: jobs run right after this one in the same slot, only if it succeeded (e.g. ``--predict`` with the
    checkpoint a training wrote); ``on_done`` is called once the job and its follow-ups have finished.
    """

    name: str
    args: list
    log: Path
    cost: float = 1.0  # relative run time (follow-ups included), to start the longest jobs first
    seconds: float = float("nan")
    then: list = dataclasses.field(default_factory=list)

    @property
    def model_prefix(self) -> str:
        """The job's ``--model-prefix`` (a :class:`ValueError` when it has none)."""
        args = [str(a) for a in self.args]
        if "--model-prefix" not in args[:-1]:
            raise ValueError(f"weaver job {self.name!r} has no --model-prefix")
        return args[args.index("--model-prefix") + 1]

    def history(self) -> list:
        """The training's history, one record per epoch (:func:`omnijet_weaver.weaver.history.read_history`)."""
        from .history import read_history

        return read_history(self.model_prefix)


class WeaverRunner:
    """Runs weaver command lines, several at a time, each with its share of the CPU threads; stops every
    process it started when one fails or on Ctrl-C."""

    def __init__(self, concurrent: int, threads_per_job: int, cwd: Path, display=str):
        self.concurrent = max(1, concurrent)
        self.threads = max(1, threads_per_job)
        self.cwd = cwd
        self.display = display
        self._procs = set()
        self._lock = threading.Lock()
        self._stopping = False
        self.exe = weaver_executable()

    def command(self, job: WeaverJob) -> list:
        return [self.exe] + [str(a) for a in job.args]

    def launched(self, job: WeaverJob) -> list:
        """What is started for ``job``: its :meth:`command`, on Linux through :data:`EXEC_TIED_TO_PARENT`, so that
        weaver stops even when this process is killed without a chance to stop it (SIGKILL)."""
        if not sys.platform.startswith("linux"):
            return self.command(job)
        return [sys.executable, "-c", EXEC_TIED_TO_PARENT, str(os.getpid()), *self.command(job)]

    def _run_one(self, job: WeaverJob) -> WeaverJob:
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads),
                   PYTHONUNBUFFERED="1")
        start = time.perf_counter()
        job.log.parent.mkdir(parents=True, exist_ok=True)
        with open(job.log, "w") as log:
            log.write("$ " + shlex.join(self.command(job)) + "\n\n")
            log.flush()
            with self._lock:
                if self._stopping:
                    raise WeaverRunError("stopped")
                proc = subprocess.Popen(self.launched(job), cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
                                        env=env, stdin=subprocess.DEVNULL)
                self._procs.add(proc)
            try:
                rc = proc.wait()
            finally:
                with self._lock:
                    self._procs.discard(proc)
        job.seconds = time.perf_counter() - start
        if rc != 0:
            tail = job.log.read_text(errors="replace").strip().splitlines()[-15:]
            raise WeaverRunError(f"weaver ({job.name}) failed with exit code {rc}; its log is "
                                 f"{self.display(job.log)}; last lines:\n    " + "\n    ".join(tail))
        return job

    def _run(self, job: WeaverJob) -> WeaverJob:
        self._run_one(job)
        for follow_up in job.then:
            self._run_one(follow_up)
        return job

    def stop(self) -> None:
        """Terminate the weaver processes this runner started (and only those)."""
        with self._lock:
            self._stopping = True
            procs = list(self._procs)
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

    def run(self, jobs, on_done=None) -> list:
        """Run ``jobs`` (longest first, ``concurrent`` at a time); ``on_done(job)`` after each. Raises the first
        failure after stopping the others."""
        order = sorted(jobs, key=lambda j: -j.cost)
        with cf.ThreadPoolExecutor(self.concurrent) as pool:
            futures = [pool.submit(self._run, j) for j in order]
            try:
                for f in cf.as_completed(futures):
                    job = f.result()
                    if on_done is not None:
                        on_done(job)
            except BaseException:
                for f in futures:
                    f.cancel()
                self.stop()
                raise
        return list(jobs)


# --------------------------------------------------------------------------------------------------------
# what weaver predicted
# --------------------------------------------------------------------------------------------------------


def read_predictions(path: Path) -> dict:
    """weaver --predict output (ROOT) of the top-vs-QCD tagger: ``is_top``, ``score_top`` and the observers."""
    import uproot

    with uproot.open(path) as f:
        tree = f[f.keys()[0].split(";")[0]]
        names = set(tree.keys())
        wanted = [k for k in ("label_Tbqq", "score_label_Tbqq", "score_label_QCD", "jet_pt", "jet_eta",
                              "jet_energy", "jet_nparticles") if k in names]
        arrays = tree.arrays(wanted, library="np")
    return {"is_top": arrays["label_Tbqq"].astype(bool), "score_top": arrays["score_label_Tbqq"].astype(np.float64),
            "score_qcd": arrays["score_label_QCD"].astype(np.float64),
            **{k: arrays[k].astype(np.float64) for k in ("jet_pt", "jet_eta", "jet_energy", "jet_nparticles")
               if k in arrays}}


def read_class_predictions(path: Path, label_names) -> tuple[np.ndarray, np.ndarray]:
    """weaver --predict output (ROOT) of a classifier with ``simple`` labels ``label_names`` (the data config's
    order): (true class index per jet, scores (jets, classes))."""
    import uproot

    with uproot.open(path) as f:
        tree = f[f.keys()[0].split(";")[0]]
        names = set(tree.keys())
        missing = [k for n in label_names for k in (n, f"score_{n}") if k not in names]
        if missing:
            raise KeyError(f"weaver's prediction file {path} lacks {', '.join(missing)}")
        arrays = tree.arrays(list(label_names) + [f"score_{n}" for n in label_names], library="np")
    truth = np.stack([arrays[n] for n in label_names], axis=1)
    scores = np.stack([arrays[f"score_{n}"] for n in label_names], axis=1).astype(np.float64)
    return np.argmax(truth, axis=1), scores


__all__ = ["MODES", "WeaverRunError", "OutputExistsError", "repo_configs", "weaver_executable",
           "WeaverJob", "WeaverRunner", "read_predictions",
           "read_class_predictions"]
