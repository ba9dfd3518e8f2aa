"""The transfer-learning study (omnijet-weaver-transfer) and the tagger's ``-o seed`` / ``-o early_stopping``.

One tiny study (toy jets, a tiny pre-trained model, 2 label counts x 2 modes x 2 seeds, at most 3 epochs, real
``weaver`` trainings and predictions) is shared by the tests of this module. Its from-scratch runs have a learning
rate of 1e-12, so their validation loss cannot improve: with patience 1 they must stop after two epochs, which
tests the early stopping inside real weaver runs.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import DATA_CONFIG, toy_jets
from test_tagger import GPT_SIZES, load_data_config, make_checkpoints, part
from test_weaver_history import args as weaver_args
from test_weaver_history import check_history, fmt5

from omnijet_weaver.errors import WeaverRunError
from omnijet_weaver.evaluation.report import fmt, markdown_table, pm
from omnijet_weaver.io.files import write_root
from omnijet_weaver.io.pythia import split_evenly
from omnijet_weaver.studies import transfer
from omnijet_weaver.weaver import early_stopping
from omnijet_weaver.weaver.configs import network_config
from omnijet_weaver.weaver.history import read_history
from omnijet_weaver.weaver.runner import MODES

HAVE_MPL = importlib.util.find_spec("matplotlib") is not None
needs_mpl = pytest.mark.skipif(not HAVE_MPL, reason="matplotlib is not installed (pip install '.[plot]')")

LABELS, MODES_RUN, SEEDS = (8, 16), ("finetune", "scratch"), (0, 1)


def run_cli(*args, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "omnijet_weaver.cli.transfer", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Toy pool (two files, ~160 jets per class), toy test file, tiny tokenizer and generative model."""
    folder = tmp_path_factory.mktemp("transfer")
    pool = [folder / "pool_a.root", folder / "pool_b.root"]
    for i, path in enumerate(pool):
        write_root(path, toy_jets(160, seed=10 + i))
    test = folder / "test.root"
    write_root(test, toy_jets(60, seed=12))
    tok, gpt = make_checkpoints(folder, pool[0])
    return {"folder": folder, "pool": pool, "test": test, "tok": tok, "gpt": gpt}


#: The study's from-scratch learning rate: too small for the validation loss to move beyond numerical noise.
FROZEN_LR = 1e-12


@pytest.fixture(scope="module")
def study(setup):
    if not HAVE_MPL:
        pytest.skip("the study writes plots: matplotlib is needed")
    out = setup["folder"] / "study"
    proc = run_cli("--train", *setup["pool"], "--test", setup["test"], "--labels", *LABELS, "--modes", *MODES_RUN,
                   "--seeds", *SEEDS, "--val-jets", 10, "--epochs", 3, "--patience", 1, "--batch-size", 8,
                   "--lr", f"scratch={FROZEN_LR}", "--checkpoint", setup["gpt"], "--workers", 2, "--keep-data",
                   "--output", out)
    assert proc.returncode == 0, f"transfer study failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return out, proc, json.loads((out / "results.json").read_text())


# --- the study --------------------------------------------------------------------------------------------------


