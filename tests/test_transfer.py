"""The transfer-learning study (omnijet-weaver-transfer) and the tagger's ``-o seed`` / ``-o early_stopping``.

One tiny study (toy jets, a tiny pre-trained model, 2 label counts x 2 modes x 2 seeds, at most 3 epochs, real
``weaver`` trainings and predictions) is shared by the tests of this module. Its from-scratch runs have a learning
rate of 1e-12, so their validation loss cannot improve: with patience 1 they must stop after two epochs, which
tests the early stopping inside real weaver runs.
"""

from __future__ import annotations

import importlib.util
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

from omnijet_weaver.studies import transfer
from omnijet_weaver.weaver import early_stopping
from omnijet_weaver.io.files import write_root
from omnijet_weaver.weaver.runner import MODES, read_training_log

from conftest import DATA_CONFIG, toy_jets
from test_tagger import GPT_SIZES, load_data_config, make_checkpoints, part

HAVE_MPL = importlib.util.find_spec("matplotlib") is not None
needs_mpl = pytest.mark.skipif(not HAVE_MPL, reason="matplotlib is not installed (pip install '.[plot]')")

LABELS, MODES_RUN, SEEDS = (8, 16), ("finetune", "scratch"), (0, 1)
ROW = re.compile(r"^\| (fine-tuned|from scratch|backbone fixed) \| (\d+) \| (\d+) \| ([^|]+) \| ([^|]+) \|", re.M)


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
                   "--lr", f"scratch={FROZEN_LR}", "--pretrained", setup["gpt"], "--workers", 2, "--keep-data",
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
        assert "network_configs/omnijet_cls.py" in c and "-o early_stopping 1" in c
    for c in train:
        assert "--optimizer adamw" in c
        n = int(re.search(r"train_(\d+)\.root", c).group(1))
        assert re.search(r"-o seed \d", c) and f"--steps-per-epoch {math.ceil(n / 8)} " in c
    assert sum("-o pretrained None" in c for c in train) == n_runs // 2  # from scratch: its tokenizer and sizes
    assert all("-o tokenizer" in c and "-o embed_dim 32" in c for c in train if "-o pretrained None" in c)
    # one progress line per run
    assert len(re.findall(r"^    \[\d+/8\] .*test accuracy [0-9.]+, AUC [0-9.]+", proc.stdout, re.M)) == n_runs


