"""Reusable figures: histograms with a ratio panel, metric-vs-number-of-labels curves, ROC curves.

matplotlib and mplhep (histograms, CMS-like style) are imported only when a figure is made, and
figures are drawn on matplotlib's Agg canvas directly, so nothing here touches pyplot's global state or needs
a display. Every function writes one file per format (PNG and PDF by default), each under a temporary name
renamed at the end, and returns the paths written.

    from omnijet_weaver.evaluation import plots
    plots.hist_ratio("out/jet_mass", {"Pythia": m_real, "generated": m_gen}, bins=np.linspace(0, 300, 31),
                     reference="Pythia", xlabel="jet mass [GeV]")
    plots.metric_vs_labels("out/accuracy", {"fine-tuned": {100: 0.85, 1000: 0.90},
                                            "from scratch": {100: 0.70, 1000: 0.86}}, ylabel="accuracy")
    plots.metric_vs_labels("out/auc", {"fine-tuned": {100: (0.90, 0.01), 1000: (0.94, 0.005)}}, ylabel="AUC")
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from ..atomic import atomic_output
from ..errors import MissingDependencyError

#: Formats written by default.
FORMATS = ("png", "pdf")
#: Formats a report's figures may be written in (``--figures``).
FIGURE_FORMATS = ("png", "pdf", "svg")
#: Colours of the curves, in order (colour-blind friendly, Petroff's 6-colour cycle).
COLORS = ("#5790fc", "#f89c20", "#e42536", "#964a8b", "#9c9ca1", "#7a21dd")
INSTALL_HINT = "pip install 'omnijet-weaver[plot]'  (matplotlib, mplhep)"


def require_matplotlib():
    """Import and return matplotlib (and check mplhep, which draws the histograms), or raise
    MissingDependencyError saying how to install them."""
    try:
        import matplotlib
        import mplhep  # noqa: F401
    except ImportError as err:
        raise MissingDependencyError(f"plots need matplotlib and mplhep ({err}): {INSTALL_HINT}") from None
    return matplotlib


@contextlib.contextmanager
def style(name: str = "CMS"):
    """A matplotlib style context: mplhep's ``name`` style (plain matplotlib with larger fonts for a name mplhep
    does not know). Only inside the block; rcParams are restored afterwards."""
    mpl = require_matplotlib()
    import mplhep

    rc = getattr(mplhep.style, name, {"font.size": 14, "axes.grid": False, "legend.frameon": False})
    with mpl.rc_context(), mpl.style.context(rc):
        # mplhep's styles use big fonts for a 10 x 10 inch figure: smaller legends for our 8-inch ones
        mpl.rcParams["legend.fontsize"] = "small"
        yield mpl


def new_figure(nrows: int = 1, height_ratios=None, figsize=(8, 7), sharex=True, ncols: int = 1):
    """A matplotlib Figure on an Agg canvas (no pyplot) with ``nrows`` x ``ncols`` axes, returned as a flat
    list (row by row)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, sharex=sharex, squeeze=False,
                        gridspec_kw={"height_ratios": height_ratios} if height_ratios else None).ravel()
    return fig, list(axes)


def save_figure(fig, path, formats=FORMATS) -> list[Path]:
    """Write ``fig`` as ``path.<format>`` for each format (``path`` may carry one of them already), each
    atomically (temporary name, then rename). Returns the paths written."""
    path = Path(path)
    if path.suffix.lstrip(".").lower() in {"png", "pdf", "svg", "jpg", "jpeg"}:
        path = path.with_suffix("")
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        target = path.with_name(f"{path.name}.{fmt}")
        with atomic_output(target) as tmp:
            fig.savefig(tmp, format=fmt, dpi=110, bbox_inches="tight")
        written.append(target)
    return written


def _null_locator():
    from matplotlib.ticker import NullLocator

    return NullLocator()


def _finite(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).ravel()
    return x[np.isfinite(x)]


