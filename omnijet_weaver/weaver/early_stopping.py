"""Early stopping on the validation loss for the tagger (``network_configs/omnijet_cls.py -o early_stopping N``).

weaver-core 0.5.3 keeps the epoch with the best validation *accuracy* and always runs ``--num-epochs`` epochs;
its loop cannot be broken from a network config. With ``-o early_stopping N`` the network config hands weaver
two thin wrappers around weaver's own ``train_classification`` / ``evaluate_classification``
(``weaver.utils.nn.tools``; the regression pair with ``--regression-mode``), which are not reimplemented:

- **evaluate** passes weaver's loss function through a recorder, so it knows the mean validation loss of the
  epoch (the very number weaver logs as ``Eval AvgLoss``), and returns ``exp(-loss)`` (``loss`` with
  ``--regression-mode``): weaver keeps the epoch with the highest metric, i.e. the lowest validation loss, as
  ``*_best_epoch_state.pt`` (the convention of :mod:`omnijet_weaver.weaver.loops`). A loss lower by less than
  :data:`MIN_REL_IMPROVEMENT` (relative) is numerical noise, not an improvement: weaver then gets the best
  epoch's metric back, so its best epoch stays ours. Each validation logs one line (:data:`EPOCH_LINE`).
  With ``for_training=False`` (``--predict``) it is weaver's function, unchanged.
- **train** skips every epoch once the validation loss has not improved for N epochs in a row, logging
  ``early stopping: validation loss has not improved for N epochs, skipping epoch k``; the validation of a
  skipped epoch is skipped too and returns NaN, which weaver never takes as a new best epoch. (weaver still
  writes that epoch's checkpoint, a copy of the last weights.)

State lives in the process (one weaver run = one process; under DDP each rank keeps its own, and since
weaver's classification evaluation gathers outputs and labels over the ranks, every rank sees the same loss and
takes the same decision). It is not saved: a run resumed with ``--load-epoch`` starts counting afresh.
"""

from __future__ import annotations

import logging
import math
import re

_logger = logging.getLogger("weaver")

#: The per-epoch log line (``%`` format) and its regular expression.
EPOCH_LINE = ("early stopping: epoch %d: validation loss %.9g; best %.9g at epoch %d; %d epoch(s) without "
              "improvement (patience %d)")
EPOCH_RE = re.compile(r"early stopping: epoch (\d+): validation loss (\S+); best (\S+) at epoch (\d+); "
                      r"(\d+) epoch\(s\) without improvement \(patience (\d+)\)")
SKIP_LINE = "early stopping: validation loss has not improved for %d epochs, skipping epoch %d"
#: An epoch improves on the best one when its validation loss is lower by more than this fraction: the validation
#: jets come in freshly shuffled batches every epoch, so an unchanged model's loss moves in the 7th digit.
MIN_REL_IMPROVEMENT = 1e-5
SKIP_RE = re.compile(r"early stopping: validation loss has not improved for (\d+) epochs, skipping epoch (\d+)")


def check_patience(value, where: str = "omnijet_cls") -> int:
    """The patience of ``-o early_stopping`` as an int; 0 (or None / False) = off."""
    if value is None or value is False:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{where}: -o early_stopping takes a number of epochs (the patience; 0 = off), "
                         f"got {value!r}")
    return int(value)


def _weaver_loop(kind: str, extra_args):
    """weaver's own ``train_*`` / ``evaluate_*`` function, as weaver would pick it for this run."""
    from weaver.utils.nn import tools

    args = (extra_args or {}).get("args")
    return getattr(tools, f"{kind}_{'regression' if getattr(args, 'regression_mode', False) else 'classification'}")


def _regression(extra_args) -> bool:
    return bool(getattr((extra_args or {}).get("args"), "regression_mode", False))


class LossRecorder:
    """Wraps weaver's loss function and sums the per-batch losses weighted by the batch size, as weaver's
    evaluation does for its ``Eval AvgLoss`` (same operations, so the same number)."""

    def __init__(self, loss_func):
        if loss_func is None:
            raise ValueError("early stopping needs weaver's loss function (get_loss) in the validation")
        self.loss_func = loss_func
        self.total = 0
        self.count = 0

    def __call__(self, output, label, *args, **kwargs):
        loss = self.loss_func(output, label, *args, **kwargs)
        n = label.shape[0]
        self.total += loss.item() * n
        self.count += n
        return loss

    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")


