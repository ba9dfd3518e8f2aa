"""Our training and evaluation hooks for weaver's ``get_train_fn`` / ``get_evaluate_fn``.

- :func:`train`, :func:`evaluate`: our own loops, for the VQ-VAE and the generative model (below);
- :class:`TaggerLoops`: the tagger's, always: weaver's own ``train_classification`` / ``evaluate_classification``
  (the regression pair with ``--regression-mode``) passed through, with the early stopping of
  :mod:`omnijet_weaver.weaver.early_stopping` when ``-o early_stopping N`` is given.

Every hook records its epoch in the run's history, ``<model-prefix>_history.jsonl``
(:mod:`omnijet_weaver.weaver.history`).

Our own loops train any omnijet-weaver model whose ``forward`` returns a dict with a scalar ``loss`` and whose
``batch_stats(out)`` returns ``{name: (sum, count)}`` (numbers or 0-dim tensors, kept on the device: the loops
read them once per epoch and every :data:`PROGRESS_EVERY` batches for the progress bar) for the per-epoch
summary (e.g. reconstruction error, perplexity). Models may also define ``jet_scores(out)`` -> (B, k) numpy array, what ``--predict`` writes,
and ``epoch_summary(stats)`` -> ``{name: value}`` to derive the logged figures from the
:class:`EpochStats` (e.g. codebook usage); the figures must include ``loss``.

The loops follow weaver's own (tqdm progress, per-step schedulers, grad clipping, AMP, tensorboard) and
the contract of weaver-core 0.5.3:

- ``train(model, loss_func, opt, scheduler, train_loader, dev, epoch, steps_per_epoch=None,
  grad_scaler=None, tb_helper=None, extra_args=None)``;
- ``evaluate(model, loader, dev, epoch, for_training=True, loss_func=None, steps_per_epoch=None,
  tb_helper=None, extra_args=None)`` returns a float during training, higher = better, so weaver's best
  epoch is the one with the lowest validation loss whatever ``--regression-mode`` says: ``exp(-loss)``
  normally, ``loss`` with ``--regression-mode``; and ``(loss, scores, labels, observers)`` for ``--predict``.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict

import numpy as np
import torch
import tqdm

from ..errors import ConfigError
from .compat import concat, regression_mode, weaver_loop
from .early_stopping import EarlyStopping
from .history import TrainingRun, learning_rate, unwrap

_logger = logging.getLogger("weaver")


def _autocast(extra_args, dev):
    args = (extra_args or {}).get("args")
    enabled = bool(getattr(args, "use_amp", False))
    dtype = torch.bfloat16 if getattr(args, "amp_dtype", "bf16") == "bf16" else torch.float16
    return torch.autocast(dev.type if isinstance(dev, torch.device) else "cpu", enabled=enabled, dtype=dtype)


#: The progress bar shows the running means every this many batches (each update reads them from the device).
PROGRESS_EVERY = 50


def _sum(total, value):
    """``total + value``, keeping a tensor value a detached float64 tensor on its device (no host sync)."""
    if isinstance(value, torch.Tensor):
        value = value.detach()
        value = value.double() if value.device.type != "mps" else value.float()
    return value if total is None else total + value


class EpochStats:
    """Weighted sums of per-batch figures, accumulated where they are computed and read once per epoch.

    ``add`` takes ``{name: (sum, count)}`` with Python numbers or 0-dim tensors (kept on their device, so a
    training step need not wait for the GPU), and ``{name: tensor}`` histograms (summed elementwise on their
    device). :meth:`means`, :meth:`all_reduce` and :meth:`read` read them from the device: once per epoch.
    """

    def __init__(self):
        self.sums = {}
        self.counts = {}
        self.arrays = {}

    def add(self, stats: dict):
        for name, value in stats.items():
            if isinstance(value, torch.Tensor) and value.ndim > 0:  # histograms are summed elementwise
                self.arrays[name] = _sum(self.arrays.get(name), value)
            else:
                s, c = value
                self.sums[name] = _sum(self.sums.get(name), s)
                self.counts[name] = _sum(self.counts.get(name), c)

    def read(self):
        """Bring the sums to the host: Python floats, histograms as float64 CPU tensors (one transfer)."""
        names = sorted(self.sums)
        values = [self.sums[n] for n in names] + [self.counts[n] for n in names]
        tensors = [v for v in values if isinstance(v, torch.Tensor)]
        if tensors:
            host = iter(torch.stack([t.to(tensors[0].device, torch.float64) for t in tensors]).cpu().tolist())
            values = [next(host) if isinstance(v, torch.Tensor) else float(v) for v in values]
        for i, n in enumerate(names):
            self.sums[n], self.counts[n] = float(values[i]), float(values[len(names) + i])
        self.arrays = {n: a.double().cpu() for n, a in self.arrays.items()}
        return self

    def all_reduce(self):
        self.read()
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return self
        names = sorted(self.sums)
        t = torch.tensor([self.sums[n] for n in names] + [self.counts[n] for n in names], dtype=torch.float64)
        backend = torch.distributed.get_backend()
        dev = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
        t = t.to(dev)
        torch.distributed.all_reduce(t)
        t = t.cpu()
        for i, n in enumerate(names):
            self.sums[n], self.counts[n] = t[i].item(), t[len(names) + i].item()
        for n, a in self.arrays.items():
            a = a.to(dev)
            torch.distributed.all_reduce(a)
            self.arrays[n] = a.cpu()
        return self

    def means(self) -> dict:
        self.read()
        return {n: self.sums[n] / max(self.counts[n], 1e-12) for n in self.sums}

    def progress(self) -> dict:
        """The running means of the losses and accuracies, for the progress bar (reads them from the device)."""
        figures = {}
        for n in self.sums:
            if "loss" in n or "accuracy" in n:
                s, c = (float(x) for x in (self.sums[n], self.counts[n]))
                figures[n] = "%.4f" % (s / max(c, 1e-12))
        return figures


def _summary(core, stats: EpochStats) -> dict:
    if hasattr(core, "epoch_summary"):
        return core.epoch_summary(stats)
    return stats.means()


def _show_progress(tq, stats: EpochStats, num_batches: int, **extra):
    """Update the progress bar with the running means after the first batch and every :data:`PROGRESS_EVERY`."""
    if num_batches == 1 or num_batches % PROGRESS_EVERY == 0:
        tq.set_postfix({**extra, **stats.progress()})


def _fmt(figures: dict) -> str:
    return ", ".join(f"{k}: {v:.5g}" for k, v in figures.items())


def class_label_name(core, data_config):
    """The key of the class index in weaver's label dict (``_label_`` for ``simple`` labels, the one ``custom``
    label otherwise) for a class-conditional generative model (one with ``classes``), else None (the model takes
    no labels; a VQ-VAE's ``conditional`` is its decoder's, not a class condition)."""
    if not getattr(core, "classes", ()):
        return None
    return data_config.label_names[0]


def _class_labels(y, label_name, dev) -> dict:
    """``{"labels": (B,) long}`` for a conditional model's forward, ``{}`` for any other."""
    if label_name is None:
        return {}
    return {"labels": y[label_name].reshape(-1).long().to(dev)}