def hist_ratio(path, samples: dict, bins, reference: str | None = None, xlabel: str = "", ylabel: str | None = None,
               density: bool = True, logx: bool = False, logy: bool = False, ratio: bool = True,
               ratio_range=(0.0, 2.0), title: str | None = None, colors=None, linestyles=None,
               formats=FORMATS) -> list[Path]:
    """Histograms of several samples, with a ratio panel ``sample / reference`` below.

    Args:
        path: output path without extension (``out/jet_mass`` -> ``out/jet_mass.png``, ``.pdf``).
        samples: ``{legend label: 1-d array}``; non-finite values are dropped, values outside ``bins`` are
            not drawn (the legend gives each sample's size, overflow included). Drawn in order; the first is the reference unless ``reference`` names another.
        bins: bin edges (array) or a number of bins (then spanning the samples' range).
        density: normalise each histogram to unit area (default); else counts.
        logx, logy: log axes (``logx`` with ``bins`` as a number makes log-spaced bins).
        ratio: draw the ratio panel (with the reference's and each sample's statistical errors).
        ratio_range: y range of the ratio panel.
        colors, linestyles: one per sample, in order (default: :data:`COLORS`; solid for the first two
            samples and the reference, dashed for the others).
    Returns:
        the paths written.
    """
    if not samples:
        raise ValueError("hist_ratio needs at least one sample")
    data = {k: _finite(v) for k, v in samples.items()}
    reference = reference if reference is not None else next(iter(data))
    if reference not in data:
        raise KeyError(f"reference {reference!r} is not one of the samples {list(data)}")
    if np.ndim(bins) == 0:
        allv = np.concatenate([v for v in data.values()] or [np.zeros(1)])
        lo, hi = (allv.min(), allv.max()) if len(allv) else (0.0, 1.0)
        if logx:
            lo = max(lo, allv[allv > 0].min() if (allv > 0).any() else 1e-3)
            bins = np.geomspace(lo, max(hi, lo * 1.01), int(bins) + 1)
        else:
            bins = np.linspace(lo, hi if hi > lo else lo + 1, int(bins) + 1)
    bins = np.asarray(bins, dtype=np.float64)
    widths = np.diff(bins)

    names = list(data)
    colors = list(colors) if colors is not None else [COLORS[i % len(COLORS)] for i in range(len(names))]
    linestyles = list(linestyles) if linestyles is not None else [
        "-" if (n == reference or i < 2) else "--" for i, n in enumerate(names)]
    if len(colors) < len(names) or len(linestyles) < len(names):
        raise ValueError(f"hist_ratio: need one colour and line style per sample ({len(names)})")
    hists = {}
    for name, v in data.items():
        counts, _ = np.histogram(v, bins=bins)
        norm = counts.sum() * widths if density and counts.sum() > 0 else np.ones_like(widths)
        hists[name] = (counts / norm, np.sqrt(counts) / norm, counts)

    import mplhep

    with style():
        fig, axes = new_figure(2 if ratio else 1, height_ratios=[3, 1] if ratio else None,
                               figsize=(8, 8) if ratio else (8, 6))
        ax = axes[0]
        for i, (name, (h, err, _)) in enumerate(hists.items()):
            mplhep.histplot(h, bins, ax=ax, histtype="step", color=colors[i], lw=2, ls=linestyles[i],
                            label=f"{name} ({len(data[name])})")
            mplhep.histplot(h, bins, yerr=err, ax=ax, histtype="errorbar", color=colors[i], marker="", elinewidth=1,
                            alpha=0.6)
        ax.set_ylabel(ylabel or ("normalised" if density else "jets"))
        top = max((float(np.max(h + err)) for h, err, _ in hists.values() if len(h)), default=1.0) or 1.0
        if logy:
            ax.set_yscale("log")
            positive = [float(np.min(h[h > 0])) for h, _, _ in hists.values() if (h > 0).any()]
            ax.set_ylim(min(positive, default=top * 1e-3) / 2, top * 30)  # room for the legend
        else:
            ax.set_ylim(0, top * 1.45)
        ax.legend(loc="best")
        if title:
            ax.set_title(title, fontsize="medium")
        if ratio:
            rax = axes[1]
            ref_h, ref_err, _ = hists[reference]
            with np.errstate(divide="ignore", invalid="ignore"):
                for i, (name, (h, err, _)) in enumerate(hists.items()):
                    if name == reference:  # the reference's own uncertainty as a band around 1
                        rel = np.where(ref_h > 0, ref_err / ref_h, np.nan)
                        mplhep.histplot(np.ones_like(ref_h), bins, yerr=rel, ax=rax, histtype="band", color=colors[i],
                                        alpha=0.3)
                        continue
                    r = np.where(ref_h > 0, h / ref_h, np.nan)
                    r_err = np.where(ref_h > 0, err / ref_h, np.nan)
                    mplhep.histplot(r, bins, yerr=r_err, ax=rax, histtype="errorbar", color=colors[i], marker="o",
                                    markersize=4)
            rax.axhline(1.0, color="k", lw=1, ls=":")
            rax.set_ylim(*ratio_range)
            rax.set_ylabel(f"ratio to\n{reference}" if len(reference) < 14 else "ratio", fontsize="small")
        axes[-1].set_xlabel(xlabel)
        axes[-1].set_xlim(bins[0], bins[-1])
        if logx:
            for a in axes:
                a.set_xscale("log")
        return save_figure(fig, path, formats)