@needs_mpl
def test_study_writes_results_table_plots_and_commands(study):
    out, proc, _ = study
    for name in ("results.json", "summary.md", "commands.sh", transfer.MARKER):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for fig in ("accuracy", "auc"):
        png, pdf = out / f"{fig}.png", out / f"{fig}.pdf"
        assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert pdf.stat().st_size > 1000 and pdf.read_bytes()[:4] == b"%PDF"
    assert not list(out.parent.glob(f".{out.name}.partial-*"))  # the working folder became the output
    # --keep-data: the labelled and validation jets of each seed, checkpoints, predictions
    assert sorted(p.name for p in (out / "data" / "seed1").iterdir()) == ["train_16.root", "train_8.root", "val.root"]
    assert (out / "data" / "runs" / "finetune_8_seed0" / "cls_best_epoch_state.pt").is_file()
    assert len(list((out / "data" / "predictions").glob("*.root"))) == len(LABELS) * len(MODES_RUN) * len(SEEDS)
    n_runs = len(LABELS) * len(MODES_RUN) * len(SEEDS)
    logs = sorted(p.name for p in (out / "logs").iterdir())
    assert len([n for n in logs if n.startswith("train_")]) == n_runs
    assert len([n for n in logs if n.startswith("predict_")]) == n_runs
    # the exact weaver command lines: seeded, early stopping, one epoch = one pass over the labelled jets
    commands = [c for c in (out / "commands.sh").read_text().splitlines() if c.startswith("weaver ")]
    train = [c for c in commands if "--predict" not in c]
    assert len(train) == n_runs and len(commands) == 2 * n_runs
    for c in commands:  # the predictions with the same network options (and weaver's own --predict path)
        assert f"--network-config {network_config('omnijet_cls')} " in c and "-o early_stopping 1" in c
    for c in train:
        assert "--optimizer adamw" in c
        n = int(re.search(r"train_(\d+)\.root", c).group(1))
        assert re.search(r"-o seed \d", c) and f"--steps-per-epoch {math.ceil(n / 8)} " in c
    assert sum("-o pretrained None" in c for c in train) == n_runs // 2  # from scratch: its tokenizer and sizes
    assert all("-o tokenizer" in c and "-o embed_dim 32" in c for c in train if "-o pretrained None" in c)
    # one progress line per run, every stage with its wall time
    assert len(re.findall(r"^    \[\d+/8\] .*test accuracy [0-9.]+, AUC [0-9.]+", proc.stdout, re.M)) == n_runs
    for i, stage in enumerate(transfer.TransferStudy.stages, 1):
        assert re.search(rf"^\[{i}/4\] {re.escape(stage)}: done in [0-9.]+ s", proc.stdout, re.M), stage


