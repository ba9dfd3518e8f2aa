"""Token quality on real jets: read them as the models see them, reconstruct through a tokenizer, compare
(paper section III A).

    sample = load_jets("data_configs/qg_top.yaml", files)          # JetSample: features, mask, label
    rec, counts = reconstruct(tokenizer, sample)                   # the same jets, encoded and decoded
    res = resolutions(sample.observables()[0], rec.observables()[0], sample.label, sample.class_names)

Resolutions are Gaussian fits to the differences reconstructed - original (:func:`gaussian_fit`), as in the
paper's Figs. 4, 9-15; the standard deviation and the 16-84 % half-width are reported next to them.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from ..constants import MAX_PARTICLES, NUM_FEATURES
from ..models.features import FeatureTransform, from_features
from ..models.quantizer import codebook_usage

#: Observables whose reconstruction resolution is reported (reconstructed - original; mass and pT in GeV).
RESOLUTION_OBSERVABLES = ("mass", "pt", "tau21", "tau32")


@dataclasses.dataclass
class JetSample:
    """Constituents of many jets in the models' feature space, padded to ``MAX_PARTICLES``.

    Attributes:
        features: (jets, N, 3) float32, (3 eta_rel, 3 phi_rel, ln pT - 1.8), zeros where masked.
        mask: (jets, N) bool, True for real constituents (pT-ordered, at the front).
        label: (jets,) int64 class index of the data config, or None (e.g. generated jets).
        class_names: names of the class indices (e.g. ``["QCD", "Tbqq"]``), or None.
    """

    features: np.ndarray
    mask: np.ndarray
    label: np.ndarray | None = None
    class_names: list | None = None

    def __post_init__(self):
        if self.features.ndim != 3 or self.features.shape[-1] != NUM_FEATURES or self.mask.shape != self.features.shape[:2]:
            raise ValueError(f"features must be (jets, N, {NUM_FEATURES}) with a (jets, N) mask, got "
                             f"{self.features.shape} and {self.mask.shape}")
        if self.label is not None and len(self.label) != len(self.features):
            raise ValueError(f"{len(self.label)} labels for {len(self.features)} jets")
        self._jet_observables = None  # computed once (FastJet); take() hands the rows on
        self._constituent_observables = None

    def __len__(self) -> int:
        return len(self.features)

    def take(self, index) -> "JetSample":
        """The jets ``index`` (indices or a boolean mask), as a new sample (jet observables already computed
        are handed on, not recomputed)."""
        out = JetSample(self.features[index], self.mask[index], None if self.label is None else self.label[index],
                        self.class_names)
        if self._jet_observables is not None:
            out._jet_observables = {k: v[index] for k, v in self._jet_observables.items()}
        return out

    def class_counts(self) -> dict:
        """Number of jets of each class present, ``{"QCD": 2000, "Tbqq": 2000}`` (class names where known, else
        the indices as strings); empty without labels."""
        if self.label is None:
            return {}
        values, counts = np.unique(self.label, return_counts=True)
        name = lambda i: self.class_names[i] if self.class_names and i < len(self.class_names) else str(i)  # noqa: E731
        return {name(int(v)): int(c) for v, c in zip(values, counts)}

    def constituents(self):
        """(pT [GeV], eta_rel, phi_rel), each (jets, N) float64 numpy; meaningful where ``mask``."""
        pt, eta, phi = from_features(torch.from_numpy(self.features.astype(np.float64)))
        return pt.numpy() * self.mask, eta.numpy(), phi.numpy()

    def observables(self) -> tuple[dict, dict]:
        """(per-jet, per-constituent) observables of :mod:`omnijet_weaver.physics.observables` (computed once):
        per-jet arrays (jets,), per-constituent arrays flat over all constituents."""
        if self._jet_observables is None or self._constituent_observables is None:
            from ..physics.observables import constituent_observables, jagged, jet_observables

            pt, eta, phi = (jagged(a, self.mask) for a in self.constituents())
            if self._jet_observables is None:
                self._jet_observables = jet_observables(pt, eta, phi)
            self._constituent_observables = constituent_observables(pt, eta, phi)
        return self._jet_observables, self._constituent_observables


def _padded(x, keep, n=MAX_PARTICLES) -> np.ndarray:
    """A batch's (B, L, ...) tensor, trimmed to its longest jet, back to ``n`` slots, zero where not ``keep``."""
    x, keep = x.cpu().numpy(), keep.cpu().numpy()
    out = np.zeros((x.shape[0], n, *x.shape[2:]), dtype=x.dtype)
    out[:, : x.shape[1]] = x * (keep if x.ndim == 2 else keep[..., None])
    return out