class EarlyStopping:
    """The train / evaluate pair of one weaver run (see the module docstring)."""

    def __init__(self, patience: int):
        self.patience = int(patience)
        self.best_metric = None
        self.best_loss = float("nan")
        self.best_epoch = -1
        self.bad_epochs = 0
        self.losses = {}  # epoch -> mean validation loss

    @property
    def stopped(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience

    def train(self, model, loss_func, opt, scheduler, train_loader, dev, epoch, steps_per_epoch=None,
              grad_scaler=None, tb_helper=None, extra_args=None):
        if self.stopped:
            _logger.info(SKIP_LINE, self.bad_epochs, epoch)
            return None
        return _weaver_loop("train", extra_args)(
            model, loss_func, opt, scheduler, train_loader, dev, epoch, steps_per_epoch=steps_per_epoch,
            grad_scaler=grad_scaler, tb_helper=tb_helper, extra_args=extra_args)

    def evaluate(self, model, test_loader, dev, epoch, for_training=True, loss_func=None, steps_per_epoch=None,
                 tb_helper=None, extra_args=None, **kwargs):
        evaluate = _weaver_loop("evaluate", extra_args)
        if not for_training:  # --predict: weaver's own evaluation, untouched
            return evaluate(model, test_loader, dev, epoch, for_training=False, loss_func=loss_func,
                            steps_per_epoch=steps_per_epoch, tb_helper=tb_helper, extra_args=extra_args, **kwargs)
        if self.stopped:
            _logger.info("early stopping: epoch %d was skipped, so is its validation", epoch)
            return float("nan")  # never better than weaver's best (NaN compares False both ways)
        recorder = LossRecorder(loss_func)
        evaluate(model, test_loader, dev, epoch, for_training=True, loss_func=recorder,
                 steps_per_epoch=steps_per_epoch, tb_helper=tb_helper, extra_args=extra_args, **kwargs)
        loss = recorder.mean()
        regression = _regression(extra_args)
        metric = loss if regression else math.exp(-loss)
        self.losses[epoch] = loss
        if self.best_epoch < 0:
            improved = math.isfinite(loss)
        else:
            improved = loss < self.best_loss - MIN_REL_IMPROVEMENT * abs(self.best_loss)
        if improved:
            self.best_metric, self.best_loss, self.best_epoch, self.bad_epochs = metric, loss, epoch, 0
        else:
            self.bad_epochs += 1
            # a loss lower only at the level of numerical noise is no improvement: hand weaver the best metric
            # itself, which it does not take as a new best (it wants strictly better), so that weaver's best
            # epoch stays ours
            if self.best_metric is not None and (
                    (metric < self.best_metric) if regression else (metric > self.best_metric)):
                metric = self.best_metric
        _logger.info(EPOCH_LINE, epoch, loss, self.best_loss, self.best_epoch, self.bad_epochs, self.patience)
        if self.stopped:
            _logger.info("early stopping: validation loss has not improved for %d epochs (best %.9g at epoch %d); "
                         "the remaining epochs are skipped", self.bad_epochs, self.best_loss, self.best_epoch)
        return metric


#: The instance made by the last get_train_fn, waiting for its get_evaluate_fn (weaver calls them in this order).
_pending = None


def train_fn(patience: int):
    """get_train_fn: a new :class:`EarlyStopping`'s train (its evaluate goes to the next :func:`evaluate_fn`)."""
    global _pending
    _pending = EarlyStopping(patience)
    _logger.info("early stopping on the validation loss, patience %d epoch(s): the best epoch is the one with "
                 "the lowest validation loss (weaver's metric = exp(-loss))", patience)
    return _pending.train


def evaluate_fn(patience: int):
    """get_evaluate_fn: the evaluate of the instance :func:`train_fn` made (a new one if there is none)."""
    global _pending
    state = _pending if (_pending is not None and _pending.patience == patience) else EarlyStopping(patience)
    _pending = None
    return state.evaluate


def parse_log(text: str) -> dict:
    """The early-stopping lines of a weaver log: ``{"losses": {epoch: loss}, "best_epoch", "best_loss",
    "skipped": [epochs], "patience"}`` (``best_epoch`` -1 without any line)."""
    out = {"losses": {}, "best_epoch": -1, "best_loss": float("nan"), "skipped": [], "patience": None}
    for m in EPOCH_RE.finditer(text):
        out["losses"][int(m.group(1))] = float(m.group(2))
        out["best_loss"], out["best_epoch"], out["patience"] = float(m.group(3)), int(m.group(4)), int(m.group(6))
    out["skipped"] = [int(m.group(2)) for m in SKIP_RE.finditer(text)]
    return out


__all__ = ["EarlyStopping", "LossRecorder", "check_patience", "train_fn", "evaluate_fn", "parse_log", "EPOCH_RE",
           "SKIP_RE"]
