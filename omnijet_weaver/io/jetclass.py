"""Generated jets in the JetClass layout, ready to go back into weaver."""

from __future__ import annotations

import awkward as ak
import numpy as np

from ..constants import GENERATED_TOKEN_BRANCH, JET_BRANCHES, JETCLASS_LABELS, PART_BRANCHES
from ..kinematics import invariant_mass, jet_kinematics, massless_p4, sum_p4


def jetclass_arrays(pt, eta_rel, phi_rel, mask, tokens=None, label: str | None = None, labels=None) -> dict:
    """Branches of the JetClass layout from decoded constituents.

    Args:
        pt, eta_rel, phi_rel: (N, M) tensors (GeV, angles relative to the jet axis); mask: (N, M) bool.
        tokens: optional (N, M) token ids, written as ``part_token``.
        label: one of the JetClass label branches to set to 1 for every jet (all ten are written; None = all 0).
        labels: instead of ``label``, one label branch name per jet (N,) (e.g. the class a conditional model
            generated it as); a name outside the ten JetClass labels (``label_top``) is written as a branch too.
    Returns:
        dict of numpy (per jet) and awkward (per constituent) arrays: ``part_px/py/pz/energy/deta/dphi``,
        ``jet_pt/eta/phi/energy/nparticles``, ``label_*`` and optionally ``part_token``.

    Constituents are massless and placed around a nominal axis at eta = phi = 0, so ``part_deta`` and
    ``part_dphi`` are the generated relative angles; ``jet_*`` are sums over the constituents.
    """
    if label is not None and label not in JETCLASS_LABELS:
        raise ValueError(f"label must be one of {', '.join(JETCLASS_LABELS)}, got {label!r}")
    pt, eta_rel, phi_rel = (x.double() for x in (pt, eta_rel, phi_rel))
    px, py, pz, energy = massless_p4(pt, eta_rel, phi_rel)
    jpt, jeta, jphi, _, je = jet_kinematics(px, py, pz, energy, mask)
    counts = mask.sum(1).numpy()

    def jagged(x, dtype=np.float32):
        return ak.unflatten(x[mask].numpy().astype(dtype), counts)

    # PART_BRANCHES and JET_BRANCHES name these columns, in this order
    arrays = {name: jagged(x) for name, x in zip(PART_BRANCHES, (px, py, pz, energy, eta_rel, phi_rel))}
    arrays.update({name: x.numpy().astype(np.float32) for name, x in zip(JET_BRANCHES, (jpt, jeta, jphi, je))})
    arrays[JET_BRANCHES[-1]] = counts.astype(np.float32)  # jet_nparticles
    n = len(counts)
    if labels is not None:
        if label is not None:
            raise ValueError("give label or labels, not both")
        labels = np.asarray(labels, dtype=object)
        if labels.shape != (n,):
            raise ValueError(f"labels: one branch name per jet ({n}), got shape {labels.shape}")
    else:
        labels = np.full(n, label, dtype=object)
    for name in dict.fromkeys(JETCLASS_LABELS + tuple(x for x in labels if x is not None)):
        arrays[name] = (labels == name).astype(np.int32)
    if tokens is not None:
        arrays[GENERATED_TOKEN_BRANCH] = jagged(tokens, np.int32)
    return arrays


def jet_masses(arrays: dict) -> np.ndarray:
    """Invariant mass [GeV], float64 (jets,), of each jet of JetClass branches, from the sum of all its
    constituents' ``part_px/py/pz/energy`` (jagged awkward arrays); the sums keep the branches' dtype."""
    sums = sum_p4(*(arrays[name] for name in PART_BRANCHES[:4]))
    return invariant_mass(*(ak.to_numpy(s).astype(np.float64) for s in sums))


__all__ = ["jetclass_arrays", "jet_masses"]
