"""Training history as data: ``<model-prefix>_history.jsonl``, written by our hooks inside weaver's process.

Every weaver training with omnijet-weaver's network configs (VQ-VAE, GPT, tagger; with or without
``-o early_stopping``) writes one JSON object per line and epoch next to weaver's checkpoints, appended (flushed
and fsynced) as the epoch ends, i.e. after its validation. Studies read it with :func:`read_history`; nothing
parses weaver's log text. A record::

    {"epoch": 3,                                   # weaver's epoch number (from 0)
     "train": {"loss": 0.41, "accuracy": 0.83},    # the training epoch's figures (None: not trained in this run)
     "val": {"loss": 0.45, "accuracy": 0.81, "metric": 0.81},  # validation figures; "metric": what weaver got
     "lr": 0.001,                                  # learning rate of the first parameter group as the epoch began
     "seconds": {"train": 12.3, "val": 1.2},       # wall time of the training and of the validation pass
     "best_epoch": 2, "best_metric": 0.82,         # weaver's best epoch so far (its *_best_epoch_state.pt)
     "skipped": false}                             # True: skipped by the tagger's early stopping

- figures: the tagger's are weaver's own ``Train AvgLoss`` / ``AvgAcc`` and ``Eval AvgLoss`` / ``AvgAcc`` at full
  precision (``loss`` only with ``--regression-mode``); the VQ-VAE's and GPT's are their epoch summaries
  (``loss``, ``recon_loss``, ``perplexity``, ..., see :mod:`omnijet_weaver.weaver.loops`);
- ``best_epoch`` follows weaver-core 0.5.3's rule: an epoch is the best when its metric is strictly better than
  the best so far (higher; lower with ``--regression-mode``), starting afresh in every weaver process, so after
  a ``--load-epoch`` resume it is counted from the resumed epochs on, as weaver does;
- numbers that are not finite (a skipped epoch's NaN metric, a diverged loss) are written as ``null``;
- with ``--run-mode train`` the record is written after training, ``val`` None.

The file is started afresh by a new run with the same prefix (also a ``--run-mode val`` re-validation, which
records only validations); a ``--load-epoch N`` resume keeps the records of epochs up to N and appends. Under DDP only global rank 0 writes (validation figures are over all ranks, the
training figures are rank 0's own batches).

The state of one run (:class:`TrainingRun`) lives on the unwrapped model object, which weaver hands to both
``train`` and ``evaluate``: weaver executes a network-config file more than once and ``get_train_fn`` /
``get_evaluate_fn`` are separate calls, so no module state is shared between the hooks.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from pathlib import Path

import torch

from ..atomic import atomic_output
from ..errors import InputFileError
from .compat import regression_mode

#: ``<model-prefix>`` + this = the history file.
HISTORY_SUFFIX = "_history.jsonl"


def history_path(prefix_or_path) -> Path:
    """The history file of a model prefix (``out/cls`` -> ``out/cls_history.jsonl``); a path that already ends
    with :data:`HISTORY_SUFFIX` is returned as it is."""
    text = os.fspath(prefix_or_path)
    return Path(text if text.endswith(HISTORY_SUFFIX) else text + HISTORY_SUFFIX)


def _parse(path: Path, strict: bool) -> list[dict]:
    records = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
                    raise ValueError("no integer 'epoch'")
            except ValueError as err:
                if not strict:
                    break  # a resume keeps the complete records before an interrupted write
                raise InputFileError(f"training history {path}, line {number}: not a history record ({err}); the "
                                     f"file is damaged (an interrupted write?): rerun the training") from None
            records.append(record)
    return records


def read_history(prefix_or_path) -> list[dict]:
    """The records of a training history (one dict per epoch, in the order written; format in the module
    docstring), from a model prefix (``--model-prefix out/cls``) or the ``*_history.jsonl`` path itself.
    Raises :class:`~omnijet_weaver.errors.InputFileError` when the file is missing or damaged."""
    path = history_path(prefix_or_path)
    if not path.is_file():
        raise InputFileError(f"training history {path} does not exist: weaver wrote no epoch for this model prefix "
                             f"(trained with omnijet-weaver's network configs? see the run's log)")
    return _parse(path, strict=True)


def validation_metrics(history: list[dict], as_logged: bool = False) -> list[float]:
    """weaver's validation metric of every validated epoch (NaN where ``null``), in epoch order; with
    ``as_logged``, rounded as weaver's log prints it ("Current validation metric: %.5f",
    :func:`omnijet_weaver.weaver.compat.logged`), the figures studies once read from the log."""
    from .compat import logged

    values = [float("nan") if r["val"]["metric"] is None else float(r["val"]["metric"])
              for r in history if r.get("val") is not None]
    return [logged(v) for v in values] if as_logged else values


def unwrap(model):
    """The user's module inside DDP / DataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        else:
            return model