def train(model, loss_func, opt, scheduler, train_loader, dev, epoch, steps_per_epoch=None, grad_scaler=None,
          tb_helper=None, extra_args=None):
    """One training epoch (weaver's ``train`` hook contract)."""
    run = TrainingRun.of(model, extra_args)
    lr = learning_rate(opt)
    model.train()
    core = unwrap(model)
    input_names = train_loader.dataset.config.input_names
    label_name = class_label_name(core, train_loader.dataset.config)
    clip_grad_norm = getattr(opt, "_clip_grad_norm", float("inf"))
    stats = EpochStats()
    num_batches, num_jets, start = 0, 0, time.time()
    with tqdm.tqdm(train_loader) as tq:
        for X, y, _ in tq:
            inputs = [X[k].to(dev) for k in input_names]
            opt.zero_grad()
            with _autocast(extra_args, dev):
                out = model(*inputs, **_class_labels(y, label_name, dev))
            loss = out["loss"]
            if grad_scaler is None:
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=clip_grad_norm)
                opt.step()
            else:
                grad_scaler.scale(loss).backward()
                grad_scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=clip_grad_norm)
                grad_scaler.step(opt)
                grad_scaler.update()
            if scheduler and getattr(scheduler, "_update_per_step", False):
                scheduler.step()
            with torch.no_grad():
                batch = core.batch_stats(out)
            stats.add(batch)
            num_batches += 1
            num_jets += inputs[0].shape[0]
            _show_progress(tq, stats, num_batches,
                           lr="%.2e" % (scheduler.get_last_lr()[0] if scheduler else opt.param_groups[0]["lr"]))
            if tb_helper:
                tb_helper.global_step += 1
                tb_helper.write_scalars([("Loss/train", loss.item(), tb_helper.global_step)])
            if steps_per_epoch is not None and num_batches >= steps_per_epoch:
                break
    if num_batches == 0:
        raise RuntimeError("the training loader yielded no batch: check --data-train and the selection")
    figures = _summary(core, stats)
    elapsed = time.time() - start
    _logger.info("Processed %d jets in total (avg. speed %.1f jets/s)", num_jets, num_jets / max(elapsed, 1e-9))
    _logger.info("Train epoch %d: %s", epoch, _fmt(figures))
    if tb_helper:
        tb_helper.write_scalars([(f"{k}/train (epoch)", v, epoch) for k, v in figures.items()])
    if scheduler and not getattr(scheduler, "_update_per_step", False):
        scheduler.step()
    run.trained(epoch, figures, time.time() - start, lr)
    return figures


