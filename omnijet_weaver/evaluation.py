"""Token quality on real jets: reconstruct through a tokenizer and compare (paper section III A).

:func:`reconstruction_summary` is what ``scripts/eval_tokenizer.py`` prints: codebook usage and the
jet-mass resolution (std of m_reconstructed - m_original) on jets the tokenizer has not seen.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .features import jet_mass_from_features


@torch.no_grad()
def reconstruct_jets(tokenizer, data_config, files, batch_size=512, device="cpu", max_jets=None):
    """Per jet: original and reconstructed mass [GeV], multiplicity, class index; plus the code counts.

    Returns a dict of numpy arrays ``mass``, ``mass_rec``, ``n``, ``label`` and ``code_counts`` (K,).
    """
    from .data import jet_loader

    tokenizer = tokenizer.to(device).eval()
    loader = jet_loader(data_config, files, batch_size=batch_size)
    names = loader.dataset.config.input_names
    label_name = loader.dataset.config.label_names[0]
    out = {"mass": [], "mass_rec": [], "n": [], "label": []}
    counts = torch.zeros(tokenizer.codebook_size, dtype=torch.long)
    seen = 0
    for X, y, _ in loader:
        points, _, vectors, mask = (X[k].to(device) for k in names[:4])
        x, keep = tokenizer.transform(points, vectors, mask)
        ids = tokenizer.encode_features(x, keep)
        x_rec = tokenizer.decode_features(ids, keep)
        out["mass"].append(jet_mass_from_features(x, keep).cpu().numpy())
        out["mass_rec"].append(jet_mass_from_features(x_rec, keep).cpu().numpy())
        out["n"].append(keep.sum(1).cpu().numpy())
        out["label"].append(y[label_name].numpy())
        counts += torch.bincount(ids[keep].cpu(), minlength=tokenizer.codebook_size)
        seen += len(ids)
        if max_jets is not None and seen >= max_jets:
            break
    result = {k: np.concatenate(v)[:max_jets] for k, v in out.items()}
    result["code_counts"] = counts.numpy()
    return result


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
