"""The transfer-learning study (OmniJet-alpha paper, Fig. 7) behind ``omnijet-weaver-transfer``: test accuracy
and ROC AUC of the tagger against the number of labelled training jets, fine-tuned from the generative model vs
trained from scratch vs backbone fixed, over several seeds, every training and prediction with the real
``weaver`` command.

    omnijet-weaver-transfer --train top_train.root qcd_train.root --test top_test.root qcd_test.root \\
        --labels 100 1000 --seeds 0 1 2 --output transfer/

Per seed, the labelled jets (balanced over the data config's classes; nested: the 100 are among the 1000) and
the validation jets (``val_jets`` per class, disjoint from the labelled ones) are drawn from the ``--train`` pool
and written as JetClass-layout ROOT files. Every (mode, labels, seed) then trains with
``weaver ... --network-config network_configs/omnijet_cls.py -o seed <seed> -o early_stopping <patience>``
(an epoch is one pass over the labelled jets; the best epoch is the one with the lowest validation loss;
training stops after ``patience`` epochs without improvement), and ``weaver --predict`` with the best epoch's
checkpoint tags the ``--test`` jets.

The output folder holds ``results.json`` (every run), ``summary.md`` (mean ± std over seeds per mode and number
of labels, and the fine-tuned − from-scratch accuracy difference), ``accuracy.png/.pdf``, ``auc.png/.pdf``,
``commands.sh`` (the weaver command lines) and ``logs/``. It is built in a hidden sibling folder and renamed at
the end (a failed study keeps the hidden folder, with its logs, and says where); the jets, checkpoints and
predictions (``data/``) are deleted unless ``keep_data``. ``summary.md`` is rendered from ``results.json`` alone.
The report folder, the stage timer and the weaver command lines are shared with the demo
(:mod:`omnijet_weaver.studies.base`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from pathlib import Path

import numpy as np

from ..evaluation.classifiers import roc_auc
from ..evaluation.report import fmt, markdown_table, mean_std, pm
from ..io.pythia import split_evenly
from ..models.gpt import BACKBONE_OPTIONS
from ..weaver.runner import (
    MODES,
    WeaverJob,
    WeaverRunError,
    read_class_predictions,
)
from .base import WeaverStudy, training_cost, validation_tiling

#: Learning rate (AdamW) per mode. The demo's grid (1e-4, 1e-3; 10 epochs, 100 and 1000 labels, Pythia top vs
#: QCD) preferred 1e-4 for fine-tuning the whole model and 1e-3 for a fresh backbone or the head alone.
DEFAULT_LRS = {"finetune": 1e-4, "scratch": 1e-3, "frozen": 1e-3}
#: File in every study folder; ``--overwrite`` only ever replaces a folder that holds it.
MARKER = ".omnijet-weaver-transfer"
#: Seed of the random subset of the test jets taken with ``max_test_jets`` (the same for every run).
TEST_SUBSET_SEED = 20240


@dataclasses.dataclass
class TransferConfig:
    """Everything one study needs.

    Attributes:
        train: the labelled pool (ROOT files, JetClass layout); labelled and validation jets are drawn from it.
        test: the test files (weaver --predict reads them as they are, or a random ``max_test_jets`` subset).
        output: study folder (refused when it exists and is not empty, unless ``overwrite``).
        data_config: weaver data config (default: the repository's ``data_configs/qg_top.yaml``); its ``simple``
            labels are the classes.
        labels: numbers of labelled training jets (total, balanced over the classes; nested within a seed).
        modes: tagger modes, keys of :data:`~omnijet_weaver.weaver.runner.MODES`.
        seeds: one labelled / validation draw and one ``-o seed`` per seed.
        val_jets: validation jets per class (per seed; disjoint from the labelled jets).
        epochs: maximum epochs (one pass over the labelled jets each).
        patience: early stopping on the validation loss (epochs without improvement); 0 = off (all epochs, best
            epoch by validation accuracy, weaver's default).
        lrs: learning rate per mode.
        batch_size: training batch size (at most the number of labelled jets).
        pretrained: generative checkpoint to fine-tune (default: the packaged one); its tokenizer and sizes are
            also those of the from-scratch tagger.
        workers: concurrent weaver runs (default: all cores), each with its share of the threads.
        max_test_jets: tag a random subset of this many test jets (default: all).
        keep_data: keep ``data/`` (jets, checkpoints, predictions).
        overwrite: replace an existing study folder.
    """

    train: tuple
    test: tuple
    output: Path
    data_config: str | None = None
    labels: tuple = (100, 1000)
    modes: tuple = ("finetune", "scratch", "frozen")
    seeds: tuple = (0, 1, 2)
    val_jets: int = 500
    epochs: int = 30
    patience: int = 5
    lrs: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_LRS))
    batch_size: int = 32
    pretrained: str | None = None
    workers: int | None = None
    max_test_jets: int | None = None
    keep_data: bool = False
    overwrite: bool = False

    def check(self) -> None:
        """Raise ValueError for settings that cannot work, before any work is done."""
        if not self.train or not self.test:
            raise ValueError("give the labelled pool (--train FILES) and the test files (--test FILES)")
        if not self.labels or any(not isinstance(n, int) or n < 1 for n in self.labels):
            raise ValueError(f"--labels must be positive numbers of labelled jets, got {list(self.labels)}")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"--labels has repeated values: {list(self.labels)}")
        unknown = [m for m in self.modes if m not in MODES]
        if unknown or not self.modes:
            raise ValueError(f"unknown tagger mode(s) {unknown}: choose from {', '.join(MODES)}")
        if len(set(self.modes)) != len(self.modes):
            raise ValueError(f"--modes has repeated values: {list(self.modes)}")
        if not self.seeds or any(not isinstance(s, int) or not 0 <= s < 2**32 for s in self.seeds):
            raise ValueError(f"--seeds must be whole numbers from 0 to 2**32 - 1, got {list(self.seeds)}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"--seeds has repeated values: {list(self.seeds)}")
        if self.val_jets < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError("--val-jets, --epochs and --batch-size must be at least 1")
        if self.patience < 0:
            raise ValueError(f"--patience must be 0 (off) or more epochs, got {self.patience}")
        missing = [m for m in self.modes if m not in self.lrs]
        if missing:
            raise ValueError(f"no learning rate for mode(s) {', '.join(missing)}")
        bad = {m: lr for m, lr in self.lrs.items() if not (isinstance(lr, (int, float)) and lr > 0)}
        if bad:
            raise ValueError(f"learning rates must be positive, got {bad}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {self.workers}")
        if self.max_test_jets is not None and self.max_test_jets < 1:
            raise ValueError(f"--max-test-jets must be at least 1, got {self.max_test_jets}")

    @property
    def n_workers(self) -> int:
        return int(self.workers or os.cpu_count() or 1)


# --------------------------------------------------------------------------------------------------------
# the jets: classes, subsets, files
# --------------------------------------------------------------------------------------------------------


def load_data_config(path):
    """weaver's DataConfig of ``path``; its labels must be ``simple`` (one 0/1 branch per class)."""
    from ..weaver.dataset import read_data_config

    cfg = read_data_config(path, load_observers=False)
    if cfg.label_type != "simple":
        raise ValueError(f"data config {os.fspath(path)!r} has {cfg.label_type!r} labels; the transfer study needs "
                         f"`simple` labels (one 0/1 branch per class), as in data_configs/qg_top.yaml")
    return cfg


def _tree_name(path) -> str:
    from ..io.files import root_tree_kinds

    trees = [k for k, v in root_tree_kinds(path).items() if v == "TTree"]
    return trees[0]


@dataclasses.dataclass
class Jets:
    """The jets of some files: their class (index into ``label_names``; -1 = no class or not selected by the data
    config), where each one is (``offsets``: global index of each file's first jet) and the branches to copy."""

    files: list
    offsets: np.ndarray
    classes: np.ndarray
    label_names: list
    branches: list

    def counts(self) -> dict:
        return {name: int((self.classes == i).sum()) for i, name in enumerate(self.label_names)}


def scan_jets(files, cfg) -> Jets:
    """Class of every jet of ``files`` after the data config's selection (reads only the label and selection
    branches), and the branches all files share (their counter branches left out: the writer makes its own)."""
    import uproot

    from ..weaver.dataset import selected_classes

    labels = list(cfg.label_value)
    classes, offsets, common = [], [0], None
    for path in files:
        with uproot.open(path) as f:
            tree = f[_tree_name(path)]
            names = list(tree.keys())
            counters = {tree[b].count_branch.name for b in names if getattr(tree[b], "count_branch", None) is not None}
            kept = [b for b in names if b not in counters]
            common = kept if common is None else [b for b in common if b in kept]
        classes.append(selected_classes([path], cfg))
        offsets.append(offsets[-1] + len(classes[-1]))
    return Jets([os.fspath(p) for p in files], np.asarray(offsets), np.concatenate(classes), labels, common)


def load_jets(jets: Jets, index) -> dict:
    """The jets at the (sorted, unique) global ``index``: ``{branch: numpy (per jet) or awkward (per constituent)}``
    with the branches every file has, read file by file."""
    import awkward as ak
    import uproot

    index = np.asarray(index, dtype=np.int64)
    parts = []
    for i, path in enumerate(jets.files):
        lo, hi = jets.offsets[i], jets.offsets[i + 1]
        local = index[(index >= lo) & (index < hi)] - lo
        if not len(local):
            continue
        with uproot.open(path) as f:
            tree = f[_tree_name(path)]
            start = 0
            for chunk in tree.iterate(jets.branches, step_size=50_000):
                n = len(chunk)
                sel = local[(local >= start) & (local < start + n)] - start
                if len(sel):
                    parts.append(chunk[sel])
                start += n
    table = ak.concatenate(parts) if len(parts) > 1 else parts[0]
    return {k: (ak.to_numpy(table[k]) if table[k].ndim == 1 else table[k]) for k in table.fields}


def draw_subsets(classes, n_classes: int, labels, val_jets: int, seed: int) -> dict:
    """The validation jets and the labelled jets of one seed, as sorted global indices.

    Per class, the jets are shuffled with ``seed``; the first ``val_jets`` validate, the labelled jets of every
    number of labels are the next ones, so the sets are nested (the 100 among the 1000) and disjoint from the
    validation jets. Returns ``{"val": idx, "labelled": {n: idx}}``.
    """
    rng = np.random.default_rng(seed)
    classes = np.asarray(classes)
    val, labelled = [], {n: [] for n in labels}
    for c in range(n_classes):
        order = rng.permutation(np.flatnonzero(classes == c))
        val.append(order[:val_jets])
        for n in labels:
            labelled[n].append(order[val_jets:val_jets + split_evenly(n, n_classes)[c]])
    return {"val": np.sort(np.concatenate(val)),
            "labelled": {n: np.sort(np.concatenate(v)) for n, v in labelled.items()}}


def fingerprint(index) -> str:
    """A short hash of a set of global jet indices (the same jets -> the same fingerprint)."""
    return hashlib.sha1(np.asarray(index, dtype=np.int64).tobytes()).hexdigest()[:16]


def check_pool(jets: Jets, labels, val_jets: int) -> dict:
    """Raise ValueError unless every class has enough jets for the largest number of labels plus the validation
    jets; returns the jets found per class."""
    if min(labels) < len(jets.label_names):
        raise ValueError(f"--labels must be at least the number of classes ({len(jets.label_names)}: one labelled "
                         f"jet per class), got {list(labels)}")
    found = jets.counts()
    n_max = max(labels)
    shares = split_evenly(n_max, len(jets.label_names))
    short = [(name, val_jets + shares[c], found[name]) for c, name in enumerate(jets.label_names)
             if found[name] < val_jets + shares[c]]
    if short:
        detail = "; ".join(f"{name}: need {need} ({need - val_jets} labelled + {val_jets} validation), found {have}"
                           for name, need, have in short)
        raise ValueError(f"too few jets in the --train pool for {n_max} labels and {val_jets} validation jets per "
                         f"class (after the data config's selection) - {detail}; add files to --train or lower "
                         f"--labels / --val-jets")
    return found


# --------------------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------------------


def class_metrics(truth, scores) -> tuple[float, float]:
    """(accuracy, ROC AUC) of class scores: AUC of the second class against the first with two classes, else the
    mean one-vs-rest AUC (:func:`~omnijet_weaver.evaluation.classifiers.roc_auc`)."""
    truth = np.asarray(truth)
    scores = np.asarray(scores, dtype=np.float64)
    acc = float((np.argmax(scores, axis=1) == truth).mean()) if len(truth) else float("nan")
    return acc, roc_auc(truth, scores)


def summarize(runs: list, modes, labels) -> dict:
    """Per mode and number of labels: mean ± std over seeds of accuracy and AUC; per number of labels: the paired
    (same seed, same labelled jets) accuracy difference of every mode against from scratch, in points."""
    rows = []
    for mode in modes:
        for n in labels:
            rs = [r for r in runs if r["mode"] == mode and r["labels"] == n]
            acc, acc_std = mean_std([r["accuracy"] for r in rs])
            auc, auc_std = mean_std([r["auc"] for r in rs])
            rows.append({"mode": mode, "mode_label": MODES[mode][0], "labels": n, "seeds": len(rs),
                         "accuracy_mean": acc, "accuracy_std": acc_std, "auc_mean": auc, "auc_std": auc_std,
                         "epochs_run_mean": mean_std([r["epochs_run"] for r in rs])[0]})
    diffs = []
    if "scratch" in modes:
        for mode in [m for m in modes if m != "scratch"]:
            for n in labels:
                base = {r["seed"]: r["accuracy"] for r in runs if r["mode"] == "scratch" and r["labels"] == n}
                per_seed = {r["seed"]: 100.0 * (r["accuracy"] - base[r["seed"]])
                            for r in runs if r["mode"] == mode and r["labels"] == n and r["seed"] in base}
                m, s = mean_std(list(per_seed.values()))
                diffs.append({"mode": mode, "mode_label": MODES[mode][0], "labels": n, "seeds": len(per_seed),
                              "accuracy_points_mean": m, "accuracy_points_std": s,
                              "accuracy_points_per_seed": {str(k): v for k, v in sorted(per_seed.items())}})
    return {"table": rows, "minus_scratch": diffs}


# --------------------------------------------------------------------------------------------------------
# the study
# --------------------------------------------------------------------------------------------------------


class TransferStudy(WeaverStudy):
    """One study (see the module docstring). ``run()`` returns the results (as written to results.json)."""

    marker = MARKER
    kind = "omnijet-weaver-transfer study"
    stages = ("labelled and validation jets", "test jets", "tag (weaver)", "report")
    summary_file = "results.json"
    commands_comment = (
        "The weaver command lines of this transfer study (paths as they were during the run; the jets,",
        "checkpoints and predictions are in data/ only with --keep-data). Each training is followed by",
        "its prediction with the best epoch's checkpoint.")

    def __init__(self, config: TransferConfig, out=None):
        from ..evaluation.plots import require_matplotlib
        from ..weaver.dataset import check_branches, check_files

        super().__init__(config, out)
        if config.data_config:
            self.data_config = Path(config.data_config).expanduser().absolute()
        if not self.data_config.is_file():
            raise FileNotFoundError(f"data config {str(self.data_config)!r} does not exist")
        self.dc = load_data_config(self.data_config)
        self.label_names = list(self.dc.label_value)
        self.train_files = [os.path.abspath(f) for f in check_files(config.train)]
        self.test_files = [os.path.abspath(f) for f in check_files(config.test)]
        not_root = [f for f in self.train_files if not f.endswith(".root")]
        if not_root:
            raise ValueError(f"the --train pool must be ROOT files (JetClass layout), got {', '.join(not_root)}")
        if config.max_test_jets and any(not f.endswith(".root") for f in self.test_files):
            raise ValueError("--max-test-jets needs ROOT test files (JetClass layout)")
        check_branches(self.train_files, self.data_config, for_training=True)
        check_branches(self.test_files, self.data_config)
        overlap = sorted(set(self.train_files) & set(self.test_files))
        if overlap:
            raise ValueError(f"{', '.join(overlap)} is both in --train and in --test: the test jets must be others")
        self.pretrained = self._check_pretrained(config.pretrained)
        require_matplotlib()
        self.runs = []

    def _check_pretrained(self, path):
        """The --checkpoint generative checkpoint (None: the packaged one), loaded once to check it and to read the sizes
        a from-scratch tagger of the same architecture needs."""
        from ..models.generative import load_generative
        from ..models.packaged import packaged_path

        self.sizes = None
        if path is None:
            packaged_path("gpt")
            return None
        path = os.path.abspath(os.fspath(path))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--checkpoint {path!r} does not exist")
        try:
            gpt = load_generative(path)
        except Exception as err:
            raise ValueError(f"--checkpoint {path!r} is no generative checkpoint ({type(err).__name__}: "
                             f"{err})") from None
        self.sizes = {k: gpt.config[k] for k in BACKBONE_OPTIONS}
        return path

    def mode_options(self, mode: str) -> list:
        """weaver ``-o`` options of a mode, with the ``--checkpoint`` generative checkpoint."""
        if self.pretrained is None:
            return list(MODES[mode][1])
        if mode == "scratch":  # the same tokenizer and sizes as the checkpoint, fresh backbone
            sizes = [x for k, v in self.sizes.items() for x in ("-o", k, v)]
            return ["-o", "pretrained", "None", "-o", "tokenizer", repr(str(self.tokenizer)), *sizes]
        opts = ["-o", "pretrained", repr(self.pretrained)]
        return opts + (["-o", "freeze_backbone", "True"] if mode == "frozen" else [])

    # -- the run ------------------------------------------------------------------------------------------------
    def headline(self) -> str:
        cfg = self.cfg
        return (f"omnijet-weaver transfer study -> {self.output}: modes {', '.join(cfg.modes)}; labels "
                f"{', '.join(map(str, cfg.labels))}; seeds {', '.join(map(str, cfg.seeds))}")

    def prepare(self) -> None:
        """The classes of the pool's jets, checked before any file is written."""
        self.pool = scan_jets(self.train_files, self.dc)
        found = check_pool(self.pool, self.cfg.labels, self.cfg.val_jets)
        self.say(f"    pool: {len(self.pool.classes)} jets in {len(self.pool.files)} file(s), after the data config's "
                 f"selection " + ", ".join(f"{k} {v}" for k, v in found.items()))

    def build(self) -> None:
        subsets = self.stage("labelled and validation jets", lambda: self.write_jets(self.pool))
        test = self.stage("test jets", self.test_set)
        self.stage("tag (weaver)", lambda: self.train_and_predict(subsets, test))
        self.stage("report", lambda: self.report(self.pool, subsets, test))

    def markdown(self, summary: dict) -> str:
        return summary_markdown(summary)

    def write_jets(self, pool: Jets) -> dict:
        """Draw and write every seed's labelled and validation jets; returns ``{seed: {"val", "labelled",
        "files"}}``."""
        from ..io.files import write_root
        from ..models.checkpoint import save_model

        cfg = self.cfg
        subsets = {s: draw_subsets(pool.classes, len(pool.label_names), cfg.labels, cfg.val_jets, s) for s in cfg.seeds}
        needed = np.unique(np.concatenate([a for d in subsets.values() for a in [d["val"], *d["labelled"].values()]]))
        arrays = load_jets(pool, needed)
        for seed, d in subsets.items():
            folder = self.data / f"seed{seed}"
            d["files"] = {"val": folder / "val.root", **{n: folder / f"train_{n}.root" for n in cfg.labels}}
            for key, index in [("val", d["val"]), *d["labelled"].items()]:
                pos = np.searchsorted(needed, index)
                write_root(d["files"][key], {k: v[pos] for k, v in arrays.items()})
        if self.pretrained is not None and "scratch" in cfg.modes:
            from ..models.generative import load_generative

            self.tokenizer = self.data / "tokenizer.pt"
            save_model(load_generative(self.pretrained).tokenizer, self.tokenizer)
        self.say(f"    {len(cfg.seeds)} seed(s): labelled sets of {', '.join(map(str, cfg.labels))} jets (nested) and "
                 f"{cfg.val_jets} validation jets per class written to {self.shown(self.data)}")
        return subsets

    def test_set(self) -> dict:
        """The test files weaver --predict reads (a random subset with ``max_test_jets``)."""
        from ..io.files import write_root

        cfg = self.cfg
        if not cfg.max_test_jets:
            return {"files": self.test_files, "subset": None}
        jets = scan_jets(self.test_files, self.dc)
        usable = np.flatnonzero(jets.classes >= 0)
        rng = np.random.default_rng(TEST_SUBSET_SEED)
        index = np.sort(rng.choice(usable, size=min(cfg.max_test_jets, len(usable)), replace=False))
        path = self.data / "test.root"
        write_root(path, load_jets(jets, index))
        self.say(f"    test: {len(index)} of {len(usable)} jets (random subset, seed {TEST_SUBSET_SEED})")
        return {"files": [path], "subset": int(len(index))}

    def train_and_predict(self, subsets: dict, test: dict) -> None:
        cfg = self.cfg
        runner = self.runner()
        n_classes = len(self.label_names)
        n_val = cfg.val_jets * n_classes
        val_batch, val_steps = validation_tiling(n_val)
        es = ["-o", "early_stopping", cfg.patience] if cfg.patience else []
        jobs, info = [], {}
        for seed in cfg.seeds:
            files = subsets[seed]["files"]
            for n in cfg.labels:
                batch = min(cfg.batch_size, n)
                steps = math.ceil(n / batch)
                for mode in cfg.modes:
                    name = f"{mode}_{n}_seed{seed}"
                    prefix = self.data / "runs" / name / "cls"
                    lr = float(cfg.lrs[mode])
                    # the same network options for the training and the prediction, as weaver users do
                    opts = [*self.mode_options(mode), "-o", "seed", seed, *es]
                    train = self.train_args([files[n]], [files["val"]], opts, prefix, batch_size=batch,
                                            epochs=cfg.epochs, steps=steps, val_tiling=(val_batch, val_steps), lr=lr)
                    pred = self.data / "predictions" / f"{name}.root"
                    predict = self.predict_args(test["files"], opts, prefix, pred)
                    label = f"{MODES[mode][0]}, {n} labels, seed {seed}"
                    cost = training_cost(cfg.epochs, steps, batch, n_val, mode)
                    job = WeaverJob(f"train {label}", train, self.logs / f"train_{name}.log", cost,
                                    then=[WeaverJob(f"predict {label}", predict, self.logs / f"predict_{name}.log")])
                    jobs.append(job)
                    info[id(job)] = {"mode": mode, "mode_label": MODES[mode][0], "labels": n, "seed": seed, "lr": lr,
                                     "batch_size": batch, "steps_per_epoch": steps, "max_epochs": cfg.epochs,
                                     "patience": cfg.patience, "prediction": pred,
                                     "labelled_jets_per_class": dict(zip(self.label_names, split_evenly(n, n_classes))),
                                     "labelled_jets_sha1": fingerprint(subsets[seed]["labelled"][n]),
                                     "validation_jets_sha1": fingerprint(subsets[seed]["val"])}
        self.commands = [["weaver", *a.args] for j in jobs for a in (j, *j.then)]
        self.val_layout = {"jets": n_val, "batch_size": val_batch, "steps": val_steps}
        total = len(jobs)
        self.say(f"    {total} weaver trainings (up to {cfg.epochs} epochs each, "
                 + (f"early stopping with patience {cfg.patience}" if cfg.patience else "no early stopping")
                 + f"), each followed by weaver --predict; {runner.concurrent} at a time with {runner.threads} "
                 f"thread(s) each; logs in {self.logs}")

        def done(job):
            run = self.collect(job, info[id(job)])
            self.runs.append(run)
            self.say(f"    [{len(self.runs)}/{total}] {job.name[len('train '):]}: test accuracy {run['accuracy']:.3f}, "
                     f"AUC {run['auc']:.3f} (best epoch {run['best_epoch']}, {run['epochs_run']} of {cfg.epochs} "
                     f"epochs run{', stopped early' if run['stopped_early'] else ''}; "
                     f"{run['seconds_train'] + run['seconds_predict']:.0f} s)")

        runner.run(jobs, on_done=done)
        order = {(m, n, s): i for i, (m, n, s) in enumerate(
            (m, n, s) for m in cfg.modes for n in cfg.labels for s in cfg.seeds)}
        self.runs.sort(key=lambda r: order[(r["mode"], r["labels"], r["seed"])])

    def collect(self, job: WeaverJob, info: dict) -> dict:
        """One run's record from its training history (``<prefix>_history.jsonl``) and predictions."""
        log = job.log
        history = job.history()
        trained = [r for r in history if not r["skipped"]]  # early stopping skips only the last epochs
        epochs_run = len(trained)
        if epochs_run < 1 or any(r["train"] is None or r["val"] is None for r in trained):
            raise WeaverRunError(f"weaver ({job.name}): its history {self.shown(job.model_prefix)}_history.jsonl "
                                 f"holds {epochs_run} trained epochs, not all of them validated; see {self.shown(log)}")
        val_losses = [r["val"]["loss"] for r in trained]
        accs = [r["val"]["accuracy"] for r in trained]
        best_epoch = history[-1]["best_epoch"]  # weaver's (with early stopping: the lowest validation loss)
        stopped = epochs_run < len(history)
        truth, scores = read_class_predictions(info["prediction"], self.label_names)
        acc, auc = class_metrics(truth, scores)
        run = {k: v for k, v in info.items() if k != "prediction"}
        run.update({"epochs_run": epochs_run, "stopped_early": stopped, "best_epoch": best_epoch,
                    "val_loss_per_epoch": val_losses, "val_accuracy_per_epoch": accs,
                    "best_val_loss": val_losses[best_epoch], "best_val_accuracy": accs[best_epoch],
                    "test_jets": int(len(truth)), "accuracy": acc, "auc": auc,
                    "seconds_train": job.seconds, "seconds_predict": job.then[0].seconds,
                    "log": self.shown(log).replace(str(self.output) + os.sep, "")})
        return run

    # -- report -------------------------------------------------------------------------------------------------
    def report(self, pool: Jets, subsets: dict, test: dict) -> None:
        from ..evaluation import plots

        cfg = self.cfg
        summary = summarize(self.runs, cfg.modes, cfg.labels)
        test_jets = sorted({r["test_jets"] for r in self.runs})
        self.summary = {
            "config": {**{k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("train", "test", "output")},
                       "train": self.train_files, "test": self.test_files, "output": str(self.output),
                       "data_config": str(self.data_config),
                       "pretrained": self.pretrained or "packaged (omnijet_weaver/models/weights/gpt.pt)"},
            "checkpoint": (f"`{os.path.basename(self.pretrained)}`" if self.pretrained
                           else "the packaged one (`gpt.pt`)"),
            "classes": self.label_names,
            "pool_jets_per_class": pool.counts(),
            "validation": {"jets_per_class": cfg.val_jets, **self.val_layout},
            "test_jets": test_jets[0] if len(test_jets) == 1 else test_jets,
            "test_subset": test["subset"],
            "subsets": {str(s): {"validation_sha1": fingerprint(d["val"]),
                                 "labelled_sha1": {str(n): fingerprint(i) for n, i in d["labelled"].items()}}
                        for s, d in subsets.items()},
            "runs": self.runs,
            "summary": summary["table"],
            "accuracy_difference_to_scratch": summary["minus_scratch"],
        }
        by_mode = lambda key: {MODES[m][0]: {r["labels"]: (r[f"{key}_mean"], r[f"{key}_std"])
                                             for r in summary["table"] if r["mode"] == m} for m in cfg.modes}
        title = (f"OmniJet-α: mean ± std over {len(cfg.seeds)} seeds" if len(cfg.seeds) > 1
                 else "OmniJet-α: one seed")
        figs = {"accuracy": plots.metric_vs_labels(self.work / "accuracy", by_mode("accuracy"), ylabel="test accuracy",
                                                   title=title),
                "auc": plots.metric_vs_labels(self.work / "auc", by_mode("auc"), ylabel="test ROC AUC", title=title)}
        self.summary["figures"] = {k: [p.name for p in v] for k, v in figs.items()}
        self.write_commands()
        for r in summary["table"]:
            self.say(f"    {r['mode_label']:>14}, {r['labels']:>6} labels: accuracy "
                     f"{pm(r['accuracy_mean'], r['accuracy_std'])}, "
                     f"AUC {pm(r['auc_mean'], r['auc_std'])} ({r['seeds']} seed{'s' if r['seeds'] != 1 else ''})")
        for d in summary["minus_scratch"]:
            self.say(f"    {d['mode_label']} − from scratch, {d['labels']} labels: "
                     f"{pm(d['accuracy_points_mean'], d['accuracy_points_std'], 1, sign=True)} accuracy points")


def summary_markdown(res: dict) -> str:
    """``summary.md`` from the results as written to results.json (nothing else: every number shown is one of
    the JSON; a missing one, null, is shown as "–")."""
    cfg = res["config"]
    runs = res["runs"]
    lrs = ", ".join(f"{MODES[m][0]} {cfg['lrs'][m]:g}" for m in cfg["modes"])
    pool = ", ".join(f"{k} {v}" for k, v in res["pool_jets_per_class"].items())
    p = cfg["patience"]
    stop = (f"early stopping on the validation loss (patience {p} epoch{'s' if p != 1 else ''}; best epoch = lowest "
            f"validation loss)" if p else "no early stopping (best epoch = highest validation accuracy)")
    L = ["# OmniJet-α transfer-learning study", "",
         f"Classes {', '.join(res['classes'])} (data config `{os.path.basename(cfg['data_config'])}`); labelled pool "
         f"{', '.join(f'`{os.path.basename(f)}`' for f in cfg['train'])} ({pool} jets after the selection); test "
         f"{', '.join(f'`{os.path.basename(f)}`' for f in cfg['test'])} ({res['test_jets']} jets"
         f"{', random subset' if res.get('test_subset') else ''}). Generative checkpoint: {res['checkpoint']}.", "",
         f"Per seed ({', '.join(map(str, cfg['seeds']))}): labelled jets drawn from the pool, balanced over the "
         f"classes and nested (the smaller sets are part of the larger ones), and {cfg['val_jets']} validation jets "
         f"per class, disjoint from them; `-o seed` seeds the tagger's initialisation and weaver's shuffling. Each "
         f"run: up to {cfg['epochs']} epochs of one pass over the labelled jets, {stop}, batch size "
         f"{cfg['batch_size']} (at most the number of labels), AdamW, learning rate {lrs}.", "",
         "## Test accuracy and AUC (mean ± std over seeds)", "",
         markdown_table(["mode", "labelled jets", "seeds", "accuracy", "AUC", "epochs run (mean)"],
                        [[r["mode_label"], r["labels"], r["seeds"], pm(r["accuracy_mean"], r["accuracy_std"], 4),
                          pm(r["auc_mean"], r["auc_std"], 4), fmt(r["epochs_run_mean"], 1)]
                         for r in res["summary"]])]
    if res["accuracy_difference_to_scratch"]:
        L += ["## Accuracy difference to training from scratch", "",
              "Paired per seed (same labelled and validation jets), in accuracy points (1 point = 0.01), mean ± std "
              "over seeds.", "",
              markdown_table(["mode", "labelled jets", "seeds", "− from scratch [points]", "per seed"],
                             [[d["mode_label"], d["labels"], d["seeds"],
                               pm(d["accuracy_points_mean"], d["accuracy_points_std"], 1, sign=True),
                               ", ".join(pm(v, None, 1, sign=True) for v in d["accuracy_points_per_seed"].values())]
                              for d in res["accuracy_difference_to_scratch"]])]
    L += ["## Figures", "", "![accuracy](accuracy.png)", "", "![auc](auc.png)", "",
          "<details><summary>all runs</summary>", "",
          markdown_table(["mode", "labels", "seed", "lr", "epochs run", "best epoch", "best validation loss",
                          "validation accuracy", "test accuracy", "test AUC", "seconds"],
                         [[r["mode_label"], r["labels"], r["seed"], f"{r['lr']:g}",
                           f"{r['epochs_run']}{' (stopped)' if r['stopped_early'] else ''}", r["best_epoch"],
                           fmt(r["best_val_loss"], 4), fmt(r["best_val_accuracy"], 4), fmt(r["accuracy"], 4),
                           fmt(r["auc"], 4), f"{r['seconds_train'] + r['seconds_predict']:.0f}"] for r in runs])]
    L += ["</details>", "",
          f"Total wall time {res['total_seconds']:.0f} s. Commands: `commands.sh`; weaver logs: `logs/`; every run: "
          f"`results.json`.", ""]
    return "\n".join(L)


def run_transfer(config: TransferConfig, out=None) -> dict:
    """Run the study; returns the results (also written to ``<output>/results.json``)."""
    return TransferStudy(config, out=out).run()


__all__ = ["TransferConfig", "TransferStudy", "run_transfer", "draw_subsets", "scan_jets",
           "load_jets", "check_pool", "summarize", "summary_markdown", "DEFAULT_LRS", "MARKER"]
