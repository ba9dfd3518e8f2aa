"""Generated jets in the JetClass layout, ready to go back into weaver."""

from __future__ import annotations

import awkward as ak
import numpy as np

from ..constants import GENERATED_TOKEN_BRANCH, JETCLASS_LABELS
from ..models.features import jet_kinematics, particles_to_vectors


def jetclass_arrays(pt, eta_rel, phi_rel, mask, tokens=None, label: str | None = None) -> dict:
    """Branches of the JetClass layout from decoded constituents.

    Args:
        pt, eta_rel, phi_rel: (N, M) tensors (GeV, angles relative to the jet axis); mask: (N, M) bool.
        tokens: optional (N, M) token ids, written as ``part_token``.
        label: one of the JetClass label branches to set to 1 (all ten are written; None = all 0).
    Returns:
        dict of numpy (per jet) and awkward (per constituent) arrays: ``part_px/py/pz/energy/deta/dphi``,
        ``jet_pt/eta/phi/energy/nparticles``, ``label_*`` and optionally ``part_token``.

    Constituents are massless and placed around a nominal axis at eta = phi = 0, so ``part_deta`` and
    ``part_dphi`` are the generated relative angles; ``jet_*`` are sums over the constituents.
    """
    if label is not None and label not in JETCLASS_LABELS:
        raise ValueError(f"label must be one of {', '.join(JETCLASS_LABELS)}, got {label!r}")
    pt, eta_rel, phi_rel = (x.double() for x in (pt, eta_rel, phi_rel))
    px, py, pz, energy = particles_to_vectors(pt, eta_rel, phi_rel)
    jpt, jeta, jphi, _, je = jet_kinematics(px, py, pz, energy, mask)
    counts = mask.sum(1).numpy()

    def jagged(x, dtype=np.float32):
        return ak.unflatten(x[mask].numpy().astype(dtype), counts)

    arrays = {
        "part_px": jagged(px), "part_py": jagged(py), "part_pz": jagged(pz), "part_energy": jagged(energy),
        "part_deta": jagged(eta_rel), "part_dphi": jagged(phi_rel),
        "jet_pt": jpt.numpy().astype(np.float32), "jet_eta": jeta.numpy().astype(np.float32),
        "jet_phi": jphi.numpy().astype(np.float32), "jet_energy": je.numpy().astype(np.float32),
        "jet_nparticles": counts.astype(np.float32),
    }
    n = len(counts)
    for name in JETCLASS_LABELS:
        arrays[name] = np.full(n, name == label, dtype=np.int32)
    if tokens is not None:
        arrays[GENERATED_TOKEN_BRANCH] = jagged(tokens, np.int32)
    return arrays


__all__ = ["jetclass_arrays"]