def evaluate(model, test_loader, dev, epoch, for_training=True, loss_func=None, steps_per_epoch=None,
             tb_helper=None, extra_args=None):
    """Validation (``for_training=True``) or prediction pass (weaver's ``evaluate`` hook contract)."""
    start = time.time()
    model.eval()
    core = unwrap(model)
    data_config = test_loader.dataset.config
    label_name = class_label_name(core, data_config)
    stats = EpochStats()
    scores, labels, observers = [], defaultdict(list), defaultdict(list)
    num_batches = 0
    with torch.no_grad(), tqdm.tqdm(test_loader) as tq:
        for X, y, Z in tq:
            inputs = [X[k].to(dev) for k in data_config.input_names]
            with _autocast(extra_args, dev):
                out = model(*inputs, **_class_labels(y, label_name, dev))
            batch = core.batch_stats(out)
            stats.add(batch)
            if not for_training:
                scores.append(core.jet_scores(out))
                for k, v in y.items():
                    labels[k].append(v.numpy(force=True))
                for k, v in Z.items():
                    observers[k].append(v)
            num_batches += 1
            _show_progress(tq, stats, num_batches)
            if steps_per_epoch is not None and num_batches >= steps_per_epoch:
                break
    if num_batches == 0:
        raise RuntimeError("the evaluation loader yielded no batch: check the validation/test files and selection")
    figures = _summary(core, stats.all_reduce())
    loss = figures["loss"]
    _logger.info("%s epoch %s: %s", "Validation" if for_training else "Test", epoch, _fmt(figures))
    if tb_helper:
        mode = "eval" if for_training else "test"
        tb_helper.write_scalars([(f"{k}/{mode} (epoch)", v, epoch) for k, v in figures.items()])
    if for_training:
        run = TrainingRun.of(model, extra_args)
        # weaver picks the lowest with --regression-mode, else the highest, starting from 0: keep it positive
        metric = loss if run.regression else math.exp(-loss)
        run.validated(epoch, figures, metric, time.time() - start)
        return metric
    return (
        loss,
        np.concatenate(scores),
        {k: concat(v) for k, v in labels.items()},
        {k: concat(v) for k, v in observers.items()},
    )


# --------------------------------------------------------------------------------------------------------
# the tagger: weaver's own loops, passed through
# --------------------------------------------------------------------------------------------------------


class LossRecorder:
    """Wraps weaver's loss function and records, from the very numbers weaver's loops use, their epoch figures:
    the training loss as weaver averages it (mean of the per-batch ``loss.item()``, ``Train AvgLoss``), the
    validation loss (mean weighted by the batch size, ``Eval AvgLoss``) and, with ``accuracy``, the fraction of
    jets whose highest logit is the label (``AvgAcc``). It returns weaver's loss tensor itself, draws no random
    number and keeps the per-batch values on the device until the epoch's figures are asked for (no extra
    host-device synchronisation), so weaver computes exactly what it computes without it, as fast."""

    def __init__(self, loss_func, accuracy: bool = True):
        self.loss_func = loss_func
        self.accuracy = accuracy
        self._batches = []  # (loss, batch size, correct) per batch; tensors still on the device

    def __call__(self, output, label, *args, **kwargs):
        loss = self.loss_func(output, label, *args, **kwargs)
        correct = None
        if self.accuracy:
            with torch.no_grad():
                _, preds = output.max(1)
                correct = (preds == label).sum()
        self._batches.append((loss.detach(), label.shape[0], correct))
        return loss

    def _figures(self, weighted: bool) -> dict:
        # the same Python float sums in the same order as weaver's loops
        total_loss, count, correct = 0, 0, 0
        for loss, n, right in self._batches:
            total_loss += loss.item() * n if weighted else loss.item()
            count += n
            correct += right.item() if right is not None else 0
        norm = count if weighted else len(self._batches)
        figures = {"loss": total_loss / norm if norm else float("nan")}
        if self.accuracy:
            figures["accuracy"] = correct / count if count else float("nan")
        return figures

    def train_figures(self) -> dict:
        """``{"loss", "accuracy"}`` of a training epoch (weaver's ``Train AvgLoss``, ``AvgAcc``)."""
        return self._figures(weighted=False)

    def val_figures(self) -> dict:
        """``{"loss", "accuracy"}`` of a validation pass (weaver's ``Eval AvgLoss``, ``AvgAcc``)."""
        return self._figures(weighted=True)


