"""The end-to-end demo behind ``omnijet-weaver-demo``: one command, every part of OmniJet-alpha in weaver.

    omnijet-weaver-demo --output report/          # ~15 min on 2 CPU cores
    omnijet-weaver-demo --output /tmp/r --quick   # tiny everything, ~1 min (what the tests run)

Stages (each printed with its wall time):

1. **make jets**: top and QCD jets with Pythia8 + FastJet (:func:`omnijet_weaver.io.pythia.make_jets`, seeded,
   one Pythia per worker), split per process into training, validation and test jets and written as
   JetClass-layout TTrees; the labelled training sets (e.g. 100 and 1000 jets, half top, half QCD) are nested.
2. **tokenize** the test jets with the packaged tokenizer (the one inside the packaged generative model):
   token file, codebook usage, jet-mass resolution per class (:mod:`omnijet_weaver.evaluation.reconstruction`).
3. **generate** jets with the packaged generative model (:meth:`OmniJetGPT.generate`), and top and QCD jets
   by class with the packaged class-conditional one (when the install has it), written in the
   JetClass layout, compared with the test jets (jet mass and pT, multiplicity, constituent pT).
4. **tag**: the tagger (``network_configs/omnijet_cls.py``) trained with the real ``weaver`` command per mode
   (fine-tuned from the packaged backbone, from scratch, optionally backbone fixed), number of labels and
   learning rate (the same epochs and learning-rate grid for every mode); per mode and number of labels the
   learning rate with the best validation accuracy (weaver's best epoch) is kept, and ``weaver --predict``
   on the test jets gives accuracy and ROC AUC. The best fine-tuned tagger also tags the generated jets,
   which splits them into top-like and QCD-like jets.
5. **report**: PNG (and PDF) figures, ``summary.md`` (tables, physics checks, wall times), ``summary.json``,
   ``commands.sh`` (the weaver command lines) and the weaver logs.

The report is built in a hidden sibling folder and renamed to ``--output`` at the end, so an interrupted run
never leaves a half-written report (a failed one keeps the hidden folder, with its logs, and says where). The
jets, token files, checkpoints and predictions (``data/``) are deleted at the end unless ``keep_data``.
``summary.md`` is rendered from ``summary.json`` alone. The report folder, the stage timer and the weaver
command lines are shared with the transfer study (:mod:`omnijet_weaver.studies.base`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np

from ..constants import TOKEN_COLUMN
from ..evaluation.classifiers import roc_auc
from ..evaluation.report import check_report_folder, fmt, markdown_table, pm
from ..kinematics import mass_from_pt_eta
from ..models.gpt import BACKBONE_OPTIONS
from ..weaver.history import validation_metrics
from ..weaver.runner import (
    MODES,
    OutputExistsError,
    WeaverJob,
    read_predictions,
    repo_configs,
)
from ..weaver.runner import WeaverRunError as DemoError  # a demo stage failed (the message says which, and its log)
from .base import WeaverStudy, training_cost, validation_tiling

#: Jet types of the demo, in the order of the Pythia runs: (process name, label branch).
PROCESSES = (("top", "label_Tbqq"), ("qcd", "label_QCD"))
#: File in every demo report; ``--overwrite`` only ever replaces a folder that holds it.
MARKER = ".omnijet-weaver-demo"
#: Physics windows checked on the jets.
TOP_MASS_WINDOW = (160.0, 185.0)  # GeV, median top-jet mass
MULTIPLICITY_WINDOW = (20.0, 150.0)  # median constituents per jet (Pythia, no detector: ~65-80)
#: Histogram binning of the comparison figures.
MASS_BINS = np.linspace(0, 300, 31)
PT_BINS = np.linspace(200, 1200, 41)
MULT_BINS = np.arange(0, 132, 4)
CONST_PT_BINS = np.geomspace(0.1, 1000, 41)


@dataclasses.dataclass
class DemoConfig:
    """Everything one demo run needs. The defaults are the full run; :func:`quick_config` the tiny one.

    Attributes:
        output: report folder (refused when it exists and is not empty, unless ``overwrite``).
        num_jets: Pythia jets per process (top and QCD).
        labels: numbers of labelled training jets (balanced top / QCD; nested sets).
        val_jets: validation jets per process (weaver's best epoch and the learning-rate choice).
        gen_jets: jets generated with the packaged generative model.
        epochs: training epochs of every tagger run (an epoch is one pass over the labelled jets).
        lrs: learning-rate grid (AdamW), the same for every mode.
        modes: tagger modes, keys of :data:`MODES`.
        batch_size: training batch size.
        seed: Pythia, sampling and tagger seed (every weaver training gets ``-o seed``, so a rerun repeats it).
        workers: Pythia worker processes and concurrent weaver runs (default: all cores).
        keep_data: keep ``data/`` (jets, tokens, checkpoints, predictions) in the report.
        overwrite: replace an existing demo report.
        progress: progress bars (Pythia, sampling, tokenization).
    """

    output: Path
    num_jets: int = 1500
    labels: tuple = (100, 1000)
    val_jets: int = 150
    gen_jets: int = 1000
    epochs: int = 10
    lrs: tuple = (1e-4, 1e-3)
    modes: tuple = ("finetune", "scratch")
    batch_size: int = 32
    seed: int = 1
    workers: int | None = None
    keep_data: bool = False
    overwrite: bool = False
    progress: bool = True
    quick: bool = False

    def check(self) -> None:
        """Raise ValueError for settings that cannot work, before any work is done."""
        if self.num_jets < 1 or self.val_jets < 1 or self.gen_jets < 1:
            raise ValueError("--num-jets, the validation jets and the generated jets must be at least 1")
        if not self.labels or min(self.labels) < 2:
            raise ValueError(f"--labels must be numbers of at least 2 (half top, half QCD), got {list(self.labels)}")
        unknown = [m for m in self.modes if m not in MODES]
        if unknown or not self.modes:
            raise ValueError(f"unknown tagger mode(s) {unknown}: choose from {', '.join(MODES)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("--epochs and --batch-size must be at least 1")
        if not self.lrs or min(self.lrs) <= 0:
            raise ValueError(f"--lr values must be positive, got {list(self.lrs)}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {self.workers}")
        need = math.ceil(max(self.labels) / 2) + self.val_jets + 2
        if self.num_jets < need:
            raise ValueError(
                f"--num-jets {self.num_jets} per process is too few for {max(self.labels)} labels and "
                f"{self.val_jets} validation jets per process: need at least {need} (some are left for the test)")

    @property
    def n_workers(self) -> int:
        return int(self.workers or os.cpu_count() or 1)


def quick_config(output, **changes) -> DemoConfig:
    """The tiny demo (``--quick``): 60 jets per process, 20 and 40 labels, 2 epochs, one learning rate."""
    base = dict(output=Path(output), num_jets=60, labels=(20, 40), val_jets=20, gen_jets=64, epochs=2,
                lrs=(1e-3,), batch_size=10, quick=True)
    base.update(changes)
    return DemoConfig(**base)


def check_output(output, overwrite: bool = False) -> Path:
    """Validate the report folder before any work; returns it as an absolute path.

    An existing non-empty folder is refused unless ``overwrite``; even then only a previous demo report
    (one holding the :data:`MARKER` file) is replaced, never an unrelated folder.
    """
    return check_report_folder(output, MARKER, overwrite, kind="omnijet-weaver-demo report")


# --------------------------------------------------------------------------------------------------------
# jets and their kinematics
# --------------------------------------------------------------------------------------------------------


def take(arrays: dict, index) -> dict:
    """The jets ``index`` of a dict of per-jet (numpy) and per-constituent (awkward) arrays."""
    index = np.asarray(index, dtype=np.int64)
    return {k: v[index] for k, v in arrays.items()}


def _median(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(np.median(x)) if len(x) else float("nan")


# --------------------------------------------------------------------------------------------------------
# the demo
# --------------------------------------------------------------------------------------------------------


class Demo(WeaverStudy):
    """One demo run (see the module docstring). ``run()`` returns the summary (as written to summary.json)."""

    marker = MARKER
    kind = "omnijet-weaver-demo report"
    stages = ("make jets", "tokenize", "generate", "tag (weaver)", "report")
    commands_comment = ("The weaver command lines of this demo run (paths as they were during the run;",
                        "the jets and checkpoints are in data/ only with --keep-data).")

    def __init__(self, config: DemoConfig, out=None):
        super().__init__(config, out)
        from ..evaluation.plots import require_matplotlib
        from ..io.pythia import require_pythia

        require_pythia()  # missing extras fail here, before any work, with the pip command to run
        require_matplotlib()
        self.figures = {}

    def headline(self) -> str:
        cfg = self.cfg
        return (f"omnijet-weaver demo -> {self.output} ({'quick, ' if cfg.quick else ''}{cfg.num_jets} jets per "
                f"process, labels {', '.join(map(str, cfg.labels))}, modes {', '.join(cfg.modes)}, "
                f"{cfg.n_workers} workers)")

    def build(self) -> None:
        for name, fn in zip(self.stages, (self.make_jets, self.tokenize, self.generate, self.tag, self.report)):
            self.stage(name, fn)

    def markdown(self, summary: dict) -> str:
        return summary_markdown(summary)

    # -- 1. jets ------------------------------------------------------------------------------------------------
    def make_jets(self) -> None:
        from ..io.files import write_root
        from ..io.jetclass import jet_masses
        from ..io.pythia import make_jets

        cfg = self.cfg
        arrays = make_jets([p for p, _ in PROCESSES], cfg.num_jets, seed=cfg.seed, workers=cfg.n_workers,
                           progress=cfg.progress)
        mass = jet_masses(arrays)
        n_train = math.ceil(max(cfg.labels) / 2)
        files = {"train": [], "val": [], "test": []}
        label_files = {n: [] for n in cfg.labels}
        physics = {}
        for name, label in PROCESSES:
            idx = np.flatnonzero(np.asarray(arrays[label]) == 1)
            split = {"train": idx[:n_train], "val": idx[n_train:n_train + cfg.val_jets],
                     "test": idx[n_train + cfg.val_jets:]}
            for part, sel in split.items():
                path = self.data / f"{name}_{part}.root"
                write_root(path, take(arrays, sel))
                files[part].append(path)
            for n in cfg.labels:  # nested balanced sets: the first n/2 training jets of each process
                k = n // 2 if name == "top" else n - n // 2
                path = self.data / f"train{n}_{name}.root"
                write_root(path, take(arrays, split["train"][:k]))
                label_files[n].append(path)
            physics[name] = {"jets": int(len(idx)), "median_mass_GeV": _median(mass[idx]),
                             "median_multiplicity": _median(np.asarray(arrays["jet_nparticles"])[idx]),
                             "mass": mass[idx], "multiplicity": np.asarray(arrays["jet_nparticles"])[idx]}
            physics[name]["splits"] = {k: int(len(v)) for k, v in split.items()}
        self.files, self.label_files, self.pythia = files, label_files, physics
        self.say("    " + "; ".join(f"{p}: {v['jets']} jets (train {v['splits']['train']}, val {v['splits']['val']}, "
                                    f"test {v['splits']['test']}), median mass {v['median_mass_GeV']:.1f} GeV, "
                                    f"median multiplicity {v['median_multiplicity']:.0f}" for p, v in physics.items()))
        self.summary["jets"] = {p: {k: v for k, v in d.items() if k not in ("mass", "multiplicity")}
                                for p, d in physics.items()}

    # -- 2. tokens ----------------------------------------------------------------------------------------------
    def tokenize(self) -> None:
        import awkward as ak

        from ..evaluation.reconstruction import reconstruct_jets, reconstruction_summary
        from ..io.files import write_parquet
        from ..models.generative import load_generative
        from ..models.packaged import packaged_path
        from ..models.quantizer import codebook_usage
        from ..weaver.dataset import tokenize_files

        self.gpt_path = packaged_path("gpt")
        self.gpt = load_generative(self.gpt_path)
        tok = self.gpt.tokenizer
        test = self.files["test"]
        table = tokenize_files(tok, self.configs["data"], test, progress=self.cfg.progress)
        path = self.data / "tokens_test.parquet"
        write_parquet(path, {k: table[k] for k in table.fields})
        flat = ak.to_numpy(ak.flatten(table[TOKEN_COLUMN]))
        usage, perplexity = codebook_usage(np.bincount(flat, minlength=tok.codebook_size))
        self.real = reconstruct_jets(tok, self.configs["data"], test, batch_size=256)
        rec = reconstruction_summary(self.real, class_names=["qcd", "top"])
        rec["code_usage_tokens_file"], rec["perplexity_tokens_file"] = usage, perplexity
        rec["codebook_size"] = int(tok.codebook_size)
        lab = self.real["label"]  # class index of the data config: 0 = QCD, 1 = top
        rec["test_jets_tokenized"] = {
            c: {"jets": int((lab == i).sum()), "median_mass_GeV": _median(self.real["reconstructed"]["mass"][lab == i]),
                "median_multiplicity": _median(self.real["reconstructed"]["n"][lab == i])}
            for c, i in (("top", 1), ("qcd", 0))}
        rec["tokenizer"] = {"checkpoint": os.path.basename(self.gpt_path), **self.gpt.config["tokenizer"]}
        self.summary["tokens"] = rec
        c = rec["classes"]
        self.say(f"    {len(table)} test jets, {len(flat)} tokens; codebook usage {usage:.1%} of {tok.codebook_size} "
                 f"(perplexity {perplexity:.0f}); mass resolution (std of m_rec - m): top {c['top']['mass_std_GeV']:.1f} GeV, "
                 f"QCD {c['qcd']['mass_std_GeV']:.1f} GeV")

    # -- 3. generation ------------------------------------------------------------------------------------------
    def generate(self) -> None:
        from ..io.files import write_jets
        from ..io.jetclass import jetclass_arrays
        from ..physics.observables import masked_observables

        cfg = self.cfg
        gen = self.gpt.generate(cfg.gen_jets, batch_size=256, seed=cfg.seed, progress=cfg.progress)
        arrays = jetclass_arrays(gen["pt"], gen["eta_rel"], gen["phi_rel"], gen["mask"], gen["tokens"])
        write_jets(self.data / "generated.root", arrays)
        # the data config keeps only jets labelled top or QCD: a copy with a placeholder label (label_QCD)
        # lets the tagger score the generated jets with weaver --predict (the label itself is not used)
        tagged = dict(arrays, label_QCD=np.ones(len(arrays["jet_pt"]), dtype=np.int32))
        write_jets(self.data / "generated_for_tagging.root", tagged)
        jets, constituents = masked_observables(gen["pt"], gen["eta_rel"], gen["phi_rel"], gen["mask"])
        self.gen = {**jets, "const_pt": constituents["pt"]}
        n = self.gen["n"]
        self.summary["generated"] = {
            "jets": int(cfg.gen_jets), "median_mass_GeV": _median(self.gen["mass"]),
            "median_multiplicity": _median(n), "min_multiplicity": int(n.min()), "max_multiplicity": int(n.max()),
            "stopped_before_128": float((n < 128).mean()), "checkpoint": os.path.basename(self.gpt_path),
            "backbone": {k: self.gpt.config[k] for k in BACKBONE_OPTIONS},
        }
        self.say(f"    {cfg.gen_jets} jets: median mass {self.summary['generated']['median_mass_GeV']:.1f} GeV, "
                 f"median multiplicity {_median(n):.0f} (real tokenized test jets: "
                 f"{_median(self.real['reconstructed']['mass']):.1f} GeV, {_median(self.real['input']['n']):.0f})")
        self._generate_by_class()

    def _generate_by_class(self) -> None:
        """Top and QCD jets generated by class (half of ``gen_jets`` each) with the packaged class-conditional
        generator, their median mass against the tokenized Pythia test jets of that class; skipped, with a line,
        when this install has no such generator."""
        from ..models.generative import load_generative
        from ..models.packaged import packaged_path
        from ..physics.observables import masked_observables

        self.gen_by_class = {}
        try:
            path = packaged_path("gpt_conditional")
        except FileNotFoundError:
            self.say("    no packaged class-conditional generator in this install: jets by class skipped")
            return
        cfg, model = self.cfg, load_generative(path)
        n, lab = max(1, cfg.gen_jets // 2), self.real["label"]  # data config order: 0 = QCD, 1 = top
        by_class = {"checkpoint": os.path.basename(path)}
        for name, cls, index in (("top", "Tbqq", 1), ("qcd", "QCD", 0)):
            gen = model.generate(n, batch_size=256, seed=cfg.seed, classes=[model.class_index(cls)] * n)
            mass = masked_observables(gen["pt"], gen["eta_rel"], gen["phi_rel"], gen["mask"])[0]["mass"]
            self.gen_by_class[name] = mass
            by_class[name] = {"class": cls, "jets": n, "median_mass_GeV": _median(mass),
                              "real_tokenized_median_mass_GeV": _median(self.real["reconstructed"]["mass"][lab == index])}
        self.summary["generated_by_class"] = by_class
        t, q = by_class["top"], by_class["qcd"]
        self.say(f"    by class ({by_class['checkpoint']}): {n} top jets, median mass {t['median_mass_GeV']:.1f} GeV "
                 f"(Pythia, tokenized: {t['real_tokenized_median_mass_GeV']:.1f}); {n} QCD jets, "
                 f"{q['median_mass_GeV']:.1f} GeV ({q['real_tokenized_median_mass_GeV']:.1f})")

    # -- 4. tagging ---------------------------------------------------------------------------------------------
    def tag(self) -> None:
        cfg = self.cfg
        runner = self.runner()
        runs = self.data / "runs"
        n_val = cfg.val_jets * len(PROCESSES)
        val_tiling = validation_tiling(n_val)
        train_jobs = {}
        for n in cfg.labels:
            steps = math.ceil(n / cfg.batch_size)
            for mode in cfg.modes:
                for lr in cfg.lrs:
                    name = f"{mode}_{n}_lr{lr:g}"
                    args = self.train_args(self.label_files[n], self.files["val"],
                                           [*self.mode_options(mode), "-o", "seed", cfg.seed], runs / name / "cls",
                                           batch_size=cfg.batch_size, epochs=cfg.epochs, steps=steps,
                                           val_tiling=val_tiling, lr=lr)
                    cost = training_cost(cfg.epochs, steps, cfg.batch_size, n_val, mode)
                    train_jobs[(mode, n, lr)] = WeaverJob(f"train {MODES[mode][0]}, {n} labels, lr {lr:g}", args,
                                                          self.logs / f"train_{name}.log", cost)
        total = len(train_jobs)
        done = []

        def report(job):
            done.append(job)
            val = validation_metrics(job.history(), as_logged=True)
            self.say(f"    [{len(done)}/{total}] {job.name}: best validation accuracy "
                     f"{max(val) if val else float('nan'):.3f} ({job.seconds:.0f} s)")

        self.say(f"    {total} weaver trainings ({cfg.epochs} epochs each), {runner.concurrent} at a time with "
                 f"{runner.threads} thread(s) each; logs in {self.logs}")
        runner.run(list(train_jobs.values()), on_done=report)
        self.commands += [["weaver", *j.args] for j in train_jobs.values()]

        # per mode and number of labels: the learning rate with the best validation accuracy
        chosen, grid = {}, []
        for (mode, n, lr), job in train_jobs.items():
            # weaver's validation accuracies as its log prints them (5 decimals), as the demo has always compared
            # them: the same learning rate, best epoch and table as before the history files
            val = validation_metrics(job.history(), as_logged=True)
            if len(val) != cfg.epochs:
                raise DemoError(f"weaver ({job.name}) recorded {len(val)} validation epochs instead of {cfg.epochs} "
                                f"in {job.model_prefix}_history.jsonl; see {job.log}")
            best = max(val)
            grid.append({"mode": mode, "labels": n, "lr": lr, "best_val_accuracy": best,
                         "best_epoch": int(np.argmax(val)), "val_accuracy_per_epoch": val, "seconds": job.seconds})
            if (mode, n) not in chosen or best > chosen[(mode, n)][1]:
                chosen[(mode, n)] = (lr, best, job)

        predict_jobs = {}
        for (mode, n), (lr, _, job) in chosen.items():
            prefix = runs / f"{mode}_{n}_lr{lr:g}" / "cls"
            predict_jobs[(mode, n)] = self._predict_job(f"predict {MODES[mode][0]}, {n} labels", mode, prefix,
                                                        self.files["test"], self.data / f"pred_{mode}_{n}.root")
        # the generated jets, tagged by the best fine-tuned tagger with the most labels
        gen_mode = "finetune" if "finetune" in cfg.modes else cfg.modes[0]
        n_max = max(cfg.labels)
        gen_lr = chosen[(gen_mode, n_max)][0]
        predict_jobs["generated"] = self._predict_job(
            f"tag the generated jets ({MODES[gen_mode][0]}, {n_max} labels)", gen_mode,
            runs / f"{gen_mode}_{n_max}_lr{gen_lr:g}" / "cls", [self.data / "generated_for_tagging.root"],
            self.data / "pred_generated.root")
        runner.run(list(predict_jobs.values()))
        self.commands += [["weaver", *j.args] for j in predict_jobs.values()]

        results = []
        self.predictions = {}
        for (mode, n), (lr, best, _) in sorted(chosen.items(), key=lambda kv: (list(MODES).index(kv[0][0]), kv[0][1])):
            pred = read_predictions(self.data / f"pred_{mode}_{n}.root")
            acc = float(((pred["score_top"] > pred["score_qcd"]) == pred["is_top"]).mean())
            auc = roc_auc(pred["is_top"], pred["score_top"])
            self.predictions[(mode, n)] = pred
            results.append({"mode": mode, "mode_label": MODES[mode][0], "labels": n, "lr": lr,
                            "best_val_accuracy": best, "test_jets": int(len(pred["is_top"])), "accuracy": acc,
                            "auc": auc})
            self.say(f"    {MODES[mode][0]:>14}, {n:>5} labels: test accuracy {acc:.3f}, AUC {auc:.3f} (lr {lr:g})")
        gen_pred = read_predictions(self.data / "pred_generated.root")
        self.gen_tag = gen_pred
        self.summary["tagging"] = {"results": results, "lr_grid": grid, "epochs": cfg.epochs,
                                   "batch_size": cfg.batch_size, "validation_jets": n_val,
                                   "generated_tagger": {"mode": gen_mode, "labels": n_max, "lr": gen_lr}}
        self._generated_classes(gen_pred)

    def _predict_job(self, name, mode, prefix, files, output) -> WeaverJob:
        args = self.predict_args(files, self.mode_options(mode), prefix, output)
        log = self.logs / (Path(output).stem.replace("pred_", "predict_") + ".log")
        return WeaverJob(name, args, log, cost=sum(1 for _ in files))

    def _generated_classes(self, pred) -> None:
        """Split the generated jets by the tagger's decision; masses from weaver's observers."""
        e, pt, eta = pred["jet_energy"], pred["jet_pt"], pred["jet_eta"]
        mass = mass_from_pt_eta(e, pt, eta)
        is_top = pred["score_top"] > pred["score_qcd"]
        n = pred["jet_nparticles"]
        self.gen_classes = {"top": {"mass": mass[is_top], "n": n[is_top]}, "qcd": {"mass": mass[~is_top], "n": n[~is_top]}}
        g = self.summary["generated"]
        g["top_tagged_fraction"] = float(is_top.mean()) if len(is_top) else float("nan")
        for c, d in self.gen_classes.items():
            g[f"{c}_tagged"] = {"jets": int(len(d["mass"])), "median_mass_GeV": _median(d["mass"]),
                                "median_multiplicity": _median(d["n"])}

    # -- 5. report ----------------------------------------------------------------------------------------------
    def report(self) -> None:
        self.physics_checks()
        self.make_figures()
        self.summary["config"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self.cfg).items()}
        self.summary["config"]["output"] = str(self.output)
        self.write_commands()

    def physics_checks(self) -> None:
        py, gen = self.pythia, self.summary["generated"]
        top_m, qcd_m = py["top"]["median_mass_GeV"], py["qcd"]["median_mass_GeV"]
        lo, hi = TOP_MASS_WINDOW
        mlo, mhi = MULTIPLICITY_WINDOW
        checks = [
            ("Pythia top jets: median mass in [160, 185] GeV", f"{top_m:.1f} GeV", lo <= top_m <= hi),
            ("Pythia QCD jets lighter than top jets (median)", f"{qcd_m:.1f} < {top_m:.1f} GeV", qcd_m < top_m),
            *[(f"Pythia {name} jets: median multiplicity in [{mlo:.0f}, {mhi:.0f}]",
               f"{py[p]['median_multiplicity']:.0f}", mlo <= py[p]["median_multiplicity"] <= mhi)
              for p, name in (("top", "top"), ("qcd", "QCD"))],
            ("generated jets: 1 to 128 constituents each", f"{gen['min_multiplicity']} to {gen['max_multiplicity']}",
             1 <= gen["min_multiplicity"] and gen["max_multiplicity"] <= 128),
            (f"generated jets: median multiplicity in [{mlo:.0f}, {mhi:.0f}]", f"{gen['median_multiplicity']:.0f}",
             mlo <= gen["median_multiplicity"] <= mhi),
        ]
        bc = self.summary.get("generated_by_class")
        if bc:
            btm, bqm = bc["top"]["median_mass_GeV"], bc["qcd"]["median_mass_GeV"]
            checks += [("jets generated as top: median mass in [160, 185] GeV", f"{btm:.1f} GeV", lo <= btm <= hi),
                       ("jets generated as QCD lighter than as top (median)", f"{bqm:.1f} < {btm:.1f} GeV", bqm < btm)]
        gt, gq = gen.get("top_tagged", {}), gen.get("qcd_tagged", {})
        if gt.get("jets") and gq.get("jets"):
            gtm, gqm = gt["median_mass_GeV"], gq["median_mass_GeV"]
            checks += [("generated top-tagged jets: median mass in [160, 185] GeV", f"{gtm:.1f} GeV", lo <= gtm <= hi),
                       ("generated QCD-tagged jets lighter than top-tagged (median)", f"{gqm:.1f} < {gtm:.1f} GeV",
                        gqm < gtm)]
        self.summary["physics_checks"] = [{"check": c, "value": v, "passed": bool(ok)} for c, v, ok in checks]
        for c, v, ok in checks:
            self.say(f"    {'PASS' if ok else 'FAIL'}  {c}: {v}")

    def make_figures(self) -> None:
        from ..evaluation import plots

        w = self.work
        real_in, real_rec, gen = self.real["input"], self.real["reconstructed"], self.gen
        # reference: the real jets after tokenization, the best a generator of these tokens can do
        def three(key):
            return {"Pythia test jets, tokenized": real_rec[key], "OmniJet-α generated": gen[key],
                    "Pythia test jets": real_in[key]}

        ref = "Pythia test jets, tokenized"
        figs = {
            "jet_mass": plots.hist_ratio(w / "jet_mass", three("mass"), MASS_BINS, reference=ref, xlabel="jet mass [GeV]"),
            "jet_pt": plots.hist_ratio(w / "jet_pt", three("pt"), PT_BINS, reference=ref, xlabel="jet $p_T$ [GeV]"),
            "multiplicity": plots.hist_ratio(w / "multiplicity", three("n"), MULT_BINS, reference=ref,
                                             xlabel="constituents per jet"),
            "constituent_pt": plots.hist_ratio(w / "constituent_pt", three("const_pt"), CONST_PT_BINS, reference=ref,
                                               xlabel="constituent $p_T$ [GeV]", logx=True, logy=True,
                                               ratio_range=(0.0, 3.0)),
        }
        lab = self.real["label"]  # 0 = QCD, 1 = top (data config order)
        figs["jet_mass_by_class"] = plots.hist_ratio(
            w / "jet_mass_by_class",
            {"Pythia top, tokenized": real_rec["mass"][lab == 1],
             "generated, top-tagged": self.gen_classes["top"]["mass"],
             "Pythia QCD, tokenized": real_rec["mass"][lab == 0],
             "generated, QCD-tagged": self.gen_classes["qcd"]["mass"]},
            MASS_BINS, xlabel="jet mass [GeV]", ratio=False, colors=[plots.COLORS[0], plots.COLORS[0],
                                                                       plots.COLORS[2], plots.COLORS[2]],
            linestyles=["-", "--", "-", "--"], title="generated jets split by the tagger")
        if self.gen_by_class:
            figs["jet_mass_generated_by_class"] = plots.hist_ratio(
                w / "jet_mass_generated_by_class",
                {"Pythia top, tokenized": real_rec["mass"][lab == 1], "generated as top": self.gen_by_class["top"],
                 "Pythia QCD, tokenized": real_rec["mass"][lab == 0], "generated as QCD": self.gen_by_class["qcd"]},
                MASS_BINS, xlabel="jet mass [GeV]", ratio=False, colors=[plots.COLORS[0], plots.COLORS[0],
                                                                           plots.COLORS[2], plots.COLORS[2]],
                linestyles=["-", "--", "-", "--"], title="jets generated by class (class-conditional generator)")
        figs["mass_resolution"] = plots.hist_ratio(
            w / "mass_resolution",
            {"top": (real_rec["mass"] - real_in["mass"])[lab == 1], "QCD": (real_rec["mass"] - real_in["mass"])[lab == 0]},
            np.linspace(-40, 40, 41), xlabel=r"$m_\mathrm{tokenized} - m_\mathrm{input}$ [GeV]", ratio=False,
            title="tokenizer: jet-mass resolution (test jets)")
        res = self.summary["tagging"]["results"]
        by_mode = lambda key: {r_mode: {r["labels"]: r[key] for r in res if r["mode_label"] == r_mode}
                               for r_mode in dict.fromkeys(r["mode_label"] for r in res)}
        figs["accuracy_vs_labels"] = plots.metric_vs_labels(w / "accuracy_vs_labels", by_mode("accuracy"),
                                                            ylabel="test accuracy")
        figs["auc_vs_labels"] = plots.metric_vs_labels(w / "auc_vs_labels", by_mode("auc"), ylabel="test ROC AUC")
        figs["roc"] = plots.roc_curves(w / "roc", {f"{MODES[m][0]}, {n} labels": (p["is_top"], p["score_top"])
                                                   for (m, n), p in self.predictions.items()})
        self.figures = {k: [p.name for p in v] for k, v in figs.items()}
        self.summary["figures"] = self.figures



def summary_markdown(s: dict) -> str:
    """The report's ``summary.md`` from the summary as written to summary.json (nothing else: every number shown
    is one of the JSON; a missing one, null, is shown as "–")."""
    cfg = s.get("config", {})
    jets, tok, gen, tag = s["jets"], s["tokens"], s["generated"], s["tagging"]

    def pair(key, a, b, digits, unit=""):
        return f"{fmt(a[key], digits)} / {fmt(b[key], digits)}{unit}"

    L = ["# OmniJet-α demo report", "",
         f"{'Quick run (tiny sizes, for tests): numbers are not meaningful. ' if cfg.get('quick') else ''}"
         f"Pythia8 jets: {jets['top']['jets']} top + {jets['qcd']['jets']} QCD (seed {cfg.get('seed')}); packaged "
         f"generative model `{gen['checkpoint']}` (tokenizer: {tok['codebook_size']} codes; backbone: "
         + ", ".join(f"{k} {v}" for k, v in gen["backbone"].items()) + ").", ""]
    key = [["codebook usage (test jets)", f"{fmt(100 * tok['code_usage'], 1)}% of {tok['codebook_size']} codes, "
                                          f"perplexity {fmt(tok['perplexity'], 0)}"]]
    for c, name in (("top", "top"), ("qcd", "QCD")):
        d = tok["classes"][c]
        key.append([f"jet-mass resolution, {name} (std / 68% half-width / bias of m_tok − m)",
                    f"{fmt(d['mass_std_GeV'], 1)} / {fmt(d['mass_iqr68_GeV'], 1)} / "
                    f"{pm(d['mass_bias_GeV'], None, 1, sign=True)} GeV"])
    key += [["median jet mass, Pythia top / QCD (all jets)", pair("median_mass_GeV", jets["top"], jets["qcd"], 1, " GeV")],
            ["median multiplicity, Pythia top / QCD (all jets)",
             pair("median_multiplicity", jets["top"], jets["qcd"], 0)]]
    tt = tok.get("test_jets_tokenized")
    if tt:
        key += [["Pythia test jets, tokenized: median mass top / QCD",
                 pair("median_mass_GeV", tt["top"], tt["qcd"], 1, " GeV")],
                ["Pythia test jets, tokenized: median multiplicity top / QCD",
                 pair("median_multiplicity", tt["top"], tt["qcd"], 0)]]
    key.append([f"generated jets: median mass / multiplicity (all {gen['jets']})",
                f"{fmt(gen['median_mass_GeV'], 1)} GeV / {fmt(gen['median_multiplicity'], 0)}"])
    gt, gq = gen.get("top_tagged", {}), gen.get("qcd_tagged", {})
    if gt:
        key += [[f"generated top-tagged ({gt['jets']}) / QCD-tagged ({gq['jets']}): median mass",
                 pair("median_mass_GeV", gt, gq, 1, " GeV")],
                ["generated top-tagged / QCD-tagged: median multiplicity", pair("median_multiplicity", gt, gq, 0)]]
    bc = s.get("generated_by_class")
    if bc:
        key.append([f"generated by class (`{bc['checkpoint']}`), top / QCD: median mass (Pythia, tokenized)",
                    f"{fmt(bc['top']['median_mass_GeV'], 1)} ({fmt(bc['top']['real_tokenized_median_mass_GeV'], 1)}) / "
                    f"{fmt(bc['qcd']['median_mass_GeV'], 1)} ({fmt(bc['qcd']['real_tokenized_median_mass_GeV'], 1)}) GeV"])
    L += ["## Key figures", "", markdown_table(["figure", "value"], key)]
    L += ["## Tagging: fine-tuned vs from scratch", "",
          f"Test set: {tag['results'][0]['test_jets'] if tag['results'] else 0} jets (half top, half QCD). Each run: "
          f"{tag['epochs']} epochs, batch size {tag['batch_size']}, AdamW, learning rates "
          f"{', '.join(f'{lr:g}' for lr in cfg.get('lrs', []))} (same grid for every mode; the one with the best "
          f"validation accuracy on {tag['validation_jets']} jets is kept, at weaver's best epoch).", "",
          markdown_table(["mode", "labels", "accuracy", "AUC", "learning rate", "validation accuracy"],
                         [[r["mode_label"], r["labels"], fmt(r["accuracy"], 4), fmt(r["auc"], 4), f"{r['lr']:g}",
                           fmt(r["best_val_accuracy"], 4)] for r in tag["results"]]),
          "<details><summary>all runs (learning-rate grid)</summary>", "",
          markdown_table(["mode", "labels", "learning rate", "best validation accuracy", "best epoch", "seconds"],
                         [[MODES[g["mode"]][0], g["labels"], f"{g['lr']:g}", fmt(g["best_val_accuracy"], 4),
                           g["best_epoch"], f"{g['seconds']:.0f}"] for g in tag["lr_grid"]]),
          "</details>", "", "## Physics checks", "",
          markdown_table(["check", "value", "result"],
                         [[c["check"], c["value"], "PASS" if c["passed"] else "FAIL"]
                          for c in s.get("physics_checks", [])]),
          "## Wall time", "",
          markdown_table(["stage", "seconds"], [*([k, f"{v:.1f}"] for k, v in s["stage_seconds"].items()),
                                                ["**total**", f"{s['total_seconds']:.1f}"]]),
          "## Figures", ""]
    captions = {
        "jet_mass": "jet mass: generated vs real test jets (ratio to the tokenized real jets)",
        "jet_pt": "jet pT", "multiplicity": "constituents per jet", "constituent_pt": "constituent pT",
        "jet_mass_by_class": "jet mass per class (generated jets split by the fine-tuned tagger)",
        "jet_mass_generated_by_class": "jet mass of top and QCD jets generated by class, against Pythia's",
        "mass_resolution": "tokenizer jet-mass resolution", "accuracy_vs_labels": "test accuracy vs labels",
        "auc_vs_labels": "test ROC AUC vs labels", "roc": "ROC curves",
    }
    for k, files in s.get("figures", {}).items():
        png = next((f for f in files if f.endswith(".png")), files[0])
        L.append(f"### {captions.get(k, k)}\n\n![{k}]({png})\n")
    L += ["Commands: `commands.sh`; weaver logs: `logs/`; all numbers: `summary.json`.", ""]
    return "\n".join(L)


def run_demo(config: DemoConfig, out=None) -> dict:
    """Run the demo; returns the summary (also written to ``<output>/summary.json``)."""
    return Demo(config, out=out).run()


__all__ = ["DemoConfig", "Demo", "DemoError", "OutputExistsError", "quick_config", "run_demo", "check_output",
           "repo_configs", "roc_auc", "summary_markdown", "MODES", "MARKER"]