@torch.no_grad()
def load_jets(data_config, files, max_jets=None, batch_size: int = 512, seed: int | None = 0,
              classes=None) -> JetSample:
    """Jets through weaver's dataset (selection, padding, as in training) and the feature transform.

    Sampling rule for ``max_jets`` (None: every jet) out of several files: each file gives a share in proportion
    to its number of entries (a file with fewer selected jets gives all it has, the others make up the rest),
    taken from its first entries, and the jets are then shuffled with ``seed`` (None: file order kept), so a
    top file and a QCD file of equal size give about half of each, whatever their order. Only the entries
    needed are read (:func:`omnijet_weaver.weaver.dataset.sampled_batches`). ``classes`` (names of the data
    config's ``simple`` labels without ``label_``, e.g. ``["Tbqq", "QCD"]``): only jets of those classes, the
    rule applied to each class on its own (``max_jets`` of each).

    The files, the data config (ParT's kin inputs, taken by name) and its selection are checked before any jet
    is read; raises :class:`~omnijet_weaver.errors.ConfigError` / ``InputFileError`` naming the file."""
    from ..weaver.dataset import sampled_batches

    if max_jets is not None and max_jets < 1:
        raise ValueError(f"max_jets must be at least 1 (or None: all jets), got {max_jets}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    indices = None if classes is None else data_config_classes(data_config, classes)
    config, batches = sampled_batches(data_config, files, max_jets=max_jets, batch_size=batch_size, classes=indices)
    label_name = config.label_names[0]
    transform = FeatureTransform()
    feats, masks, labels = [], [], []
    for X, y, _ in batches:
        x, keep = transform(X["pf_points"], X["pf_vectors"], X["pf_mask"])
        feats.append(_padded(x, keep))
        masks.append(_padded(keep, keep))
        labels.append(y[label_name].numpy())
    if not labels:
        raise ValueError(f"no jets were read from {', '.join(map(str, files))}: check the files and the selection")
    class_names = [v.removeprefix("label_") for v in getattr(config, "label_value", [])] or None
    feats, masks, labels = np.concatenate(feats), np.concatenate(masks), np.concatenate(labels).astype(np.int64)
    if seed is not None:
        order = np.random.default_rng(seed).permutation(len(labels))
        feats, masks, labels = feats[order], masks[order], labels[order]
    return JetSample(feats, masks, labels, class_names)


def data_config_classes(data_config, names) -> list[int]:
    """The class indices (into the ``simple`` labels ``label_<name>``) of the class ``names`` in the data config
    ``data_config`` (a path); raises :class:`~omnijet_weaver.errors.ConfigError` for a name it has no label of."""
    from ..constants import LABEL_PREFIX
    from ..errors import ConfigError
    from ..weaver.dataset import check_data_config, label_classes

    known = label_classes(check_data_config(data_config))
    missing = [n for n in names if n not in known]
    if missing:
        raise ConfigError(f"the data config {str(data_config)!r} has no label of class {', '.join(missing)} (its "
                          f"labels: {', '.join(LABEL_PREFIX + k for k in known) or 'none simple'}): give one whose "
                          f"labels include {', '.join(LABEL_PREFIX + n for n in missing)}")
    return [known.index(n) for n in names]


@torch.no_grad()
def reconstruct(tokenizer, sample: JetSample, batch_size: int = 512, device="cpu") -> tuple[JetSample, np.ndarray]:
    """Encode and decode every jet of ``sample``: (reconstructed sample, code counts (codebook_size,))."""
    tokenizer = tokenizer.to(device).eval()
    out = np.zeros_like(sample.features)
    counts = torch.zeros(tokenizer.codebook_size, dtype=torch.long)
    for start in range(0, len(sample), batch_size):
        mask = torch.from_numpy(sample.mask[start:start + batch_size])
        n = max(int(mask.sum(1).max()), 1)
        mask = mask[:, :n].to(device)
        x = torch.from_numpy(sample.features[start:start + batch_size, :n]).to(device)
        ids = tokenizer.encode_features(x, mask)
        out[start:start + batch_size, :n] = (tokenizer.decode_features(ids, mask) * mask.unsqueeze(-1)).cpu().numpy()
        counts += torch.bincount(ids[mask].cpu(), minlength=tokenizer.codebook_size)
    return JetSample(out, sample.mask.copy(), sample.label, sample.class_names), counts.numpy()


def reconstruct_jets(tokenizer, data_config, files, batch_size=512, device="cpu", max_jets=None, seed=0) -> dict:
    """:func:`load_jets` (``max_jets`` mixed over the files, shuffled with ``seed``) + :func:`reconstruct` as one
    dict: ``input`` and ``reconstructed`` (per-jet observables, plus ``const_pt``), ``label``, ``code_counts`` and
    the shortcuts ``mass``, ``mass_rec`` [GeV] and ``n`` used by :func:`reconstruction_summary`."""
    sample = load_jets(data_config, files, max_jets=max_jets, batch_size=batch_size, seed=seed)
    rec, counts = reconstruct(tokenizer, sample, batch_size=batch_size, device=device)
    out = {"label": sample.label, "code_counts": counts}
    for key, s in (("input", sample), ("reconstructed", rec)):
        jets, const = s.observables()
        out[key] = {**jets, "const_pt": const["pt"]}
    out["mass"], out["mass_rec"], out["n"] = out["input"]["mass"], out["reconstructed"]["mass"], out["input"]["n"]
    return out


def gaussian_fit(x, window: float = 2.0, iterations: int = 3, bins: int = 50) -> tuple[float, float]:
    """(mean, sigma) of a normal distribution fitted to the core of the histogram of ``x``.

    Starts from the median and the MAD-based width, then ``iterations`` times fits a Gaussian to the histogram
    within mean +- ``window`` sigma (least squares on ln(counts) weighted by the counts, Caruana's method).
    NaN for fewer than 10 finite values; the robust start values when the fit is degenerate."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) < 10:
        return float("nan"), float("nan")
    mu = float(np.median(x))
    sigma = float(1.4826 * np.median(np.abs(x - mu)))
    if sigma <= 0:
        return mu, float(np.std(x))
    for _ in range(iterations):
        counts, edges = np.histogram(x, bins=bins, range=(mu - window * sigma, mu + window * sigma))
        centres = 0.5 * (edges[1:] + edges[:-1])
        ok = counts > 0
        if ok.sum() < 3:
            break
        c, y, w = centres[ok] - mu, np.log(counts[ok]), counts[ok].astype(np.float64)
        a = np.stack([np.ones_like(c), c, c**2], axis=1) * w[:, None]
        coef, *_ = np.linalg.lstsq(a, y * w, rcond=None)
        if coef[2] >= 0:  # no peak: keep the robust estimate
            break
        new_sigma = math.sqrt(-1.0 / (2 * coef[2]))
        new_mu = mu - coef[1] / (2 * coef[2])
        if not (np.isfinite(new_mu) and np.isfinite(new_sigma)) or abs(new_mu - mu) > window * sigma:
            break
        mu, sigma = float(new_mu), float(new_sigma)
    return mu, sigma


def difference_stats(d) -> dict:
    """Figures of a difference distribution: Gaussian-fit ``mean``/``sigma``, ``bias`` (plain mean), ``std``,
    ``iqr68`` (half of the 16-84 % range) and ``median``."""
    d = np.asarray(d, dtype=np.float64)
    if len(d) == 0:
        return {k: float("nan") for k in ("mean", "sigma", "bias", "std", "iqr68", "median")}
    mean, sigma = gaussian_fit(d)
    q16, q50, q84 = np.percentile(d, [16, 50, 84])
    return {"mean": mean, "sigma": sigma, "bias": float(d.mean()), "std": float(d.std()),
            "iqr68": float((q84 - q16) / 2), "median": float(q50)}


def class_groups(labels, class_names=None) -> dict:
    """{"all": all jets, name: jets of that class ...} as boolean masks."""
    labels = np.asarray(labels)
    groups = {"all": np.ones(len(labels), dtype=bool)}
    for idx in np.unique(labels):
        name = class_names[idx] if class_names is not None and idx < len(class_names) else f"class_{idx}"
        groups[name] = labels == idx
    return groups


def resolutions(original: dict, reconstructed: dict, labels, class_names=None,
                observables=RESOLUTION_OBSERVABLES) -> dict:
    """{class: {observable: :func:`difference_stats` of reconstructed - original}} for all jets and per class."""
    return {name: {o: {"jets": int(sel.sum()), **difference_stats(reconstructed[o][sel] - original[o][sel])}
                   for o in observables}
            for name, sel in class_groups(labels, class_names).items()}


def reconstruction_summary(rec: dict, class_names=None) -> dict:
    """Figures from :func:`reconstruct_jets`: usage, perplexity, and per class (and all) the mass bias,
    std and 16-84% half-width of m_rec - m [GeV], and the Gaussian-fit resolutions."""
    usage, perplexity = codebook_usage(rec["code_counts"])
    summary = {"jets": int(len(rec["mass"])), "code_usage": usage, "perplexity": perplexity, "classes": {}}
    res = resolutions(rec["input"], rec["reconstructed"], rec["label"], class_names)
    for name, sel in class_groups(rec["label"], class_names).items():
        m = res[name]["mass"]
        summary["classes"][name] = {
            "jets": int(sel.sum()),
            "median_mass_GeV": float(np.median(rec["mass"][sel])) if sel.any() else float("nan"),
            "mass_bias_GeV": m["bias"], "mass_std_GeV": m["std"], "mass_iqr68_GeV": m["iqr68"],
            "mass_median_diff_GeV": m["median"], "mass_sigma_GeV": m["sigma"], "mass_mean_GeV": m["mean"],
            "resolutions": res[name],
        }
    return summary


@torch.no_grad()
def token_spread(tokenizer, tokens, repeats: int = 500, context: int = 50, seed: int = 0, device="cpu",
                 batch_size: int = 500) -> np.ndarray:
    """Where each token decodes to when it sits among random other tokens (paper Fig. 3).

    Each of ``tokens`` is decoded ``repeats`` times, each time in a jet with ``context`` other tokens drawn
    uniformly from the codebook. Tokenizers that decode every token alone (binned, unconditional VQ-VAE)
    give the same point every time. Returns (len(tokens), repeats, 3) features."""
    tokenizer = tokenizer.to(device).eval()
    tokens = torch.as_tensor(np.asarray(tokens), dtype=torch.long)
    if len(tokens) and (int(tokens.min()) < 0 or int(tokens.max()) >= tokenizer.codebook_size):
        raise ValueError(f"tokens must be in [0, {tokenizer.codebook_size})")
    gen = torch.Generator().manual_seed(seed)
    out = np.zeros((len(tokens), repeats, NUM_FEATURES), dtype=np.float32)
    length = min(context + 1, MAX_PARTICLES)
    for i, tok in enumerate(tokens):
        for start in range(0, repeats, batch_size):
            n = min(batch_size, repeats - start)
            ids = torch.randint(0, tokenizer.codebook_size, (n, length), generator=gen)
            ids[:, 0] = tok
            mask = torch.ones(n, length, dtype=torch.bool)
            x = tokenizer.decode_features(ids.to(device), mask.to(device))
            out[i, start:start + n] = x[:, 0].cpu().numpy()
    return out


__all__ = ["JetSample", "load_jets", "reconstruct", "reconstruct_jets", "gaussian_fit",
           "difference_stats", "class_groups", "resolutions", "reconstruction_summary", "token_spread",
           "RESOLUTION_OBSERVABLES"]
