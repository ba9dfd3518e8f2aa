"""Generation fidelity: generated jets against real jets tokenized and reconstructed with the generator's own
tokenizer (what a perfect generator would produce), paper section III B and appendix A 5.

    omnijet-weaver-gen-fidelity --output gf/ --num-jets 10000 top_test.root qcd_test.root   # packaged model

* 1-Wasserstein distances of the jet observables (mass, pT, multiplicity, tau21, tau32) and of the
  constituent observables (pT, eta_rel, phi_rel), next to the same distance between two halves of the real
  sample (the statistical floor at this sample size);
* the classifier test: DeepSets with a per-particle MLP of width 10 trained to tell generated from
  reconstructed real jets (equal numbers, train/val/test 0.6/0.2/0.2, best epoch on the validation loss);
  the AUC on the test part (0.5: indistinguishable);
* histograms with ratio panels (real, real reconstructed, generated), PNG + PDF; summary.md, summary.json.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import wasserstein_distance

from ..evaluation.reconstruction import JetSample, load_jets, reconstruct
from ..evaluation.report import ReportFolder, figure_lines, fmt, markdown_table, write_json, write_text
from ..models.features import to_features
from .base import JetStudyConfig

MARKER = ".omnijet-weaver-gen-fidelity"
JET_KEYS = ("mass", "pt", "n", "tau21", "tau32")
CONSTITUENT_KEYS = ("pt", "eta", "phi")
LABELS = {"mass": "jet mass [GeV]", "pt": r"jet $p_T$ [GeV]", "n": "constituents", "tau21": r"$\tau_{21}$",
          "tau32": r"$\tau_{32}$", "const_pt": r"constituent $p_T$ [GeV]", "const_eta": r"constituent $\eta^{rel}$",
          "const_phi": r"constituent $\phi^{rel}$"}
BINS = {"mass": np.linspace(0, 300, 41), "pt": np.linspace(300, 1200, 37), "n": np.arange(0, 132, 4),
        "tau21": np.linspace(0, 1.2, 41), "tau32": np.linspace(0, 1.2, 41), "const_pt": np.geomspace(0.1, 1000, 41),
        "const_eta": np.linspace(-0.8, 0.8, 41), "const_phi": np.linspace(-0.8, 0.8, 41)}


def wasserstein_1d(a, b) -> float:
    """1-Wasserstein distance (``scipy.stats.wasserstein_distance``, the integral of |F_a - F_b|) between the
    empirical distributions of the 1-d samples ``a`` and ``b``, in their unit; NaN if either is empty."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    return float(wasserstein_distance(a, b))


def generated_sample(model, num_jets: int, batch_size: int = 256, temperature: float = 1.0, top_k=None,
                     seed: int = 0, device="cpu", progress: bool = False, class_index=None,
                     guidance=None) -> JetSample:
    """``num_jets`` jets from a generative model, decoded, as a :class:`JetSample` (no labels); ``class_index``:
    all of that class, or one class per jet (``num_jets`` indices; a conditional model,
    :meth:`~omnijet_weaver.models.generative.OmniJetGPT.class_index`); ``guidance``: its classifier-free
    guidance scale (with ``class_index``)."""
    classes = None if class_index is None else (
        [class_index] * num_jets if np.ndim(class_index) == 0 else list(class_index))
    jets = model.generate(num_jets, batch_size=batch_size, temperature=temperature, top_k=top_k, seed=seed,
                          device=device, progress=progress, classes=classes, guidance=guidance)
    mask = jets["mask"]
    pt = torch.where(mask, jets["pt"], torch.ones_like(jets["pt"]))  # padding: any finite pT, zeroed below
    x = to_features(pt.double(), jets["eta_rel"].double(), jets["phi_rel"].double()) * mask.unsqueeze(-1)
    n = model.tokenizer.transform.max_particles
    feats = np.zeros((num_jets, n, x.shape[-1]), dtype=np.float32)
    full_mask = np.zeros((num_jets, n), dtype=bool)
    feats[:, : x.shape[1]] = x.float().numpy()
    full_mask[:, : x.shape[1]] = mask.numpy()
    return JetSample(feats, full_mask)