@needs_mpl
def test_every_run_is_in_results(study, setup):
    _, _, res = study
    runs = res["runs"]
    assert len(runs) == len(LABELS) * len(MODES_RUN) * len(SEEDS)
    assert {(r["mode"], r["labels"], r["seed"]) for r in runs} == {
        (m, n, s) for m in MODES_RUN for n in LABELS for s in SEEDS}
    for r in runs:
        # 60 test jets: the accuracy is a whole number of them; accuracy and AUC are recomputed from the
        # prediction file below (--keep-data)
        assert r["accuracy"] * 60 == pytest.approx(round(r["accuracy"] * 60), abs=1e-9)
        assert r["test_jets"] == 60 and r["labelled_jets_per_class"] == {"label_QCD": r["labels"] // 2,
                                                                        "label_Tbqq": r["labels"] // 2}
        assert 1 <= r["epochs_run"] <= 3 and len(r["val_loss_per_epoch"]) == r["epochs_run"]
        assert r["lr"] == (FROZEN_LR if r["mode"] == "scratch" else transfer.DEFAULT_LRS[r["mode"]])
        assert r["seconds_train"] > 0 and r["seconds_predict"] > 0
        # best epoch: the lowest validation loss (an improvement below numerical noise does not count)
        losses = r["val_loss_per_epoch"]
        assert r["best_val_loss"] == losses[r["best_epoch"]] <= min(losses) * (1 + early_stopping.MIN_REL_IMPROVEMENT)
        # the run's figures are its history's, which are weaver's own "Eval AvgLoss" / "AvgAcc" (printed with 5
        # decimals); the best epoch is the one weaver kept (its checkpoint was used for the prediction)
        prefix = setup["folder"] / "study" / "data" / "runs" / f"{r['mode']}_{r['labels']}_seed{r['seed']}" / "cls"
        log = (setup["folder"] / "study" / r["log"]).read_text()
        history = check_history(prefix, log, epochs=3, classification=True)
        trained = [h for h in history if not h["skipped"]]
        assert losses == [h["val"]["loss"] for h in trained] and len(trained) == r["epochs_run"]
        assert r["val_accuracy_per_epoch"] == [h["val"]["accuracy"] for h in trained]
        assert r["best_epoch"] == history[-1]["best_epoch"] == history[-1]["early_stopping"]["best_epoch"]
        # accuracy and AUC from weaver's prediction file, by hand (argmax hits; AUC = P(score_top(top) > score_top(QCD)))
        import uproot

        with uproot.open(setup["folder"] / "study" / "data" / "predictions" / f"{prefix.parent.name}.root") as f:
            p = f[f.keys()[0].split(";")[0]].arrays(library="np")
        top = p["label_Tbqq"] == 1
        hits = (p["score_label_Tbqq"] > p["score_label_QCD"]) == top
        assert r["accuracy"] == pytest.approx(hits.mean(), abs=1e-12)
        diff = p["score_label_Tbqq"][top][:, None] - p["score_label_Tbqq"][~top][None, :]
        assert r["auc"] == pytest.approx(((diff > 0) + 0.5 * (diff == 0)).mean(), abs=1e-12)
    # the same seed draws the same labelled jets for every mode; the seeds draw different ones
    for n in LABELS:
        for s in SEEDS:
            assert len({r["labelled_jets_sha1"] for r in runs if r["labels"] == n and r["seed"] == s}) == 1
        assert len({res["subsets"][str(s)]["labelled_sha1"][str(n)] for s in SEEDS}) == len(SEEDS)


@needs_mpl
def test_summary_json_has_mean_std_and_difference(study):
    out, proc, res = study
    table = {(r["mode"], r["labels"]): r for r in res["summary"]}
    assert list(table) == [(m, n) for m in MODES_RUN for n in LABELS]
    for (mode, n), row in table.items():  # mean ± sample std (ddof 1) over the seeds of every run's numbers
        rs = [r for r in res["runs"] if r["mode"] == mode and r["labels"] == n]
        assert row["seeds"] == len(rs) == len(SEEDS) and row["mode_label"] == MODES[mode][0]
        for key in ("accuracy", "auc"):
            values = [r[key] for r in rs]
            assert row[f"{key}_mean"] == pytest.approx(np.mean(values), abs=1e-12)
            assert row[f"{key}_std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
        assert row["epochs_run_mean"] == pytest.approx(np.mean([r["epochs_run"] for r in rs]))
    # fine-tuned - from scratch, paired per seed, in accuracy points
    diff = {(d["mode"], d["labels"]): d for d in res["accuracy_difference_to_scratch"]}
    assert list(diff) == [("finetune", n) for n in LABELS]
    for n in LABELS:
        ft = {r["seed"]: r["accuracy"] for r in res["runs"] if r["mode"] == "finetune" and r["labels"] == n}
        sc = {r["seed"]: r["accuracy"] for r in res["runs"] if r["mode"] == "scratch" and r["labels"] == n}
        per_seed = {str(s): 100 * (ft[s] - sc[s]) for s in SEEDS}
        assert diff["finetune", n]["accuracy_points_per_seed"] == pytest.approx(per_seed, abs=1e-12)
        assert diff["finetune", n]["accuracy_points_mean"] == pytest.approx(np.mean(list(per_seed.values())))
        assert diff["finetune", n]["seeds"] == len(SEEDS)
    assert res["validation"] == {"jets_per_class": 10, "jets": 20, "batch_size": 20, "steps": 1}
    assert res["figures"] == {"accuracy": ["accuracy.png", "accuracy.pdf"], "auc": ["auc.png", "auc.pdf"]}
    assert list(res["stage_seconds"]) == list(transfer.TransferStudy.stages)
    assert res["total_seconds"] >= sum(res["stage_seconds"].values()) > 0
    assert "accuracy points" in proc.stdout


@needs_mpl
def test_summary_md_is_rendered_from_the_json(study):
    out, _, _ = study

    def refuse(name):
        raise AssertionError(f"results.json holds {name}: it must be strict JSON")

    res = json.loads((out / "results.json").read_text(), parse_constant=refuse)
    text = (out / "summary.md").read_text()
    assert text == transfer.summary_markdown(res)  # nothing in summary.md that the JSON does not hold
    assert markdown_table(["mode", "labelled jets", "seeds", "accuracy", "AUC", "epochs run (mean)"],
                          [[r["mode_label"], r["labels"], r["seeds"], pm(r["accuracy_mean"], r["accuracy_std"], 4),
                            pm(r["auc_mean"], r["auc_std"], 4), fmt(r["epochs_run_mean"], 1)]
                           for r in res["summary"]]) in text


def test_failed_study_keeps_its_partial_folder_with_the_logs(setup, tmp_path, monkeypatch):
    """A weaver run that fails mid-study: no output, the hidden folder stays with its logs (data/ deleted), and
    the study says where."""
    def fail(self, subsets, test):
        (self.logs / "train_finetune_8_seed0.log").write_text("weaver's log")
        raise WeaverRunError("weaver (train fine-tuned, 8 labels, seed 0) failed with exit code 1")

    monkeypatch.setattr(transfer.TransferStudy, "train_and_predict", fail)
    config = transfer.TransferConfig(train=tuple(setup["pool"]), test=(setup["test"],), output=tmp_path / "out",
                                     labels=LABELS, modes=MODES_RUN, seeds=(0,), val_jets=10,
                                     pretrained=str(setup["gpt"]), workers=1)
    printed = io.StringIO()
    study = transfer.TransferStudy(config, out=printed)
    with pytest.raises(WeaverRunError, match="exit code 1"):
        study.run()
    assert sorted(p.name for p in tmp_path.iterdir()) == [study.work.name]
    assert sorted(p.name for p in study.work.iterdir()) == [transfer.MARKER, "logs"]
    assert (study.work / "logs" / "train_finetune_8_seed0.log").read_text() == "weaver's log"
    out = printed.getvalue()
    assert "[1/4] labelled and validation jets: done in" in out and "[3/4] tag (weaver) ..." in out
    assert out.splitlines()[-1] == (f"stopped (WeaverRunError): the partial omnijet-weaver-transfer study, with its "
                                    f"logs, is kept in {study.work}")


@needs_mpl
def test_same_seed_draws_the_same_labelled_jets(study, setup):
    _, _, res = study
    jets = transfer.scan_jets(setup["pool"], transfer.load_data_config(DATA_CONFIG))
    for s in SEEDS:
        again = transfer.draw_subsets(jets.classes, 2, LABELS, 10, s)
        assert res["subsets"][str(s)]["validation_sha1"] == transfer.fingerprint(again["val"])
        for n in LABELS:
            assert res["subsets"][str(s)]["labelled_sha1"][str(n)] == transfer.fingerprint(again["labelled"][n])


def test_draw_subsets_is_seeded_nested_balanced_and_disjoint():
    rng = np.random.default_rng(5)
    classes = rng.integers(-1, 2, 500)  # -1: not selected
    a = transfer.draw_subsets(classes, 2, (10, 40, 101), 30, seed=3)
    b = transfer.draw_subsets(classes, 2, (10, 40, 101), 30, seed=3)
    c = transfer.draw_subsets(classes, 2, (10, 40, 101), 30, seed=4)
    assert np.array_equal(a["val"], b["val"])
    assert all(np.array_equal(a["labelled"][n], b["labelled"][n]) for n in a["labelled"])
    assert not np.array_equal(a["labelled"][40], c["labelled"][40])
    assert set(a["labelled"][10]) <= set(a["labelled"][40]) <= set(a["labelled"][101])
    assert not set(a["val"]) & set(a["labelled"][101]) and (classes[a["labelled"][101]] >= 0).all()
    assert np.bincount(classes[a["labelled"][101]]).tolist() == [51, 50] == split_evenly(101, 2)
    assert np.bincount(classes[a["val"]]).tolist() == [30, 30]


@needs_mpl
def test_metric_vs_labels_draws_error_bars(tmp_path):
    from omnijet_weaver.evaluation import plots

    results = {"fine-tuned": {100: (0.85, 0.01), 1000: (0.91, float("nan"))}, "from scratch": {100: 0.7, 1000: None}}
    written = plots.metric_vs_labels(tmp_path / "acc", results, ylabel="accuracy")
    assert [p.name for p in written] == ["acc.png", "acc.pdf"] and written[0].stat().st_size > 1000


# --- -o seed and -o early_stopping -----------------------------------------------------------------------------


def test_seed_option_fixes_the_initial_weights(setup):
    from omnijet_weaver.weaver.networks import tagger_model

    dc = load_data_config(DATA_CONFIG)
    gpt, tok = str(setup["gpt"]), str(setup["tok"])

    def head(seed, **kw):
        return part(tagger_model(dc, pretrained=gpt, seed=seed, **kw)[0].state_dict(), "head")

    def scratch(seed):
        model, _ = tagger_model(dc, pretrained=None, tokenizer=tok, seed=seed, **GPT_SIZES)
        return part(model.state_dict(), "backbone")

    for a, b, c in ((head(1), head(1), head(2)), (scratch(1), scratch(1), scratch(2))):
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert any(not torch.equal(a[k], c[k]) for k in a)
    with pytest.raises(ValueError, match="-o seed"):
        tagger_model(dc, pretrained=gpt, seed=-1)
    with pytest.raises(ValueError, match="-o early_stopping"):
        tagger_model(dc, pretrained=gpt, early_stopping="yes")


def test_the_tagger_hooks_are_always_ours():
    """Without -o early_stopping (or with 0) weaver's own loops, passed through; with N our early stopping; a bad
    value is a ConfigError (never an AttributeError, which weaver would take for "no hook")."""
    from omnijet_weaver.errors import ConfigError
    from omnijet_weaver.weaver.loops import TaggerLoops
    from omnijet_weaver.weaver.networks import tagger_evaluate_fn, tagger_train_fn

    for fn, method in ((tagger_train_fn, TaggerLoops.train), (tagger_evaluate_fn, TaggerLoops.evaluate)):
        for options, patience in (({}, 0), ({"early_stopping": 0}, 0), ({"early_stopping": 2}, 2)):
            hook = fn(None, **options)
            assert hook.__func__ is method and hook.__self__.patience == patience
        with pytest.raises(ConfigError, match="-o early_stopping takes a number of epochs"):
            fn(None, early_stopping=1.5)


def test_early_stopping_wraps_weavers_evaluation(monkeypatch, tmp_path):
    """The hooks around weaver's train / evaluate_classification (stubbed): the validation loss recorded through
    the loss function, exp(-loss) returned, patience counted, noise-level improvements ignored, skipped epochs,
    --predict passed through, and every epoch in the history."""
    from weaver.utils.nn import tools

    from omnijet_weaver.weaver.loops import TaggerLoops

    calls = []

    def batches(values):
        """Batches (logits, labels) whose loss under `loss_func` is `value`: logits [value, 0], label 0."""
        return [(torch.tensor([[v, 0.0]] * n), torch.zeros(n, dtype=torch.long)) for v, n in values]

    def fake_evaluate(model, loader, dev, epoch, for_training=True, loss_func=None, steps_per_epoch=None,
                      tb_helper=None, extra_args=None, **kw):
        calls.append(for_training)
        if not for_training:
            return "weaver's tuple"
        for logits, label in loader:
            loss_func(logits, label).item()
        return 0.5  # weaver's accuracy: not what the early stopping returns

    def fake_train(model, loss_func, *args, **kw):
        calls.append("train")
        loss_func(*batches([(0.3, 8)])[0])

    monkeypatch.setattr(tools, "evaluate_classification", fake_evaluate)
    monkeypatch.setattr(tools, "train_classification", fake_train)
    extra = {"args": weaver_args(tmp_path / "cls")}
    model = torch.nn.Linear(1, 1)
    train, evaluate = TaggerLoops(2).train, TaggerLoops(2).evaluate  # as get_train_fn / get_evaluate_fn make them
    first = lambda logits, label: logits[:, 0].mean()  # noqa: E731 - the "loss function": the batch's loss value
    losses = {0: [(1.0, 10), (0.8, 30)], 1: [(0.7, 40)], 2: [(0.7 * (1 - 1e-7), 40)], 3: [(0.9, 40)], 4: [(0.1, 40)]}
    metrics = []
    for epoch in range(5):
        train(model, first, None, None, None, "cpu", epoch, extra_args=extra)
        metrics.append(evaluate(model, batches(losses[epoch]), "cpu", epoch, loss_func=first, extra_args=extra))
    assert metrics[0] == pytest.approx(math.exp(-0.85)) and metrics[1] == pytest.approx(math.exp(-0.7))
    assert metrics[2] == metrics[1]  # lower only by numerical noise: weaver gets the best metric back
    assert metrics[3] == pytest.approx(math.exp(-0.9))
    assert math.isnan(metrics[4])  # epoch 4 skipped after 2 epochs without improvement
    assert calls.count("train") == 4 and calls.count(True) == 4
    assert evaluate(model, None, "cpu", None, for_training=False, extra_args=extra) == "weaver's tuple"
    history = read_history(tmp_path / "cls")
    assert [h["epoch"] for h in history] == [0, 1, 2, 3, 4] and [h["skipped"] for h in history] == [False] * 4 + [True]
    assert [h["val"]["loss"] for h in history[:4]] == pytest.approx([0.85, 0.7, 0.7 * (1 - 1e-7), 0.9])
    assert [h["val"]["metric"] for h in history[:4]] == metrics[:4] and history[4]["val"] is None
    assert [h["val"]["accuracy"] for h in history[:4]] == [1.0] * 4  # logit 0 is the highest and the label
    assert [h["train"] for h in history[:4]] == [{"loss": pytest.approx(0.3), "accuracy": 1.0}] * 4
    assert history[4]["train"] is None
    assert [h["best_epoch"] for h in history] == [0, 1, 1, 1, 1]  # weaver's choice = the early stopping's
    assert [h["early_stopping"]["bad_epochs"] for h in history] == [0, 0, 1, 2, 2]
    assert history[4]["early_stopping"] == {"patience": 2, "best_epoch": 1, "best_loss": pytest.approx(0.7),
                                            "bad_epochs": 2, "stopped": True}
    # a diverged first epoch (NaN loss) is no best epoch; the next finite one is
    model = torch.nn.Linear(1, 1)
    out = [evaluate(model, batches([(v, 4)]), "cpu", e, loss_func=first, extra_args={"args": weaver_args(tmp_path / "n")})
           for e, v in enumerate([float("nan"), 0.5])]
    assert math.isnan(out[0]) and out[1] == pytest.approx(math.exp(-0.5))
    assert [h["best_epoch"] for h in read_history(tmp_path / "n")] == [None, 1]


@needs_mpl
def test_early_stopping_in_the_weaver_runs(study):
    """The from-scratch runs (learning rate 1e-12: the loss cannot improve) stop after two epochs, as the log
    says; the best epoch is the first (lowest loss); weaver's metric is exp(-loss) of its logged "Eval AvgLoss"."""
    out, _, res = study
    for r in (r for r in res["runs"] if r["mode"] == "scratch"):
        log = (out / r["log"]).read_text()
        assert "Using custom train/evaluate functions" in log and f"-o seed {r['seed']}: torch, numpy and" in log
        assert r["epochs_run"] == 2 and r["stopped_early"] and r["best_epoch"] == 0
        assert len(re.findall(r"Train AvgLoss", log)) == 2
        assert "early stopping: validation loss has not improved for 1 epochs, skipping epoch 2" in log  # for humans
        history = read_history(out / "data" / "runs" / f"scratch_{r['labels']}_seed{r['seed']}" / "cls")
        assert [h["skipped"] for h in history] == [False, False, True] and history[2]["val"] is None
        assert [h["best_epoch"] for h in history] == [0, 0, 0] and history[2]["early_stopping"]["stopped"]
        # weaver's metric is exp(-loss) of its own "Eval AvgLoss" (epoch 1: no better than epoch 0's, an improvement
        # at the level of noise gets epoch 0's back); the skipped epoch's NaN is never weaver's best
        metrics = re.findall(r"Current validation metric: (\S+) \(best: (\S+)\)", log)
        assert re.findall(r"Eval AvgLoss: (\S+),", log) == [fmt5(h["val"]["loss"]) for h in history[:2]]
        assert [m for m, _ in metrics] == [fmt5(h["val"]["metric"]) for h in history[:2]] + ["nan"]
        first, second = (h["val"] for h in history[:2])
        assert first["metric"] == math.exp(-first["loss"])
        assert second["metric"] == min(math.exp(-second["loss"]), first["metric"])
        assert metrics[2][1] == metrics[0][0]
    # the predictions ran with the same -o early_stopping (weaver's own --predict path)
    assert all("Written output to" in (out / "logs" / f"predict_{m}_{n}_seed{s}.log").read_text()
               for m in MODES_RUN for n in LABELS for s in SEEDS)


@needs_mpl
def test_seed_makes_weaver_training_reproducible(study, tmp_path):
    """The study's command line of a fine-tuning run, run again: the same -o seed gives the same weights
    (initialisation and weaver's shuffling of the jets)."""
    out, _, _ = study
    command = next(c for c in (out / "commands.sh").read_text().splitlines()
                   if c.startswith("weaver --data-train") and "finetune_16_seed1/" in c)
    args = shlex.split(command)[1:]
    args[args.index("--model-prefix") + 1] = str(tmp_path / "cls")
    env = dict(os.environ, OMP_NUM_THREADS="1")  # as in the study (one thread per run)
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "weaver"), *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    again = torch.load(tmp_path / "cls_best_epoch_state.pt", weights_only=True)
    first = torch.load(out / "data" / "runs" / "finetune_16_seed1" / "cls_best_epoch_state.pt", weights_only=True)
    start = part(torch.load(out.parent / "gpt.pt", weights_only=True), "backbone")
    assert any(not torch.equal(first[f"backbone.{k}"], v) for k, v in start.items())  # it did train
    assert all(torch.equal(first[k], again[k]) for k in first if isinstance(first[k], torch.Tensor))


# --- errors ----------------------------------------------------------------------------------------------------


def test_clear_errors_before_any_work(setup, tmp_path, capsys):
    from omnijet_weaver.cli.transfer import main

    def error(*args):
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in args])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        return err

    out = tmp_path / "out"
    base = ["--test", setup["test"], "--output", out, "--checkpoint", setup["gpt"]]
    assert "does not exist" in error("--train", tmp_path / "missing.root", *base)
    err = error("--train", *setup["pool"], *base, "--labels", 100, 1000, "--val-jets", 10)
    assert re.search(r"too few jets in the --train pool for 1000 labels .* label_QCD: need 510 \(500 labelled \+ 10 "
                     r"validation\), found \d+", err), err
    assert "unknown mode 'bogus'" in error("--train", *setup["pool"], *base, "--lr", "bogus=1e-3")
    assert "learning rates must be positive" in error("--train", *setup["pool"], *base, "--lr", "0")
    assert "both in --train and in --test" in error("--train", *setup["pool"], "--test", setup["pool"][0],
                                                    "--output", out)
    assert "--labels must be at least the number of classes" in error("--train", *setup["pool"], *base, "--labels", 1)
    with pytest.raises(SystemExit):
        main(["--train", str(setup["pool"][0]), *map(str, base), "--modes", "bogus"])  # argparse's own message
    assert "invalid choice: 'bogus'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown tagger mode"):
        transfer.TransferConfig(train=("a",), test=("b",), output=out, modes=("bogus",)).check()
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert "exists and is not empty" in error("--train", *setup["pool"], *base)
    assert "no omnijet-weaver-transfer study" in error("--train", *setup["pool"], *base, "--overwrite")
    assert (out / "notes.txt").read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