def metric_vs_labels(path, results: dict, ylabel: str, xlabel: str = "number of labelled training jets",
                     ylim=None, title: str | None = None, formats=FORMATS) -> list[Path]:
    """A metric (accuracy, AUC, ...) against the number of labelled jets, one line per training mode.

    Args:
        results: ``{mode label: {number of labels: value}}``; a value is a number, or ``(mean, std)`` to draw
            an error bar (e.g. the spread over seeds). Missing or NaN values are skipped (a NaN std draws no bar).
        ylim: y range (default: matplotlib's).
    Returns:
        the paths written.
    """

    def value_and_error(v):
        if v is None:
            return float("nan"), float("nan")
        if np.ndim(v) == 0:
            return float(v), float("nan")
        m, e = v
        return float(m), (float(e) if e is not None else float("nan"))

    with style():
        fig, (ax,) = new_figure(1, figsize=(8, 6))
        markers = "osD^v<>"
        all_n = set()
        for i, (mode, values) in enumerate(results.items()):
            pts = sorted((int(n), *value_and_error(v)) for n, v in values.items())
            pts = [p for p in pts if np.isfinite(p[1])]
            if not pts:
                continue
            n, v, err = (np.asarray(x) for x in zip(*pts))
            all_n.update(int(x) for x in n)
            color, marker = COLORS[i % len(COLORS)], markers[i % len(markers)]
            if np.isfinite(err).any():
                ax.errorbar(n, v, yerr=np.where(np.isfinite(err), err, 0.0), marker=marker, ms=8, lw=2, color=color,
                            capsize=4, elinewidth=1.5, label=mode)
            else:
                ax.plot(n, v, marker=marker, ms=8, lw=2, color=color, label=mode)
        ax.set_xscale("log")
        if all_n:
            ticks = sorted(all_n)
            ax.set_xticks(ticks)
            ax.set_xticklabels([str(t) for t in ticks])
            ax.set_xlim(min(ticks) / 1.5, max(ticks) * 1.5)
            ax.xaxis.set_minor_locator(_null_locator())
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if ylim is not None:
            ax.set_ylim(*ylim)
        if title:
            ax.set_title(title, fontsize="medium")
        ax.legend(loc="best")
        return save_figure(fig, path, formats)


def roc_curves(path, curves: dict, title: str | None = None, formats=FORMATS) -> list[Path]:
    """Background rejection 1/eps_B against signal efficiency eps_S (``sklearn.metrics.roc_curve``), one curve
    per entry; points with eps_B = 0 are left out.

    Args:
        curves: ``{label: (labels (0/1 array, 1 = signal), scores)}``.
    Returns:
        the paths written.
    """
    from sklearn.metrics import roc_curve

    with style():
        fig, (ax,) = new_figure(1, figsize=(8, 6))
        for i, (name, (y, s)) in enumerate(curves.items()):
            y, s = np.asarray(y).astype(bool), np.asarray(s, dtype=np.float64)
            if y.all() or not y.any():
                continue
            fp, tp, _ = roc_curve(y, s)
            keep = fp > 0
            ax.plot(tp[keep], 1 / fp[keep], lw=2, color=COLORS[i % len(COLORS)], label=name,
                    ls="-" if i % 2 == 0 else "--")
        ax.set_yscale("log")
        ax.set_xlim(0, 1)
        ax.set_xlabel(r"signal efficiency $\epsilon_S$ (top)")
        ax.set_ylabel(r"background rejection $1/\epsilon_B$ (QCD)")
        if title:
            ax.set_title(title, fontsize="medium")
        ax.legend(loc="best")
        return save_figure(fig, path, formats)


__all__ = ["FORMATS", "FIGURE_FORMATS", "hist_ratio", "metric_vs_labels", "roc_curves", "save_figure", "style", "new_figure",
           "require_matplotlib"]
