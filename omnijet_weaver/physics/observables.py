"""Jet and constituent observables, vectorised over jets (awkward / numpy in, numpy out).

Constituents are massless and given as pT [GeV], eta and phi: absolute, or relative to the jet axis as
the models see them (then the jet sits at eta = phi = 0). Jagged input is an awkward array (or anything
``ak.Array`` accepts) of shape (jets, var); padded input goes through :func:`jagged` first.

    obs = jet_observables(pt, eta, phi)      # {"pt", "eta", "phi", "mass", "n", "tau1".."tau3", "tau21", "tau32"}

N-subjettiness (Thaler & Van Tilburg, arXiv:1011.2268) with the normalised measure
``tau_N = sum_i pT_i min_k dR(i, axis_k)^beta / sum_i pT_i R0^beta``, beta = 1, R0 = 0.8, and exclusive-kT
axes: the constituents clustered with FastJet's kT algorithm (E-scheme, R large enough that nothing merges
with the beam, as in fastjet-contrib's ``ExclusiveJetAxes``) until exactly N pseudo-jets remain; distances in
(rapidity, phi). A jet with at most N constituents has tau_N = 0; ratios tau21 = tau2 / tau1 and
tau32 = tau3 / tau2 are 0 where the denominator is 0.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import awkward as ak
import numpy as np

from ..kinematics import massless_jet_kinematics, massless_p4

#: N-subjettiness defaults of the paper's comparisons.
R0 = 0.8
BETA = 1.0
#: Names of the per-jet observables :func:`jet_observables` returns, in a fixed order.
JET_OBSERVABLES = ("pt", "eta", "phi", "mass", "n", "tau1", "tau2", "tau3", "tau21", "tau32")
#: Names of the per-constituent observables :func:`constituent_observables` returns.
CONSTITUENT_OBSERVABLES = ("pt", "eta", "phi")
#: Radius of the exclusive-kT clustering: large, so no constituent is ever merged with the beam.
_KT_RADIUS = 1000.0


def jagged(values, mask) -> ak.Array:
    """Padded (jets, N) values (numpy or torch) and a (jets, N) boolean mask -> jagged awkward array of the
    masked entries, in their order."""
    values, mask = _numpy(values), _numpy(mask).astype(bool)
    if values.shape != mask.shape:
        raise ValueError(f"values {values.shape} and mask {mask.shape} must have the same shape (jets, particles)")
    return ak.unflatten(values[mask], mask.sum(axis=1))


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _as_jagged(pt, eta, phi):
    pt, eta, phi = (ak.values_astype(ak.Array(a), np.float64) for a in (pt, eta, phi))
    if pt.ndim != 2:
        raise ValueError(f"constituents must be jagged (jets, particles), got {pt.ndim} dimension(s)")
    if not (ak.all(ak.num(pt) == ak.num(eta)) and ak.all(ak.num(pt) == ak.num(phi))):
        raise ValueError("pt, eta and phi must have the same number of constituents in every jet")
    flat = ak.to_numpy(ak.flatten(pt))
    if not (np.isfinite(flat).all() and np.isfinite(ak.to_numpy(ak.flatten(eta))).all()
            and np.isfinite(ak.to_numpy(ak.flatten(phi))).all()):
        raise ValueError("constituent pt, eta or phi is NaN or infinite: mask such constituents out first")
    if (flat < 0).any():
        raise ValueError("constituent pT must not be negative")
    return pt, eta, phi


def kinematic_observables(pt, eta, phi) -> dict:
    """Per jet: ``pt``, ``eta``, ``phi``, ``mass`` [GeV] of the sum of the (massless) constituents, and ``n``,
    the number of constituents (numpy arrays). Empty jets have zero pt and mass and eta = phi = 0."""
    pt, eta, phi = _as_jagged(pt, eta, phi)
    jpt, jeta, jphi, mass, _ = massless_jet_kinematics(pt, eta, phi)
    return {"pt": jpt, "eta": jeta, "phi": jphi, "mass": mass, "n": ak.to_numpy(ak.num(pt)).astype(np.int64)}


def _delta_phi(a, b):
    return (a - b + np.pi) % (2 * np.pi) - np.pi


def exclusive_kt_axes(pt, eta, phi, n_axes: int) -> tuple[np.ndarray, np.ndarray]:
    """Exclusive-kT axes of the jets with more than ``n_axes`` constituents.

    Returns ``(jets, axes)``: the indices of those jets and their axes, shape (len(jets), n_axes, 2) with
    (rapidity, phi) of each axis. Needs ``fastjet`` (``pip install fastjet``)."""
    try:
        import fastjet
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("N-subjettiness needs FastJet: pip install fastjet (or omnijet-weaver[eval])") from err
    pt, eta, phi = _as_jagged(pt, eta, phi)
    jets = np.flatnonzero(ak.to_numpy(ak.num(pt)) > n_axes)
    axes = np.zeros((len(jets), n_axes, 2))
    if len(jets) == 0:
        return jets, axes
    p4 = ak.zip({k: v[jets] for k, v in zip(("px", "py", "pz", "E"), massless_p4(pt, eta, phi))})
    jet_def = fastjet.JetDefinition(fastjet.kt_algorithm, _KT_RADIUS)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # fastjet's banner and its generic "dcut ... with care" warning
        cluster = fastjet.ClusterSequence(p4, jet_def)
        sub = cluster.exclusive_jets(n_jets=n_axes)
    px, py, pz, e = (ak.to_numpy(sub[k]).reshape(len(jets), n_axes) for k in ("px", "py", "pz", "E"))
    with np.errstate(divide="ignore", invalid="ignore"):
        axes[..., 0] = 0.5 * np.log((e + pz) / (e - pz))
    axes[..., 1] = np.arctan2(py, px)
    return jets, axes


def nsubjettiness(pt, eta, phi, n_max: int = 3, r0: float = R0, beta: float = BETA) -> np.ndarray:
    """tau_1 .. tau_n_max of every jet (see the module docstring), shape (jets, n_max); dimensionless."""
    pt, eta, phi = _as_jagged(pt, eta, phi)
    counts = ak.to_numpy(ak.num(pt))
    taus = np.zeros((len(counts), n_max))
    for n in range(1, n_max + 1):
        jets, axes = exclusive_kt_axes(pt, eta, phi, n)
        if len(jets) == 0:
            continue
        c = counts[jets]
        p, y, f = (ak.to_numpy(ak.flatten(a[jets])) for a in (pt, eta, phi))  # massless: rapidity = eta
        ax = np.repeat(axes, c, axis=0)  # (constituents, n, 2)
        dr = np.sqrt((y[:, None] - ax[..., 0]) ** 2 + _delta_phi(f[:, None], ax[..., 1]) ** 2).min(axis=1)
        starts = np.concatenate([[0], np.cumsum(c)[:-1]])
        num = np.add.reduceat(p * dr**beta, starts)
        den = np.add.reduceat(p, starts) * r0**beta
        taus[jets, n - 1] = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return taus


def _ratio(a, b):
    return np.divide(a, b, out=np.zeros_like(a), where=b > 0)


def jet_observables(pt, eta, phi, r0: float = R0, beta: float = BETA) -> dict:
    """All per-jet observables (:data:`JET_OBSERVABLES`) as numpy arrays of length jets: ``pt``, ``mass``
    [GeV], ``eta``, ``phi``, ``n`` and N-subjettiness ``tau1``, ``tau2``, ``tau3``, ``tau21``, ``tau32``."""
    out = kinematic_observables(pt, eta, phi)
    taus = nsubjettiness(pt, eta, phi, 3, r0, beta)
    out.update({f"tau{i + 1}": taus[:, i] for i in range(3)})
    out["tau21"] = _ratio(out["tau2"], out["tau1"])
    out["tau32"] = _ratio(out["tau3"], out["tau2"])
    return out


def constituent_observables(pt, eta, phi) -> dict:
    """All constituents of all jets, flattened: ``pt`` [GeV], ``eta``, ``phi`` (numpy)."""
    pt, eta, phi = _as_jagged(pt, eta, phi)
    return {k: ak.to_numpy(ak.flatten(v)) for k, v in (("pt", pt), ("eta", eta), ("phi", phi))}


def masked_observables(pt, eta, phi, mask) -> tuple[dict, dict]:
    """(:func:`jet_observables`, :func:`constituent_observables`) of padded (jets, N) arrays and their mask
    (numpy or torch), e.g. the output of :func:`omnijet_weaver.models.features.from_features`."""
    pt, eta, phi = (jagged(a, mask) for a in (pt, eta, phi))
    return jet_observables(pt, eta, phi), constituent_observables(pt, eta, phi)


__all__ = ["JET_OBSERVABLES", "CONSTITUENT_OBSERVABLES", "R0", "BETA", "jagged", "kinematic_observables",
           "exclusive_kt_axes", "nsubjettiness", "jet_observables", "constituent_observables", "masked_observables"]