def distances(a: JetSample, b: JetSample) -> dict:
    """W1 distances between two samples: jet observables (``mass``, ``pt``, ``n``, ``tau21``, ``tau32``) and
    constituent ones (``const_pt``, ``const_eta``, ``const_phi``)."""
    (ja, ca), (jb, cb) = a.observables(), b.observables()
    out = {k: wasserstein_1d(ja[k], jb[k]) for k in JET_KEYS}
    out.update({f"const_{k}": wasserstein_1d(ca[k], cb[k]) for k in CONSTITUENT_KEYS})
    return out


@dataclasses.dataclass(kw_only=True)
class GenFidelityConfig(JetStudyConfig):
    """Settings of one evaluation (see ``omnijet-weaver-gen-fidelity --help``; shared ones: :class:`JetStudyConfig`)."""

    checkpoint: str | None = None
    num_jets: int = 10000
    max_real_jets: int | None = None
    temperature: float = 1.0
    top_k: int | None = None
    guidance: float | None = None  # classifier-free guidance scale with classes (None: the checkpoint's own)
    epochs: int = 100
    patience: int = 10
    width: int = 10
    progress: bool = True
    classes: list | None = None  # class names of a conditional model (["all"]: every class), None: unconditional
    tagger: str | None = None  # closure test: weights of a weaver classifier trained on real jets
    tagger_network_config: str | None = None
    tagger_data_config: str | None = None
    tagger_options: list = dataclasses.field(default_factory=list)  # [[name, value], ...] as weaver -o

    def check(self) -> None:
        if self.num_jets < 10:
            raise ValueError(f"--num-jets must be at least 10, got {self.num_jets}")
        if self.epochs < 1 or self.patience < 1 or self.width < 1:
            raise ValueError("--epochs, --patience and --width must be at least 1")
        if self.classes is not None and (not self.classes or len(set(self.classes)) != len(self.classes)):
            raise ValueError(f"--class needs distinct class names, got {self.classes}")
        if self.guidance is not None and self.classes is None:
            raise ValueError("--guidance applies to jets generated by class: give --class")
        if self.tagger is None and (self.tagger_network_config or self.tagger_data_config or self.tagger_options):
            raise ValueError("--tagger-network-config, --tagger-data-config and --tagger-option need --tagger")
        self.check_figures()


