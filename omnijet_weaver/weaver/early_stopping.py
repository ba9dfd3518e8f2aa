"""Early stopping on the validation loss for the tagger (``network_configs/omnijet_cls.py -o early_stopping N``).

weaver-core 0.5.3 keeps the epoch with the best validation *accuracy* and always runs ``--num-epochs`` epochs;
its loop cannot be broken from a network config. The tagger's hooks (:class:`omnijet_weaver.weaver.loops.
TaggerLoops`) wrap weaver's own ``train_classification`` / ``evaluate_classification`` and, with
``-o early_stopping N``, consult one :class:`EarlyStopping` per run (kept on the model with the run's history,
:class:`omnijet_weaver.weaver.history.TrainingRun`):

- after each validation, :meth:`EarlyStopping.update` gets the mean validation loss (weaver's ``Eval AvgLoss``,
  recorded through its loss function) and gives the metric to hand weaver: ``exp(-loss)`` (``loss`` with
  ``--regression-mode``), so that weaver keeps the epoch with the lowest validation loss as
  ``*_best_epoch_state.pt`` (the convention of :mod:`omnijet_weaver.weaver.loops`). A loss lower by less than
  :data:`MIN_REL_IMPROVEMENT` (relative) is numerical noise, not an improvement: weaver then gets the best
  epoch's metric back, which it does not take as a new best, so its best epoch stays ours;
- once the validation loss has not improved for N epochs in a row (:attr:`EarlyStopping.stopped`), every
  further epoch is skipped (training and validation; the validation returns NaN, never weaver's best; weaver
  still writes that epoch's checkpoint, a copy of the last weights). Each step is logged for humans
  (``early stopping: ...``); the history file records it as data (``skipped``, ``early_stopping``).

Under DDP each rank keeps its own state; weaver's classification evaluation gathers outputs and labels over
the ranks, so every rank sees the same loss and takes the same decision. It is not saved: a run resumed with
``--load-epoch`` starts counting afresh.
"""

from __future__ import annotations

import logging
import math

from ..errors import ConfigError

_logger = logging.getLogger("weaver")

#: An epoch improves on the best one when its validation loss is lower by more than this fraction: the validation
#: jets come in freshly shuffled batches every epoch, so an unchanged model's loss moves in the 7th digit.
MIN_REL_IMPROVEMENT = 1e-5


def check_patience(value, where: str = "omnijet_cls") -> int:
    """The patience of ``-o early_stopping`` as an int; 0 (or None / False) = off."""
    if value is None or value is False:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{where}: -o early_stopping takes a number of epochs (the patience; 0 = off), "
                          f"got {value!r}")
    return int(value)


class EarlyStopping:
    """The early-stopping decisions of one run (see the module docstring)."""

    def __init__(self, patience: int):
        self.patience = int(patience)
        self.best_metric = None
        self.best_loss = float("nan")
        self.best_epoch = -1
        self.bad_epochs = 0

    @property
    def stopped(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience

    def update(self, epoch: int, loss: float, regression: bool) -> float:
        """Epoch ``epoch``'s mean validation loss; returns the metric to hand weaver (higher = better, lower with
        ``regression``)."""
        metric = loss if regression else math.exp(-loss)
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
        _logger.info("early stopping: epoch %d: validation loss %.9g; best %.9g at epoch %d; %d epoch(s) without "
                     "improvement (patience %d)", epoch, loss, self.best_loss, self.best_epoch, self.bad_epochs,
                     self.patience)
        if self.stopped:
            _logger.info("early stopping: validation loss has not improved for %d epochs (best %.9g at epoch %d); "
                         "the remaining epochs are skipped", self.bad_epochs, self.best_loss, self.best_epoch)
        return metric

    def state(self) -> dict:
        """What the history records (``early_stopping``): patience, best epoch and loss, epochs without
        improvement, whether the remaining epochs are skipped."""
        return {"patience": self.patience, "best_epoch": self.best_epoch if self.best_epoch >= 0 else None,
                "best_loss": self.best_loss, "bad_epochs": self.bad_epochs, "stopped": self.stopped}


__all__ = ["MIN_REL_IMPROVEMENT", "EarlyStopping", "check_patience"]
