"""The training history our weaver hooks write (``<model-prefix>_history.jsonl``): the file format, fresh and
resumed runs, weaver's best-epoch rule, only global rank 0 writing; and helpers that check a real run's history
against what weaver printed (used by the tests of the VQ-VAE, GPT, tagger, transfer and DDP runs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re

import pytest
import torch

from omnijet_weaver.errors import InputFileError
from omnijet_weaver.weaver.compat import logged
from omnijet_weaver.weaver.history import (
    HistoryWriter,
    TrainingRun,
    history_path,
    read_history,
    validation_metrics,
)

_NUM = r"[-+0-9.eEnaif]+"


def weaver_printed(log: str) -> dict:
    """What weaver-core 0.5.3 itself printed per epoch, as strings (to compare with the history at the printed
    precision): validation metric and best so far, and its classification loops' AvgLoss / AvgAcc lines."""
    return {
        "metric": re.findall(rf"Epoch #\d+: Current validation metric: ({_NUM}) \(best: {_NUM}\)", log),
        "best": re.findall(rf"Epoch #\d+: Current validation metric: {_NUM} \(best: ({_NUM})\)", log),
        "train": re.findall(rf"Train AvgLoss: ({_NUM}), AvgAcc: ({_NUM})", log),
        "val": re.findall(rf"Eval AvgLoss: ({_NUM}), AvgAcc: ({_NUM})", log),
    }


def fmt5(value) -> str:
    """A history number as weaver prints it (``%.5f``; ``nan`` for null)."""
    return "nan" if value is None else "%.5f" % value


def check_history(prefix, log: str, epochs: int, classification: bool) -> list[dict]:
    """The history of a finished weaver training at ``prefix`` against its log and checkpoints: one record per
    epoch in order; weaver's "Current validation metric" (and best) is the history's metric; the tagger's
    train / validation figures are weaver's AvgLoss / AvgAcc; ``best_epoch`` is the epoch whose checkpoint
    weaver kept as ``*_best_epoch_state.pt``. Returns the records."""
    history = read_history(prefix)
    assert [r["epoch"] for r in history] == list(range(epochs))
    printed = weaver_printed(log)
    # (an epoch skipped by early stopping has no validation: weaver prints its NaN metric as "nan")
    assert printed["metric"] == [fmt5(r["val"]["metric"] if r["val"] else None) for r in history]
    assert printed["best"] == [fmt5(r["best_metric"]) for r in history]
    if classification:
        trained = [r for r in history if not r["skipped"]]
        assert printed["train"] == [(fmt5(r["train"]["loss"]), fmt5(r["train"]["accuracy"])) for r in trained]
        assert printed["val"] == [(fmt5(r["val"]["loss"]), fmt5(r["val"]["accuracy"])) for r in trained]
    for r in history:
        assert r["seconds"]["train"] >= 0 and r["seconds"]["val"] >= 0
        assert r["skipped"] or (r["seconds"]["train"] > 0 and r["seconds"]["val"] > 0)
        assert set(r) >= {"epoch", "train", "val", "lr", "seconds", "best_epoch", "best_metric", "skipped"}
    best = f"{prefix}_epoch-{history[-1]['best_epoch']}_state.pt"
    if not os.path.exists(best):  # --auto-clean keeps only the last epoch's checkpoint
        assert "('auto_clean', True)" in log
        return history
    kept = torch.load(f"{prefix}_best_epoch_state.pt", weights_only=True)
    same = torch.load(best, weights_only=True)
    assert all(torch.equal(kept[k], same[k]) for k in kept if isinstance(kept[k], torch.Tensor))
    return history


def args(prefix, regression=False, load_epoch=None, run_mode=("train", "val")):
    """The part of weaver's command line (``extra_args["args"]``) the hooks read."""
    return argparse.Namespace(model_prefix=str(prefix), regression_mode=regression, load_epoch=load_epoch,
                              run_mode=list(run_mode))


def run_epochs(prefix, metrics, **kw) -> TrainingRun:
    """A run on a fresh model that trains and validates one epoch per metric (as the hooks report them)."""
    model = torch.nn.Linear(2, 2)
    extra = {"args": args(prefix, **kw)}
    first = kw.get("load_epoch")
    for epoch, metric in enumerate(metrics, 0 if first is None else first + 1):
        run = TrainingRun.of(model, extra)
        run.trained(epoch, {"loss": 1.0 / (epoch + 1)}, 0.5, lr=1e-3)
        run.validated(epoch, {"loss": 2.0}, metric, 0.25)
    assert TrainingRun.of(torch.nn.parallel.DataParallel(model), extra) is run  # the same run behind a wrapper
    return run