def global_rank() -> int:
    """This process's global rank (0 without torch.distributed)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", "0"))


def _clean(value):
    """``value`` with every number a plain Python int / float and non-finite floats as None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else None


class HistoryWriter:
    """Appends records to ``<prefix>_history.jsonl``: started afresh, or, with ``resume_epoch`` (weaver's
    ``--load-epoch``), keeping the records of the epochs up to it."""

    def __init__(self, prefix, resume_epoch=None):
        self.path = history_path(prefix)
        self.path.parent.mkdir(parents=True, exist_ok=True)  # weaver makes the folder only after epoch 0's training
        kept = []
        if resume_epoch is not None and self.path.is_file():
            kept = [r for r in _parse(self.path, strict=False) if r["epoch"] <= resume_epoch]
        with atomic_output(self.path) as tmp:
            with open(tmp, "w") as f:
                f.writelines(json.dumps(r, allow_nan=False) + "\n" for r in kept)
                f.flush()
                os.fsync(f.fileno())

    def write(self, record: dict) -> None:
        line = json.dumps(_clean(record), allow_nan=False)
        with open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())


def _better(metric, best, regression: bool) -> bool:
    """weaver-core 0.5.3's test for a new best epoch (strictly better; NaN never is)."""
    return (metric < best) if regression else (metric > best)


class TrainingRun:
    """The state of one weaver training run, on the unwrapped model (:meth:`of`): the history writer, the
    training half of the current epoch's record, weaver's best epoch so far, and named per-run slots for the
    hooks (:meth:`slot`, e.g. the tagger's early stopping)."""

    #: Attribute of the unwrapped model that holds the run.
    ATTRIBUTE = "_omnijet_weaver_run"

    def __init__(self, args=None):
        self.regression = regression_mode(args)
        self.validating = "val" in (getattr(args, "run_mode", None) or ["val"])
        self.best_metric = math.inf if self.regression else 0.0  # weaver's starting value
        self.best_epoch = None
        self.records = []
        self._pending = None
        self._slots = {}
        prefix = getattr(args, "model_prefix", None)
        self.writer = (HistoryWriter(prefix, getattr(args, "load_epoch", None))
                       if prefix and global_rank() == 0 else None)

    @classmethod
    def of(cls, model, extra_args) -> "TrainingRun":
        """The run of ``model`` (created on first use, from weaver's ``extra_args["args"]``)."""
        core = unwrap(model)
        run = core.__dict__.get(cls.ATTRIBUTE)
        if run is None:
            run = cls((extra_args or {}).get("args"))
            core.__dict__[cls.ATTRIBUTE] = run  # a plain attribute: not in the state dict, not a submodule
        return run

    def slot(self, name: str, factory):
        """The run's object ``name``, made by ``factory()`` on first use."""
        if name not in self._slots:
            self._slots[name] = factory()
        return self._slots[name]

    def trained(self, epoch: int, figures, seconds: float, lr=None, skipped: bool = False) -> None:
        """The training half of epoch ``epoch`` (``figures`` None when it was skipped)."""
        if self._pending is not None:  # an epoch that was never validated
            self._finish(self._pending)
        self._pending = {"epoch": int(epoch), "train": figures, "val": None, "lr": lr,
                         "seconds": {"train": seconds, "val": None}, "skipped": bool(skipped)}
        if not self.validating:
            self._finish(self._pending)

    def validated(self, epoch: int, figures, metric: float, seconds: float, skipped: bool = False,
                  extra=None) -> dict:
        """The validation of epoch ``epoch``: ``metric`` is what the hook returns to weaver. Completes the
        epoch's record, updates weaver's best epoch and writes the record; returns it."""
        record = self._pending
        if record is None or record["epoch"] != epoch:
            if record is not None:
                self._finish(record)
            record = {"epoch": int(epoch), "train": None, "val": None, "lr": None,
                      "seconds": {"train": None, "val": None}, "skipped": bool(skipped)}
        if _better(metric, self.best_metric, self.regression):
            self.best_metric, self.best_epoch = metric, int(epoch)
        record["val"] = None if figures is None else {**figures, "metric": metric}
        record["seconds"]["val"] = seconds
        record["skipped"] = record["skipped"] or bool(skipped)
        if extra:
            record.update(extra)
        return self._finish(record)

    def _finish(self, record: dict) -> dict:
        record = {**record, "best_epoch": self.best_epoch,
                  "best_metric": self.best_metric if self.best_epoch is not None else None}
        record = _clean(record)
        self._pending = None
        self.records.append(record)
        if self.writer is not None:
            self.writer.write(record)
        return record


def learning_rate(opt):
    """The learning rate of the optimizer's first parameter group (None without optimizer)."""
    return None if opt is None else float(opt.param_groups[0]["lr"])


__all__ = ["HISTORY_SUFFIX", "history_path", "read_history", "validation_metrics", "unwrap", "global_rank",
           "HistoryWriter", "TrainingRun", "learning_rate"]