class TaggerLoops:
    """The tagger's ``train`` / ``evaluate`` hooks: weaver's own loops (:func:`~omnijet_weaver.weaver.compat.
    weaver_loop`), called with the same arguments in the same order, weaver's loss function passed through a
    :class:`LossRecorder`; each epoch goes to the history. ``patience`` > 0 adds the early stopping on the
    validation loss (:mod:`omnijet_weaver.weaver.early_stopping`); 0 leaves every number weaver computes, its
    metric (the validation accuracy) and its best epoch as they are without hooks.

    The object holds only ``patience``: the state of a run (history, early stopping) lives on the model
    (:class:`~omnijet_weaver.weaver.history.TrainingRun`), as ``get_train_fn`` and ``get_evaluate_fn`` each make
    their own :class:`TaggerLoops`."""

    def __init__(self, patience: int = 0):
        self.patience = int(patience)

    def _early_stopping(self, run: TrainingRun):
        return run.slot("early_stopping", lambda: EarlyStopping(self.patience)) if self.patience else None

    def train(self, model, loss_func, opt, scheduler, train_loader, dev, epoch, steps_per_epoch=None,
              grad_scaler=None, tb_helper=None, extra_args=None):
        run = TrainingRun.of(model, extra_args)
        early = self._early_stopping(run)
        lr, start = learning_rate(opt), time.time()
        if early is not None and early.stopped:
            _logger.info("early stopping: validation loss has not improved for %d epochs, skipping epoch %d",
                         early.bad_epochs, epoch)
            run.trained(epoch, None, time.time() - start, lr, skipped=True)
            return None
        recorder = LossRecorder(loss_func, accuracy=not run.regression)
        result = weaver_loop("train", run.regression)(
            model, recorder, opt, scheduler, train_loader, dev, epoch, steps_per_epoch=steps_per_epoch,
            grad_scaler=grad_scaler, tb_helper=tb_helper, extra_args=extra_args)
        run.trained(epoch, recorder.train_figures(), time.time() - start, lr)
        return result

    def evaluate(self, model, test_loader, dev, epoch, for_training=True, loss_func=None, steps_per_epoch=None,
                 tb_helper=None, extra_args=None, **kwargs):
        regression = regression_mode((extra_args or {}).get("args"))
        evaluate = weaver_loop("evaluate", regression)
        if not for_training:  # --predict: weaver's own evaluation, untouched
            return evaluate(model, test_loader, dev, epoch, for_training=False, loss_func=loss_func,
                            steps_per_epoch=steps_per_epoch, tb_helper=tb_helper, extra_args=extra_args, **kwargs)
        run = TrainingRun.of(model, extra_args)
        early = self._early_stopping(run)
        start = time.time()
        if early is not None and early.stopped:
            _logger.info("early stopping: epoch %d was skipped, so is its validation", epoch)
            metric = float("nan")  # never better than weaver's best (NaN compares False both ways)
            run.validated(epoch, None, metric, time.time() - start, skipped=True,
                          extra={"early_stopping": early.state()})
            return metric
        if early is not None and loss_func is None:
            raise ConfigError("omnijet_cls: -o early_stopping needs weaver's loss function in the validation "
                              "(the network config's get_loss)")
        recorder = None if loss_func is None else LossRecorder(loss_func, accuracy=not regression)
        result = evaluate(model, test_loader, dev, epoch, for_training=True, loss_func=recorder,
                          steps_per_epoch=steps_per_epoch, tb_helper=tb_helper, extra_args=extra_args, **kwargs)
        if recorder is not None:
            figures = recorder.val_figures()
        else:  # weaver counts the loss as 0 without a loss function
            figures = {"loss": None} if regression else {"loss": None, "accuracy": result}
        metric = result if early is None else early.update(epoch, figures["loss"], regression)
        run.validated(epoch, figures, metric, time.time() - start,
                      extra=None if early is None else {"early_stopping": early.state()})
        return metric