def test_records_follow_weavers_best_epoch_rule(tmp_path):
    prefix = tmp_path / "sub" / "cls"
    run_epochs(prefix, [0.5, 0.7, 0.7, float("nan"), 0.6])
    history = read_history(prefix)
    assert history_path(prefix) == tmp_path / "sub" / "cls_history.jsonl"
    assert read_history(history_path(prefix)) == history
    assert [r["epoch"] for r in history] == [0, 1, 2, 3, 4]
    # weaver: strictly better than the best so far (a tie is not), NaN never
    assert [r["best_epoch"] for r in history] == [0, 1, 1, 1, 1]
    assert [r["best_metric"] for r in history] == [0.5, 0.7, 0.7, 0.7, 0.7]
    assert history[3]["val"]["metric"] is None  # NaN written as null: strict JSON
    assert validation_metrics(history)[:3] == [0.5, 0.7, 0.7] and math.isnan(validation_metrics(history)[3])
    assert history[0] == {"epoch": 0, "train": {"loss": 1.0}, "val": {"loss": 2.0, "metric": 0.5}, "lr": 1e-3,
                          "seconds": {"train": 0.5, "val": 0.25}, "skipped": False, "best_epoch": 0,
                          "best_metric": 0.5}
    for line in history_path(prefix).read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    # --regression-mode: lower is better, starting from +inf
    run_epochs(tmp_path / "reg", [3.0, 2.0, 2.5], regression=True)
    assert [r["best_epoch"] for r in read_history(tmp_path / "reg")] == [0, 1, 1]


def test_as_logged_is_weavers_printed_figure():
    assert logged(0.123456789) == 0.12346 and logged(2 / 3) == float("%.5f" % (2 / 3))
    history = [{"epoch": 0, "val": {"metric": 0.8316666666666667}}, {"epoch": 1, "val": None}]
    assert validation_metrics(history, as_logged=True) == [0.83167]


def test_new_run_starts_afresh_and_a_resume_appends(tmp_path):
    prefix = tmp_path / "cls"
    run_epochs(prefix, [0.5, 0.6, 0.7])
    run_epochs(prefix, [0.1])  # a new run with the same prefix: a fresh file
    assert [(r["epoch"], r["val"]["metric"]) for r in read_history(prefix)] == [(0, 0.1)]
    run_epochs(prefix, [0.5, 0.6, 0.7])
    # --load-epoch 1: the records up to epoch 1 stay, later ones (of the interrupted run) go, the new ones follow;
    # weaver's best epoch is counted afresh from the resumed epochs (its best metric starts from 0 again)
    run_epochs(prefix, [0.2], load_epoch=1)
    history = read_history(prefix)
    assert [(r["epoch"], r["val"]["metric"], r["best_epoch"]) for r in history] == [(0, 0.5, 0), (1, 0.6, 1),
                                                                                     (2, 0.2, 2)]
    # a resume after an interrupted write keeps the complete records before it
    with open(history_path(prefix), "a") as f:
        f.write('{"epoch": 3, "trai')
    with pytest.raises(InputFileError, match=r"cls_history\.jsonl, line 4: not a history record"):
        read_history(prefix)
    HistoryWriter(prefix, resume_epoch=5)
    assert [r["epoch"] for r in read_history(prefix)] == [0, 1, 2]


def test_missing_history_is_a_clear_error(tmp_path):
    with pytest.raises(InputFileError, match=r"training history .*nothing_history\.jsonl does not exist"):
        read_history(tmp_path / "nothing")
    (tmp_path / "bad_history.jsonl").write_text('{"epoch": 0}\n[1, 2]\n')
    with pytest.raises(InputFileError, match=r"bad_history\.jsonl, line 2: not a history record \(no integer"):
        read_history(tmp_path / "bad")


def test_only_global_rank_0_writes_and_train_only_runs_are_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    run = run_epochs(tmp_path / "rank1", [0.5, 0.6])
    assert run.writer is None and not history_path(tmp_path / "rank1").exists()
    assert [r["best_epoch"] for r in run.records] == [0, 1]  # every rank keeps its records in memory
    monkeypatch.setenv("RANK", "0")
    # --run-mode train: no validation, each record is written when its training ends
    model, extra = torch.nn.Linear(1, 1), {"args": args(tmp_path / "train_only", run_mode=("train",))}
    for epoch in range(2):
        TrainingRun.of(model, extra).trained(epoch, {"loss": 0.5}, 1.0, lr=0.1)
    history = read_history(tmp_path / "train_only")
    assert [(r["epoch"], r["val"], r["best_epoch"]) for r in history] == [(0, None, None), (1, None, None)]
