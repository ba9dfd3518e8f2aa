"""Token quality of several tokenizers on the same jets, in one report (paper section III A, Figs. 3-5).

    omnijet-weaver-token-quality --output tq/ --tokenizer packaged --tokenizer binned:21 \
        --tokenizer cond512=out/vqvae512.pt top_test.root qcd_test.root

For every tokenizer the jets are encoded and decoded and compared with the originals:

* codebook usage and perplexity;
* per class, the resolution (Gaussian fit: mean and sigma; also std and 16-84 % half-width) of the
  differences reconstructed - original of jet mass, jet pT [GeV], tau21 and tau32;
* distributions of the jet observables (original vs reconstructed, ratio panels) and of the differences;
* the information-loss test: multi-class classifiers (DeepSets, and a transformer) trained once
  on the original and once on the reconstructed constituents, with the same split and seeds; test accuracy;
* the token-spread picture: chosen tokens decoded many times among random other tokens, in eta_rel-phi_rel.

Writes ``summary.md`` (tables), ``summary.json`` and PNG + PDF figures to ``--output``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

from ..constants import ANGLE_CUT, ETA_PHI_SCALE
from ..evaluation.reconstruction import RESOLUTION_OBSERVABLES, load_jets, reconstruct, resolutions, token_spread
from ..evaluation.report import ReportFolder, figure_lines, fmt, markdown_table, mean_std, pm, write_json, write_text
from ..models.quantizer import codebook_usage
from .base import JetStudyConfig

MARKER = ".omnijet-weaver-token-quality"
#: Axis labels and histogram ranges of the jet observables.
LABELS = {"mass": "jet mass [GeV]", "pt": r"jet $p_T$ [GeV]", "tau21": r"$\tau_{21}$", "tau32": r"$\tau_{32}$",
          "n": "constituents"}
BINS = {"mass": np.linspace(0, 300, 41), "pt": np.linspace(400, 1100, 36), "tau21": np.linspace(0, 1.2, 41),
        "tau32": np.linspace(0, 1.2, 41)}
#: Ranges of the difference histograms (reconstructed - original).
DIFF_RANGE = {"mass": 60.0, "pt": 80.0, "tau21": 0.4, "tau32": 0.4}
UNITS = {"mass": "GeV", "pt": "GeV", "tau21": "", "tau32": ""}
#: Classifier sizes of the information-loss test (paper appendix A 2: DeepSets per-particle MLP 100, 100, 256;
#: the transformer keeps the CPU-sized defaults of :class:`~omnijet_weaver.evaluation.classifiers.TransformerClassifier`).
CLASSIFIER_OPTIONS = {"deepsets": {"phi_dims": (100, 100, 256)}}


@dataclasses.dataclass(kw_only=True)
class TokenQualityConfig(JetStudyConfig):
    """Settings of one comparison (see ``omnijet-weaver-token-quality --help``; shared ones: :class:`JetStudyConfig`)."""

    tokenizers: list = ("packaged", "binned:21")
    max_jets: int | None = 10000
    classifiers: tuple = ("deepsets", "transformer")
    seeds: tuple = (0,)
    classifier_batch_size: int = 256
    spread_tokens: int = 12
    spread_repeats: int = 500
    spread_context: int = 50
    batch_size: int = 512

    def check(self) -> None:
        from ..evaluation.classifiers import MODELS

        if not self.tokenizers:
            raise ValueError("give at least one --tokenizer")
        unknown = [c for c in self.classifiers if c not in MODELS]
        if unknown:
            raise ValueError(f"unknown classifier(s) {unknown}: choose from {', '.join(MODELS)}")
        if self.max_jets is not None and self.max_jets < 10:
            raise ValueError(f"--max-jets must be at least 10, got {self.max_jets}")
        if self.epochs < 1 or self.patience < 1 or self.spread_repeats < 1 or self.spread_tokens < 0:
            raise ValueError("--epochs, --patience and --spread-repeats must be at least 1, --spread-tokens at least 0")
        if not self.seeds and self.classifiers:
            raise ValueError("give at least one --seed for the classifiers")
        self.check_figures()


def default_data_config() -> str:
    """The shipped ``qg_top.yaml`` data config (:func:`omnijet_weaver.weaver.configs.data_config`)."""
    from ..weaver.configs import data_config

    return str(data_config("qg_top"))


def load_tokenizer_spec(spec: str):
    """``[NAME=]WHAT`` -> (name, tokenizer). WHAT is ``packaged`` (the packaged tokenizer), ``binned:N``
    (an N x N x N grid), or a checkpoint path: a tokenizer, or a generative model (its tokenizer is used)."""
    from ..models.checkpoint import load_model
    from ..models.generative import OmniJetGPT
    from ..models.packaged import packaged_path
    from ..models.tokenizer import TOKENIZER_KINDS, BinnedTokenizer, load_tokenizer

    name, sep, what = spec.partition("=")
    if not sep:
        name, what = "", spec
    if what == "packaged":
        tok = load_tokenizer(packaged_path("tokenizer"))
    elif what.startswith("binned:"):
        try:
            bins = int(what.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"--tokenizer {spec!r}: binned:N needs an integer N (e.g. binned:21)") from None
        if bins < 1:
            raise ValueError(f"--tokenizer {spec!r}: the grid needs at least 1 bin per feature")
        tok = BinnedTokenizer(bins)
    else:
        if not os.path.isfile(what):
            raise FileNotFoundError(f"--tokenizer {spec!r}: no such checkpoint file {what!r} (or use packaged, binned:N)")
        model = load_model(what, kinds=(*TOKENIZER_KINDS, OmniJetGPT.kind))
        tok = model.tokenizer if isinstance(model, OmniJetGPT) else model
    if not name and what == "packaged":
        name = f"{tokenizer_label(tok)} (packaged)"
    elif not name:
        name = tokenizer_label(tok) if what.startswith("binned:") else Path(what).stem
    return name, tok


def tokenizer_label(tok) -> str:
    """A short description: ``binned 21^3``, ``conditional 2048``, ``unconditional 512``."""
    if tok.kind == "binned":
        return f"binned {tok.bins}^3"
    return f"{'conditional' if tok.config.get('conditional', True) else 'unconditional'} {tok.codebook_size}"


class TokenQuality:
    """One comparison run; ``run()`` returns the summary (also written as summary.json)."""

    def __init__(self, config: TokenQualityConfig, out=None):
        config.check()
        self.cfg = config
        self.out = out
        self.data_config = config.data_config or default_data_config()
        self.tokenizers = {}
        for spec in config.tokenizers:
            name, tok = load_tokenizer_spec(spec)
            if name in self.tokenizers:
                raise ValueError(f"two tokenizers are called {name!r}: name them, e.g. --tokenizer mine={spec}")
            self.tokenizers[name] = tok
        from ..weaver.dataset import check_jet_files

        self.files = check_jet_files(config.files, self.data_config)[0]  # files, data config, selection
        if config.figures:
            from ..evaluation.plots import require_matplotlib

            require_matplotlib()

    def say(self, message: str) -> None:
        print(message, file=self.out or sys.stdout, flush=True)

    def run(self) -> dict:
        cfg = self.cfg
        t0 = time.perf_counter()
        with ReportFolder(cfg.output, MARKER, overwrite=cfg.overwrite) as work:
            sample = load_jets(self.data_config, self.files, max_jets=cfg.max_jets, batch_size=cfg.batch_size,
                               seed=cfg.seed)  # a mix of the files, in proportion to their entries, shuffled
            names = sample.class_names or [f"class_{i}" for i in range(int(sample.label.max()) + 1)]
            present = [names[i] for i in np.unique(sample.label)]
            self.say(f"{len(sample)} jets ({', '.join(f'{c}: {(sample.label == names.index(c)).sum()}' for c in present)})")
            original = sample.observables()[0]
            summary = {"jets": len(sample), "classes": present, "files": [str(f) for f in self.files],
                       "data_config": str(self.data_config), "tokenizers": {}}
            recs = {}
            for name, tok in self.tokenizers.items():
                start = time.perf_counter()
                rec, counts = reconstruct(tok, sample, batch_size=cfg.batch_size, device=cfg.device)
                usage, perplexity = codebook_usage(counts)
                res = resolutions(original, rec.observables()[0], sample.label, names)
                recs[name] = (rec, counts)
                summary["tokenizers"][name] = {"kind": tok.kind, "label": tokenizer_label(tok),
                                               "codebook_size": int(tok.codebook_size), "code_usage": usage,
                                               "perplexity": perplexity, "resolutions": res,
                                               "seconds": time.perf_counter() - start}
                m = res["all"]["mass"]
                self.say(f"{name}: usage {usage:.1%} of {tok.codebook_size}, perplexity {perplexity:.0f}; mass "
                         f"resolution (all jets) sigma {m['sigma']:.2f} GeV, mean {m['mean']:+.2f} GeV")
            if cfg.classifiers:
                summary["information_loss"] = self.information_loss(sample, recs)
            figures = self.figures(work, sample, recs, names) if cfg.figures else {}
            if cfg.spread_tokens and cfg.figures:
                figures["token_spread"] = self.spread_figure(work, recs)
            summary["figures"] = figures
            summary["seconds"] = time.perf_counter() - t0
            summary["config"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}
            write_json(work / "summary.json", summary)
            write_text(work / "summary.md", summary_markdown(summary))
        self.say(f"done in {time.perf_counter() - t0:.1f} s: {Path(cfg.output) / 'summary.md'}")
        return summary

    # -- information loss ----------------------------------------------------------------------------------------
    def information_loss(self, sample, recs) -> dict:
        """Per classifier: test accuracy and AUC, mean and sample std over seeds
        (:func:`~omnijet_weaver.evaluation.report.mean_std`), on the original constituents and each reconstruction."""
        from ..evaluation.classifiers import split_indices, train_classifier

        cfg = self.cfg
        n_classes = len(sample.class_names) if sample.class_names else int(sample.label.max()) + 1
        inputs = {"original": sample, **{name: rec for name, (rec, _) in recs.items()}}
        out = {}
        for model in cfg.classifiers:
            runs = {name: [] for name in inputs}
            for seed in cfg.seeds:
                idx = split_indices(len(sample), seed=seed)
                for name, s in inputs.items():
                    start = time.perf_counter()
                    r = train_classifier(s.features, s.mask, sample.label, model=model, num_classes=n_classes,
                                         seed=seed, indices=idx, max_epochs=cfg.epochs, patience=cfg.patience,
                                         batch_size=cfg.classifier_batch_size, device=cfg.device,
                                         model_kwargs=CLASSIFIER_OPTIONS.get(model))
                    runs[name].append({"seed": seed, **r.as_dict(), "seconds": time.perf_counter() - start})
                    self.say(f"  {model} on {name}, seed {seed}: test accuracy {r.accuracy:.4f}, AUC {r.auc:.4f} "
                             f"(best epoch {r.best_epoch} of {r.epochs_run})")
            out[model] = {}
            for name, v in runs.items():
                acc, acc_std = mean_std([x["accuracy"] for x in v])
                auc, auc_std = mean_std([x["auc"] for x in v])
                out[model][name] = {"accuracy_mean": acc, "accuracy_std": acc_std, "auc_mean": auc, "auc_std": auc_std,
                                    "runs": v}
        return out

    # -- figures -------------------------------------------------------------------------------------------------
    def figures(self, work: Path, sample, recs, names) -> dict:
        from ..evaluation import plots
        from ..evaluation.reconstruction import class_groups

        figs = {}
        original = sample.observables()[0]
        for obs in RESOLUTION_OBSERVABLES:
            samples = {"original": original[obs], **{n: r.observables()[0][obs] for n, (r, _) in recs.items()}}
            figs[f"{obs}"] = [p.name for p in plots.hist_ratio(work / f"{obs}", samples, BINS[obs], reference="original",
                                                               xlabel=LABELS[obs], title="all jets",
                                                               formats=self.cfg.figures)]
            for cls, sel in class_groups(sample.label, names).items():
                diffs = {n: r.observables()[0][obs][sel] - original[obs][sel] for n, (r, _) in recs.items()}
                w = DIFF_RANGE[obs]
                unit = f" [{UNITS[obs]}]" if UNITS[obs] else ""
                label = LABELS[obs].split(" [")[0]
                figs[f"{obs}_diff_{cls}"] = [p.name for p in plots.hist_ratio(
                    work / f"{obs}_diff_{cls}", diffs, np.linspace(-w, w, 41), ratio=False,
                    xlabel=f"{label} reconstructed $-$ original{unit}", title=f"{cls} jets",
                    formats=self.cfg.figures)]
        return figs

    def spread_figure(self, work: Path, recs) -> list:
        """Token spread (paper Fig. 3): per tokenizer, chosen tokens (frequent in these jets) decoded among
        random other tokens, in eta_rel-phi_rel, coloured by token."""
        from ..evaluation.plots import COLORS, new_figure, save_figure, style

        cfg = self.cfg
        rng = np.random.default_rng(cfg.seed)
        spreads = {}
        for name, (_, counts) in recs.items():
            tok = self.tokenizers[name]
            used = np.flatnonzero(counts > 0)
            chosen = rng.choice(used, size=min(cfg.spread_tokens, len(used)), replace=False, p=counts[used] / counts[used].sum())
            every = token_spread(tok, used, repeats=1, context=cfg.spread_context, seed=cfg.seed, device=cfg.device)
            spreads[name] = (every[:, 0], token_spread(tok, chosen, repeats=cfg.spread_repeats, context=cfg.spread_context,
                                                       seed=cfg.seed, device=cfg.device))
        with style():
            ncol = len(spreads)
            fig, axes = new_figure(1, figsize=(6 * ncol, 6), sharex=False, ncols=ncol)
            for ax, (name, (every, spread)) in zip(axes, spreads.items()):
                # features (ETA_PHI_SCALE eta_rel, ETA_PHI_SCALE phi_rel, ...) -> the angles themselves
                ax.scatter(every[:, 1] / ETA_PHI_SCALE, every[:, 0] / ETA_PHI_SCALE, s=2, color="0.8",
                           label="each used token once", rasterized=True)
                for i, pts in enumerate(spread):
                    ax.scatter(pts[:, 1] / ETA_PHI_SCALE, pts[:, 0] / ETA_PHI_SCALE, s=3, alpha=0.5,
                               color=COLORS[i % len(COLORS)], rasterized=True)
                ax.set_xlim(-ANGLE_CUT, ANGLE_CUT)
                ax.set_ylim(-ANGLE_CUT, ANGLE_CUT)
                ax.set_xlabel(r"$\phi^{rel}$")
                ax.set_title(name, fontsize="medium")
            axes[0].set_ylabel(r"$\eta^{rel}$")
            fig.subplots_adjust(wspace=0.3)
            return [p.name for p in save_figure(fig, work / "token_spread", cfg.figures)]


def _resolution_cell(r: dict, digits: int) -> str:
    return f"{fmt(r['sigma'], digits)} ({fmt(r['mean'], digits)})" if r else "–"


def summary_markdown(s: dict) -> str:
    """The report's summary.md."""
    lines = [f"# Token quality: {len(s['tokenizers'])} tokenizer(s) on {s['jets']} jets", "",
             f"Files: {', '.join(s['files'])}; classes: {', '.join(s['classes'])}.", "",
             "## Codebook", ""]
    lines.append(markdown_table(
        ["tokenizer", "codebook size", "used", "perplexity"],
        [[n, t["codebook_size"], f"{t['code_usage']:.1%}", fmt(t["perplexity"], 0)] for n, t in s["tokenizers"].items()]))
    lines += ["## Resolution", "",
              "Gaussian-fit sigma (and mean) of reconstructed − original; mass and pT in GeV.", ""]
    groups = ["all", *s["classes"]]
    for obs, digits in (("mass", 2), ("pt", 1), ("tau21", 3), ("tau32", 3)):
        lines += [f"### {LABELS[obs]}", ""]
        lines.append(markdown_table(["tokenizer", *groups],
                                    [[n, *(_resolution_cell(t["resolutions"].get(g, {}).get(obs), digits) for g in groups)]
                                     for n, t in s["tokenizers"].items()]))
    if s.get("information_loss"):
        lines += ["## Information loss", "",
                  "Test accuracy (AUC) of multi-class classifiers trained on each version of the same jets "
                  "(same split; mean ± sample std over seeds).", ""]
        models = list(s["information_loss"])
        rows = []
        for name in s["information_loss"][models[0]]:
            rows.append([name, *(f"{pm(d['accuracy_mean'], d['accuracy_std'], 4)} ({fmt(d['auc_mean'], 4)})"
                                 for d in (s["information_loss"][m][name] for m in models))])
        lines.append(markdown_table(["constituents", *models], rows))
    lines += figure_lines(s.get("figures", {}))
    lines += ["", f"Run time {s['seconds']:.1f} s.", ""]
    return "\n".join(lines)


def run_token_quality(config: TokenQualityConfig, out=None) -> dict:
    """Run one comparison (see the module docstring); returns the summary."""
    return TokenQuality(config, out).run()


__all__ = ["TokenQualityConfig", "TokenQuality", "run_token_quality", "load_tokenizer_spec", "summary_markdown"]
