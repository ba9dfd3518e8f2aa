"""Token quality on real jets: reconstruct through a tokenizer and compare (paper section III A).

:func:`reconstruction_summary` is what ``scripts/eval_tokenizer.py`` prints: codebook usage and the
jet-mass resolution (std of m_reconstructed - m_original) on jets the tokenizer has not seen.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .features import from_features, jet_kinematics, particles_to_vectors


def jet_observables(pt, eta_rel, phi_rel, mask) -> dict:
    """Per jet: ``jet_pt`` and ``mass`` [GeV] and ``n`` (multiplicity) of massless constituents (B, N) given as
    pT [GeV] and angles with a mask; plus ``const_pt``, the pTs of all real constituents. numpy out."""
    pt, eta_rel, phi_rel = pt.double(), eta_rel.double(), phi_rel.double()
    jpt, _, _, mass, _ = jet_kinematics(*particles_to_vectors(pt, eta_rel, phi_rel), mask)
    return {"jet_pt": jpt.cpu().numpy(), "mass": mass.cpu().numpy(), "n": mask.sum(1).cpu().numpy(),
            "const_pt": pt[mask].cpu().numpy()}


@torch.no_grad()
def reconstruct_jets(tokenizer, data_config, files, batch_size=512, device="cpu", max_jets=None):
    """Jets through weaver's dataset and the tokenizer, as the models see them, before and after tokenization.

    Returns a dict: ``input`` and ``reconstructed`` (:func:`jet_observables` of the tokenizer's input
    constituents and of the same jets encoded and decoded), ``label`` (class index), ``code_counts`` (K,), and
    the shortcuts ``mass``, ``mass_rec`` [GeV] and ``n`` used by :func:`reconstruction_summary`.
    """
    from .data import jet_loader

    tokenizer = tokenizer.to(device).eval()
    loader = jet_loader(data_config, files, batch_size=batch_size)
    names = loader.dataset.config.input_names
    label_name = loader.dataset.config.label_names[0]
    parts = {"input": [], "reconstructed": []}
    labels = []
    counts = torch.zeros(tokenizer.codebook_size, dtype=torch.long)
    seen = 0
    for X, y, _ in loader:
        points, _, vectors, mask = (X[k].to(device) for k in names[:4])
        x, keep = tokenizer.transform(points, vectors, mask)
        ids = tokenizer.encode_features(x, keep)
        x_rec = tokenizer.decode_features(ids, keep)
        parts["input"].append(jet_observables(*from_features(x), keep))
        parts["reconstructed"].append(jet_observables(*from_features(x_rec), keep))
        labels.append(y[label_name].numpy())
        counts += torch.bincount(ids[keep].cpu(), minlength=tokenizer.codebook_size)
        seen += len(ids)
        if max_jets is not None and seen >= max_jets:
            break
    if not labels:
        raise ValueError(f"no jets were read from {', '.join(map(str, files))}: check the files and the selection")
    out = {k: {f: np.concatenate([p[f] for p in v]) for f in v[0]} for k, v in parts.items()}
    if max_jets is not None:  # per-jet arrays only (const_pt is per constituent)
        for v in out.values():
            for f in ("jet_pt", "mass", "n"):
                v[f] = v[f][:max_jets]
    out["label"] = np.concatenate(labels).astype(np.int64)[:max_jets]
    out["code_counts"] = counts.numpy()
    out["mass"], out["mass_rec"], out["n"] = out["input"]["mass"], out["reconstructed"]["mass"], out["input"]["n"]
    return out


def codebook_usage(counts) -> tuple[float, float]:
    """(fraction of codes used, perplexity = exp(entropy of the code frequencies))."""
    counts = np.asarray(counts, dtype=np.float64)
    p = counts[counts > 0] / max(counts.sum(), 1)
    return float((counts > 0).mean()), float(math.exp(-(p * np.log(p)).sum()))


def reconstruction_summary(rec: dict, class_names=None) -> dict:
    """Figures from :func:`reconstruct_jets`: usage, perplexity, and per class (and all) the mass bias,
    std and 16-84% half-width of m_rec - m [GeV]."""
    usage, perplexity = codebook_usage(rec["code_counts"])
    summary = {"jets": int(len(rec["mass"])), "code_usage": usage, "perplexity": perplexity, "classes": {}}
    labels = rec["label"]
    groups = {"all": np.ones_like(labels, dtype=bool)}
    for idx in np.unique(labels):
        name = class_names[idx] if class_names is not None else f"class_{idx}"
        groups[name] = labels == idx
    for name, sel in groups.items():
        d = rec["mass_rec"][sel] - rec["mass"][sel]
        q16, q50, q84 = np.percentile(d, [16, 50, 84]) if len(d) else (np.nan,) * 3
        summary["classes"][name] = {
            "jets": int(sel.sum()),
            "median_mass_GeV": float(np.median(rec["mass"][sel])) if sel.any() else float("nan"),
            "mass_bias_GeV": float(d.mean()) if len(d) else float("nan"),
            "mass_std_GeV": float(d.std()) if len(d) else float("nan"),
            "mass_iqr68_GeV": float((q84 - q16) / 2),
            "mass_median_diff_GeV": float(q50),
        }
    return summary