def compare(real: JetSample, real_rec: JetSample, gen: JetSample, cfg: GenFidelityConfig, work: Path,
            sub: str = "") -> dict:
    """Everything the report says about one generated sample against its real jets: W1 distances (generated vs
    reconstructed, the floor of two real halves, tokenization alone), the classifier test, medians and the
    histograms (written into the report folder ``work``, or its subfolder ``sub``; names relative to ``work``)."""
    from ..evaluation.classifiers import classifier_test
    from ..evaluation.plots import hist_ratio

    w1 = distances(gen, real_rec)
    half = np.random.default_rng(cfg.seed).permutation(len(real_rec))  # the halves reuse real_rec's observables
    floor = distances(real_rec.take(half[: len(half) // 2]), real_rec.take(half[len(half) // 2:]))
    w1_orig = distances(real_rec, real)
    n = min(len(gen), len(real_rec))
    test = classifier_test(real_rec.features[:n], real_rec.mask[:n], gen.features[:n], gen.mask[:n],
                           model="deepsets", width=cfg.width, seed=cfg.seed, max_epochs=cfg.epochs,
                           patience=cfg.patience, device=cfg.device)
    figures = {}
    samples = {"real": real, "real reconstructed": real_rec, "generated": gen}
    jets = {k: s.observables() for k, s in samples.items()}
    folder = work / sub
    if cfg.figures:
        folder.mkdir(parents=True, exist_ok=True)
    for key in JET_KEYS if cfg.figures else ():
        figures[key] = [str(p.relative_to(work)) for p in hist_ratio(
            folder / key, {k: v[0][key] for k, v in jets.items()}, BINS[key], reference="real reconstructed",
            xlabel=LABELS[key], formats=cfg.figures)]
    for key in CONSTITUENT_KEYS if cfg.figures else ():
        name = f"const_{key}"
        figures[name] = [str(p.relative_to(work)) for p in hist_ratio(
            folder / name, {k: v[1][key] for k, v in jets.items()}, BINS[name], reference="real reconstructed",
            xlabel=LABELS[name], logx=key == "pt", logy=key == "pt", formats=cfg.figures)]
    medians = {k: {o: float(np.median(v[0][o])) for o in ("mass", "n")} for k, v in jets.items()}
    return {"real_jets": len(real), "generated_jets": len(gen), "w1_generated_vs_reconstructed": w1,
            "w1_real_halves": floor, "w1_reconstructed_vs_original": w1_orig, "medians": medians,
            "classifier_test": {"jets_per_sample": n, "width": cfg.width, **test.as_dict()}, "figures": figures}


#: Per-class figures go into ``class_<name>/`` of the report.
CLASS_FOLDER = "class_"


def run_gen_fidelity(cfg: GenFidelityConfig, out=None) -> dict:
    """Run one evaluation (see the module docstring); returns the summary (also summary.json). Progress lines go
    to ``out`` (default: ``sys.stdout`` at the time of the call)."""
    from ..evaluation.closure import TaggerSpec, closure_test, tagger_classes
    from ..evaluation.plots import require_matplotlib
    from ..evaluation.reconstruction import data_config_classes
    from ..models.generative import load_generative
    from ..models.packaged import default_generator
    from ..weaver.dataset import check_jet_files
    from .token_quality import default_data_config

    cfg.check()
    if cfg.figures:
        require_matplotlib()
    t0 = time.perf_counter()
    say = lambda m: print(m, file=out or sys.stdout, flush=True)  # noqa: E731
    data_config = cfg.data_config or default_data_config()
    files = check_jet_files(cfg.files, data_config)[0]  # files, data config, selection: before any work
    checkpoint = cfg.checkpoint or default_generator(by_class=cfg.classes is not None)
    model = load_generative(checkpoint)
    # before any work: the classes (the model's and the data config's), the tagger
    classes = None
    if cfg.classes is not None:
        names = list(model.classes) if list(cfg.classes) == ["all"] and model.conditional else cfg.classes
        classes = [model.classes[model.class_index(c)] for c in names]
        label_index = dict(zip(classes, data_config_classes(data_config, classes)))  # the data config's index
    tagger = None
    if cfg.tagger is not None:
        tagger = TaggerSpec(cfg.tagger, cfg.tagger_network_config, cfg.tagger_data_config,
                            tuple(tuple(o) for o in cfg.tagger_options)).resolved(data_config)
        known = tagger_classes(tagger)
        if classes is None:
            raise ValueError("the closure test (--tagger) needs generated jets of known classes: give --class "
                             "(a class-conditional generator)")
        if not set(known) & set(classes):
            raise ValueError(f"the tagger's classes ({', '.join(known)}) include none of --class "
                             f"{' '.join(classes)}")
    per_class = cfg.max_real_jets or cfg.num_jets
    with ReportFolder(cfg.output, MARKER, overwrite=cfg.overwrite) as work:
        real = load_jets(data_config, files, max_jets=per_class, batch_size=cfg.batch_size, seed=cfg.seed,
                         classes=classes)  # a mix of the files, in proportion to their entries, shuffled
        real_rec, _ = reconstruct(model.tokenizer, real, device=cfg.device)
        counts = ", ".join(f"{k} {v}" for k, v in real.class_counts().items())
        say(f"{len(real)} real jets ({counts}) read through {data_config} and reconstructed with the generator's "
            "tokenizer (only the classes that data config selects)")
        start = time.perf_counter()
        index = None if classes is None else np.repeat([model.class_index(c) for c in classes], cfg.num_jets)
        guidance = None if classes is None else (cfg.guidance if cfg.guidance is not None else model.guidance)
        gen = generated_sample(model, cfg.num_jets * (1 if classes is None else len(classes)),
                               batch_size=cfg.batch_size, temperature=cfg.temperature, top_k=cfg.top_k, seed=cfg.seed,
                               device=cfg.device, progress=cfg.progress, class_index=index, guidance=guidance)
        gen_seconds = time.perf_counter() - start
        say(f"{len(gen)} jets generated in {gen_seconds:.1f} s")
        summary = {"checkpoint": str(checkpoint), "generator": model.config, "files": [str(f) for f in files],
                   "classes": classes, "guidance": guidance, "real_jets": len(real), "generated_jets": len(gen),
                   "generation_seconds": gen_seconds}
        if classes is None:
            summary.update(compare(real, real_rec, gen, cfg, work))
            say(f"classifier test (DeepSets, width {cfg.width}): AUC {summary['classifier_test']['auc']:.4f}")
        else:
            by_class = {"real": {}, "real reconstructed": {}, "generated": {}}
            summary["per_class"] = {}
            for i, c in enumerate(classes):
                rows = real.label == label_index[c]
                if not rows.any():
                    raise ValueError(f"no real jet of class {c} in {', '.join(map(str, files))}: give files that "
                                     f"hold {c} jets (label_{c} = 1)")
                by_class["real"][c], by_class["real reconstructed"][c] = real.take(rows), real_rec.take(rows)
                by_class["generated"][c] = gen.take(np.arange(i * cfg.num_jets, (i + 1) * cfg.num_jets))
                block = compare(by_class["real"][c], by_class["real reconstructed"][c], by_class["generated"][c],
                                cfg, work, f"{CLASS_FOLDER}{c}")
                summary["per_class"][c] = block
                say(f"class {c}: {block['real_jets']} real jets, classifier-test AUC "
                    f"{block['classifier_test']['auc']:.4f}, median mass generated "
                    f"{block['medians']['generated']['mass']:.1f} GeV, real reconstructed "
                    f"{block['medians']['real reconstructed']['mass']:.1f} GeV")
            if tagger is not None:
                summary["closure"] = closure_test(tagger, by_class, work / "closure", device=cfg.device, log=say)
        summary["seconds"] = time.perf_counter() - t0
        summary["config"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}
        write_json(work / "summary.json", summary)
        write_text(work / "summary.md", summary_markdown(summary))
    say(f"done in {time.perf_counter() - t0:.1f} s: {Path(cfg.output) / 'summary.md'}")
    return summary


W1_ROWS = (("mass", "jet mass [GeV]"), ("pt", "jet pT [GeV]"), ("n", "multiplicity"), ("tau21", "τ21"),
           ("tau32", "τ32"), ("const_pt", "constituent pT [GeV]"), ("const_eta", "constituent η_rel"),
           ("const_phi", "constituent φ_rel"))


def block_markdown(s: dict, level: str = "##") -> list:
    """The classifier test, W1 and medians sections of one comparison (:func:`compare`)."""
    t = s["classifier_test"]
    lines = [f"{level} Classifier test", "",
             f"DeepSets (per-particle MLP of width {t['width']}) trained to separate generated from reconstructed real "
             f"jets, {t['jets_per_sample']} of each, split 0.6/0.2/0.2, best epoch on the validation loss "
             f"({t['best_epoch']} of {t['epochs_run']}): **test AUC {t['auc']:.4f}** (0.5 = indistinguishable; "
             "paper: 0.54 at full scale).", "",
             f"{level} 1-Wasserstein distances", "",
             "generated vs real reconstructed; the floor is the distance between two halves of the real reconstructed "
             "jets (statistics only); the last column is what tokenization alone does (reconstructed vs original).", ""]
    rows = [[label, fmt(s["w1_generated_vs_reconstructed"][key], 4), fmt(s["w1_real_halves"][key], 4),
             fmt(s["w1_reconstructed_vs_original"][key], 4)] for key, label in W1_ROWS]
    lines.append(markdown_table(["observable", "W1 generated", "W1 floor (real halves)", "W1 tokenization"], rows))
    lines += [f"{level} Medians", ""]
    lines.append(markdown_table(["sample", "jet mass [GeV]", "constituents"],
                                [[k, fmt(v["mass"], 1), fmt(v["n"], 0)] for k, v in s["medians"].items()]))
    lines += figure_lines(s["figures"], level)
    return lines


def summary_markdown(s: dict) -> str:
    """The report's summary.md."""
    classes = s.get("classes")
    of = f" of the classes {', '.join(classes)}" if classes else ""
    lines = [f"# Generation fidelity: {s['generated_jets']} generated{of} vs {s['real_jets']} real jets", "",
             f"Generator: `{s['checkpoint']}`; real jets: {', '.join(s['files'])}, tokenized and reconstructed with "
             "the generator's tokenizer (the reference a perfect generator would match)."
             + (f" Classifier-free guidance scale {s['guidance']:g}." if s.get("guidance") is not None else ""), ""]
    if not classes:
        lines += block_markdown(s)
    else:
        closure = s.get("closure")
        head = ["class", "real jets", "generated", "classifier-test AUC", "median mass gen. / rec. real [GeV]",
                "W1 mass (floor)", "W1 multiplicity (floor)", "W1 τ32 (floor)"]
        if closure:
            head += ["tagger accuracy gen. / rec. real / real"]
        rows = []
        for c, b in s["per_class"].items():
            w, f, m = b["w1_generated_vs_reconstructed"], b["w1_real_halves"], b["medians"]
            row = [c, b["real_jets"], b["generated_jets"], fmt(b["classifier_test"]["auc"], 4),
                   f"{fmt(m['generated']['mass'], 1)} / {fmt(m['real reconstructed']['mass'], 1)}",
                   f"{fmt(w['mass'], 3)} ({fmt(f['mass'], 3)})", f"{fmt(w['n'], 3)} ({fmt(f['n'], 3)})",
                   f"{fmt(w['tau32'], 4)} ({fmt(f['tau32'], 4)})"]
            if closure:
                acc = closure["accuracy"]
                row.append(" / ".join(fmt(acc[k][c], 3) if c in acc[k] else "–"
                                      for k in ("generated", "real reconstructed", "real")))
            rows.append(row)
        lines += ["## Per class", "", "Generated jets of each class against the real jets of that class (W1 floor: "
                  "two halves of the real reconstructed jets).", "", markdown_table(head, rows)]
        if closure:
            acc = closure["accuracy"]
            lines += ["## Closure test", "",
                      f"The tagger `{closure['tagger']['weights']}` (network config "
                      f"`{closure['tagger']['network_config']}`, data config `{closure['tagger']['data_config']}`), "
                      f"trained on real jets, classifies the jets of the classes {', '.join(closure['classes'])} "
                      "through `weaver --predict`: a generator that makes what it is asked for gives the same accuracy "
                      "on its jets as on real ones.", "",
                      markdown_table(["jets", "accuracy (all)", *closure["classes"]],
                                     [[k, fmt(v["all"], 4), *[fmt(v[c], 4) for c in closure["classes"]]]
                                      for k, v in acc.items()]),
                      "", f"Accuracy on generated minus on real reconstructed jets: "
                      f"**{100 * (acc['generated']['all'] - acc['real reconstructed']['all']):+.1f} points**.", ""]
        for c, b in s["per_class"].items():
            lines += ["", f"## Class {c}", ""] + block_markdown(b, "###")
    lines += ["", f"Run time {s['seconds']:.1f} s (generation {s['generation_seconds']:.1f} s).", ""]
    return "\n".join(lines)


__all__ = ["GenFidelityConfig", "run_gen_fidelity", "wasserstein_1d", "distances", "generated_sample", "compare"]