@needs_mpl
def test_every_run_is_in_results(study, setup):
    _, _, res = study
    runs = res["runs"]
    assert len(runs) == len(LABELS) * len(MODES_RUN) * len(SEEDS)
    assert {(r["mode"], r["labels"], r["seed"]) for r in runs} == {
        (m, n, s) for m in MODES_RUN for n in LABELS for s in SEEDS}
    for r in runs:
        assert 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["auc"] <= 1.0
        assert r["test_jets"] == 60 and r["labelled_jets_per_class"] == {"label_QCD": r["labels"] // 2,
                                                                        "label_Tbqq": r["labels"] // 2}
        assert 1 <= r["epochs_run"] <= 3 and len(r["val_loss_per_epoch"]) == r["epochs_run"]
        assert r["lr"] == (FROZEN_LR if r["mode"] == "scratch" else transfer.DEFAULT_LRS[r["mode"]])
        assert r["seconds_train"] > 0 and r["seconds_predict"] > 0
        # best epoch: the lowest validation loss (an improvement below numerical noise does not count)
        losses = r["val_loss_per_epoch"]
        assert r["best_val_loss"] == losses[r["best_epoch"]] <= min(losses) * (1 + early_stopping.MIN_REL_IMPROVEMENT)
        # the losses are weaver's own "Eval AvgLoss" (printed with 5 decimals)
        log_losses = read_training_log(setup["folder"] / "study" / r["log"]).val_losses
        assert np.allclose(log_losses, losses, atol=6e-6)
    # the same seed draws the same labelled jets for every mode; the seeds draw different ones
    for n in LABELS:
        for s in SEEDS:
            assert len({r["labelled_jets_sha1"] for r in runs if r["labels"] == n and r["seed"] == s}) == 1
        assert len({res["subsets"][str(s)]["labelled_sha1"][str(n)] for s in SEEDS}) == len(SEEDS)


@needs_mpl
def test_summary_table_has_mean_std_and_difference(study):
    out, proc, res = study
    text = (out / "summary.md").read_text()
    main, rest = text.split("## Accuracy difference to training from scratch")
    rows = {(m, int(n)): (int(k), a, b) for m, n, k, a, b in ROW.findall(main)}
    assert set(rows) == {(MODES[m][0], n) for m in MODES_RUN for n in LABELS}
    for (mode, n), (seeds, acc, auc) in rows.items():
        assert seeds == len(SEEDS) and "±" in acc and "±" in auc
        mean, std = (float(x) for x in acc.split("±"))
        accs = [r["accuracy"] for r in res["runs"] if r["mode_label"] == mode and r["labels"] == n]
        assert mean == pytest.approx(np.mean(accs), abs=1e-4) and std == pytest.approx(np.std(accs, ddof=1), abs=1e-4)
    # fine-tuned - from scratch, paired per seed, in accuracy points
    diff = {d["labels"]: d for d in res["accuracy_difference_to_scratch"] if d["mode"] == "finetune"}
    for n in LABELS:
        ft = {r["seed"]: r["accuracy"] for r in res["runs"] if r["mode"] == "finetune" and r["labels"] == n}
        sc = {r["seed"]: r["accuracy"] for r in res["runs"] if r["mode"] == "scratch" and r["labels"] == n}
        assert diff[n]["accuracy_points_mean"] == pytest.approx(100 * np.mean([ft[s] - sc[s] for s in SEEDS]))
        assert re.search(rf"^\| fine-tuned \| {n} \| 2 \| [-+][0-9.]+ ± [0-9.]+ \|", rest, re.M), rest
    assert "accuracy points" in proc.stdout and "](accuracy.png)" in text and "](auc.png)" in text


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
    assert np.bincount(classes[a["labelled"][101]]).tolist() == [51, 50] == transfer.class_shares(101, 2)
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


def test_without_early_stopping_weaver_uses_its_own_loops():
    from omnijet_weaver.weaver.networks import UseWeaverLoops, tagger_evaluate_fn, tagger_train_fn

    for fn in (tagger_train_fn, tagger_evaluate_fn):
        with pytest.raises(AttributeError):  # weaver 0.5.3: "not defined" -> its own classification loops
            fn(None)
        with pytest.raises(UseWeaverLoops):
            fn(None, early_stopping=0)
    assert callable(tagger_train_fn(None, early_stopping=2)) and callable(tagger_evaluate_fn(None, early_stopping=2))


def test_early_stopping_wraps_weavers_evaluation(monkeypatch):
    """The wrapper around weaver's evaluate_classification (stubbed): loss recorded through the loss function,
    exp(-loss) returned, patience counted, noise-level improvements ignored, --predict passed through."""
    from weaver.utils.nn import tools

    calls = []

    def fake_evaluate(model, loader, dev, epoch, for_training=True, loss_func=None, steps_per_epoch=None,
                      tb_helper=None, extra_args=None, **kw):
        calls.append(for_training)
        if not for_training:
            return "weaver's tuple"
        for value, n in loader:  # (loss of the batch, batch size)
            loss_func(torch.tensor(value), torch.zeros(n)).item()
        return 0.5  # weaver's accuracy: not what the wrapper returns

    monkeypatch.setattr(tools, "evaluate_classification", fake_evaluate)
    monkeypatch.setattr(tools, "train_classification", lambda *a, **k: calls.append("train"))
    train = early_stopping.train_fn(2)
    evaluate = early_stopping.evaluate_fn(2)
    identity = lambda out, label: out  # noqa: E731 - the "loss function": the batch loss itself
    losses = {0: [(1.0, 10), (0.8, 30)], 1: [(0.7, 40)], 2: [(0.7 * (1 - 1e-7), 40)], 3: [(0.9, 40)], 4: [(0.1, 40)]}
    metrics = []
    for epoch in range(5):
        train(None, identity, None, None, None, "cpu", epoch, extra_args={})
        metrics.append(evaluate(None, losses[epoch], "cpu", epoch, loss_func=identity, extra_args={}))
    assert metrics[0] == pytest.approx(math.exp(-0.85)) and metrics[1] == pytest.approx(math.exp(-0.7))
    assert metrics[2] == metrics[1]  # lower only by numerical noise: weaver gets the best metric back
    assert metrics[3] == pytest.approx(math.exp(-0.9))
    assert math.isnan(metrics[4])  # epoch 4 skipped after 2 epochs without improvement
    assert calls.count("train") == 4 and calls.count(True) == 4
    assert evaluate(None, None, "cpu", None, for_training=False, extra_args={}) == "weaver's tuple"
    # a diverged first epoch (NaN loss) is no best epoch; the next finite one is
    state = early_stopping.EarlyStopping(3)
    out = [state.evaluate(None, [(v, 4)], "cpu", e, loss_func=identity, extra_args={})
           for e, v in enumerate([float("nan"), 0.5])]
    assert math.isnan(out[0]) and out[1] == pytest.approx(math.exp(-0.5)) and state.best_epoch == 1


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
        assert "early stopping: validation loss has not improved for 1 epochs, skipping epoch 2" in log
        parsed = early_stopping.parse_log(log)
        assert parsed["best_epoch"] == 0 and parsed["skipped"] == [2] and sorted(parsed["losses"]) == [0, 1]
        eval_losses = [float(x) for x in re.findall(r"Eval AvgLoss: ([0-9.]+)", log)]
        metrics = re.findall(r"Current validation metric: (\S+) \(best: (\S+)\)", log)
        assert len(eval_losses) == 2 and len(metrics) == 3
        for epoch, loss in enumerate(eval_losses):
            assert parsed["losses"][epoch] == pytest.approx(loss, abs=6e-6)
            assert float(metrics[epoch][0]) == pytest.approx(math.exp(-loss), rel=1e-4, abs=1e-5)
        assert metrics[2][0] == "nan" and metrics[2][1] == metrics[0][0]  # skipped: never weaver's best
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
    base = ["--test", setup["test"], "--output", out, "--pretrained", setup["gpt"]]
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
