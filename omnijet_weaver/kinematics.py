"""Four-momentum arithmetic, written once, for torch tensors and numpy (or awkward) arrays alike.

Conventions: energies and momenta in GeV; a massless constituent is (pT, eta, phi), a four-momentum
(px, py, pz, E); a jet is the sum of its constituents' four-momenta. Every function takes its arrays as
separate arguments (any shape, broadcastable) and returns a tuple of arrays of the same kind:

* ``torch.Tensor`` in -> torch ops out (on the tensor's device, dtype kept, differentiable);
* anything else -> numpy ops: numpy arrays and scalars, and jagged awkward arrays (jets, var) of constituents
  for :func:`massless_p4`, :func:`sum_p4` and the jet functions (through numpy's ufunc protocol; per-jet
  results are numpy arrays).

The type of the first argument decides. Nothing here changes a dtype: pass float64 where float64 is wanted.

    px, py, pz, e = massless_p4(pt, eta, phi)              # constituents (B, N)
    pt, eta, phi, mass, e = jet_kinematics(px, py, pz, e, mask)  # jets (B,)

The module imports only numpy; torch and awkward are used through the arrays handed in.
"""

from __future__ import annotations

import sys

import numpy as np

#: torch divides pz by max(pT, _TINY_PT) and then sets eta = 0 where pT = 0, so no NaN reaches a gradient.
_TINY_PT = 1e-12


def _torch(x):
    """The torch module if ``x`` is a torch tensor, else None (torch is never imported here)."""
    torch = sys.modules.get("torch")
    return torch if torch is not None and isinstance(x, torch.Tensor) else None


def massless_p4(pt, eta, phi):
    """Massless four-momenta from (pT [GeV], eta, phi), each (...,) -> (px, py, pz, E) [GeV], each (...,)."""
    lib = _torch(pt) or np
    return pt * lib.cos(phi), pt * lib.sin(phi), pt * lib.sinh(eta), pt * lib.cosh(eta)


def sum_p4(px, py, pz, energy, mask=None):
    """Sums over the last axis (the constituents): (..., N) each -> the jets' (px, py, pz, E), each (...,).

    ``mask`` (..., N) bool or None (all real): masked-out constituents are multiplied by 0, whatever they
    hold. Jagged awkward arrays (jets, var) are summed over their variable axis (then ``mask`` must be None)."""
    torch = _torch(px)
    if torch is not None:
        m = mask.to(px.dtype) if mask is not None else None
        return tuple((x * m if m is not None else x).sum(-1) for x in (px, py, pz, energy))
    if mask is not None:
        m = np.asarray(mask).astype(np.asarray(px).dtype)
        return tuple((np.asarray(x) * m).sum(-1) for x in (px, py, pz, energy))
    return tuple(np.sum(x, axis=-1) for x in (px, py, pz, energy))


def pt_eta_phi(px, py, pz):
    """(px, py, pz) [GeV], each (...,) -> (pT [GeV], pseudorapidity eta, phi in [-pi, pi]), each (...,).

    eta = asinh(pz / pT); it is 0 where pT = 0 (an empty jet)."""
    torch = _torch(px)
    if torch is not None:
        pt = torch.hypot(px, py)
        eta = torch.where(pt > 0, torch.asinh(pz / pt.clamp_min(_TINY_PT)), torch.zeros_like(pt))
        return pt, eta, torch.atan2(py, px)
    px, py, pz = (np.asarray(x) for x in (px, py, pz))
    pt = np.hypot(px, py)
    with np.errstate(invalid="ignore", divide="ignore"):
        eta = np.where(pt > 0, np.arcsinh(np.divide(pz, pt, where=pt > 0, out=np.zeros_like(pt))), 0.0)
    return pt, eta, np.arctan2(py, px)


def invariant_mass(px, py, pz, energy):
    """Invariant mass sqrt(E^2 - |p|^2) [GeV] of four-momenta (...,) each; 0 where E^2 < |p|^2 (rounding)."""
    if _torch(px) is None:
        px, py, pz, energy = (np.asarray(x) for x in (px, py, pz, energy))
    return _sqrt_clipped(energy**2 - px**2 - py**2 - pz**2)


def mass_from_pt_eta(energy, pt, eta):
    """Invariant mass [GeV] from energy, pT [GeV] and pseudorapidity, (...,) each: |p| = pT cosh(eta)."""
    lib = _torch(energy) or np
    return _sqrt_clipped(energy**2 - (pt * lib.cosh(eta)) ** 2)


def _sqrt_clipped(m2):
    """sqrt(max(m2, 0)): a mass from a squared mass that rounding may have made slightly negative."""
    torch = _torch(m2)
    return torch.sqrt(m2.clamp_min(0)) if torch is not None else np.sqrt(np.clip(m2, 0, None))


def jet_kinematics(px, py, pz, energy, mask=None):
    """The jets of constituents (..., N) [GeV] (see :func:`sum_p4` for ``mask``) ->
    (pT, eta, phi, mass, E), each (...,), in GeV (eta = 0 for a jet without constituents)."""
    jpx, jpy, jpz, je = sum_p4(px, py, pz, energy, mask)
    jpt, jeta, jphi = pt_eta_phi(jpx, jpy, jpz)
    return jpt, jeta, jphi, invariant_mass(jpx, jpy, jpz, je), je


def massless_jet_kinematics(pt, eta, phi, mask=None):
    """:func:`jet_kinematics` of massless constituents given as (pT [GeV], eta, phi), (..., N) each."""
    return jet_kinematics(*massless_p4(pt, eta, phi), mask)


__all__ = ["massless_p4", "sum_p4", "pt_eta_phi", "invariant_mass", "mass_from_pt_eta", "jet_kinematics",
           "massless_jet_kinematics"]
