"""Jet observables against hand-computed cases (mass, N-subjettiness, ratios) and FastJet-free cross-checks."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

pytest.importorskip("fastjet")

from omnijet_weaver.physics.observables import (  # noqa: E402
    constituent_observables,
    exclusive_kt_axes,
    jagged,
    jet_observables,
    kinematic_observables,
    masked_observables,
    nsubjettiness,
)


def jets(*constituents):
    """jets(((pt, eta, phi), ...), ...) -> jagged pt, eta, phi."""
    cols = [ak.Array([[c[i] for c in jet] for jet in constituents]) for i in range(3)]
    return [ak.values_astype(c, np.float64) if len(c) else c for c in cols]


def test_two_particle_mass_and_kinematics():
    pt, eta, phi = jets([(100.0, 0.1, -0.2), (50.0, -0.3, 0.25)])
    obs = kinematic_observables(pt, eta, phi)
    m2 = 2 * 100 * 50 * (np.cosh(0.1 + 0.3) - np.cos(-0.2 - 0.25))  # massless: m^2 = 2 pT1 pT2 (cosh deta - cos dphi)
    assert obs["mass"][0] == pytest.approx(np.sqrt(m2), rel=1e-12)
    px = 100 * np.cos(-0.2) + 50 * np.cos(0.25)
    py = 100 * np.sin(-0.2) + 50 * np.sin(0.25)
    assert obs["pt"][0] == pytest.approx(np.hypot(px, py), rel=1e-12)
    assert obs["phi"][0] == pytest.approx(np.arctan2(py, px), rel=1e-12)
    assert obs["n"][0] == 2


def test_one_particle_jet_has_zero_taus_and_mass():
    obs = jet_observables(*jets([(300.0, 0.5, 1.0)]))
    assert obs["tau1"][0] == 0 and obs["tau2"][0] == 0 and obs["tau3"][0] == 0
    assert obs["tau21"][0] == 0 and obs["tau32"][0] == 0
    assert obs["mass"][0] == pytest.approx(0, abs=1e-5)


def test_tau1_of_two_particles_by_hand():
    p1, p2 = (120.0, 0.2, 0.1), (40.0, -0.3, -0.35)
    taus = nsubjettiness(*jets([p1, p2]))
    # the one exclusive-kT axis is the E-scheme sum of both (massive): its rapidity and phi
    v = [np.array([pt * np.cos(f), pt * np.sin(f), pt * np.sinh(e), pt * np.cosh(e)]) for pt, e, f in (p1, p2)]
    px, py, pz, en = v[0] + v[1]
    y, f = 0.5 * np.log((en + pz) / (en - pz)), np.arctan2(py, px)
    dr = [np.hypot(e - y, fi - f) for _, e, fi in (p1, p2)]
    expected = (p1[0] * dr[0] + p2[0] * dr[1]) / ((p1[0] + p2[0]) * 0.8)
    assert taus[0, 0] == pytest.approx(expected, rel=1e-9)
    assert taus[0, 1] == 0 and taus[0, 2] == 0  # two axes on two particles


def test_three_particles_tau2_uses_kt_merging():
    # kT merges the pair with the smallest min(pT^2) dR^2 first: the soft particle goes to its nearest hard one
    hard1, hard2, soft = (200.0, 0.0, 0.0), (150.0, 0.4, 0.0), (5.0, 0.05, 0.3)
    taus = nsubjettiness(*jets([hard1, hard2, soft]))
    # tau2: axes are hard2 and (hard1 + soft); only hard1 and soft contribute
    v = [np.array([pt * np.cos(f), pt * np.sin(f), pt * np.sinh(e), pt * np.cosh(e)]) for pt, e, f in (hard1, soft)]
    px, py, pz, en = v[0] + v[1]
    y, f = 0.5 * np.log((en + pz) / (en - pz)), np.arctan2(py, px)
    num = 200 * np.hypot(0 - y, 0 - f) + 5 * min(np.hypot(0.05 - y, 0.3 - f), np.hypot(0.05 - 0.4, 0.3))
    assert taus[0, 1] == pytest.approx(num / (355 * 0.8), rel=1e-9)
    assert taus[0, 2] == 0


def test_two_prong_jet_has_small_tau21_one_prong_does_not():
    rng = np.random.default_rng(3)

    def prongs(centres, n=40):
        which = rng.integers(0, len(centres), n)
        d = np.asarray(centres)[which] + rng.normal(0, 0.01, (n, 2))
        return [(float(p), float(e), float(f)) for p, (e, f) in zip(rng.uniform(5, 50, n), d)]

    obs = jet_observables(*jets(prongs([(0.0, 0.0), (0.4, 0.3)]), prongs([(0.0, 0.0)]),
                                prongs([(0.0, 0.0), (0.35, 0.0), (0.0, 0.4)])))
    assert obs["tau21"][0] < 0.1 < obs["tau21"][1]
    assert obs["tau32"][2] < 0.2 < 0.5 < obs["tau32"][0]
    assert obs["tau21"][1] > 0.5  # diffuse single prong: tau2 comparable to tau1


def test_taus_are_ordered_nonnegative_and_bounded():
    rng = np.random.default_rng(0)
    n = rng.integers(0, 60, 300)
    pt = ak.unflatten(rng.exponential(20, n.sum()), n)
    eta = ak.unflatten(rng.normal(0, 0.3, n.sum()), n)
    phi = ak.unflatten(rng.normal(0, 0.3, n.sum()), n)
    taus = nsubjettiness(pt, eta, phi)
    assert taus.shape == (300, 3)
    assert (taus >= 0).all()
    assert (np.diff(taus, axis=1) <= 1e-12).all()  # more axes never increase tau
    assert (taus[n <= 1] == 0).all()
    # tau1 <= sum pT dR(jet axis) / (sum pT R0) <= max dR / R0
    dr_max = ak.to_numpy(ak.fill_none(ak.max(np.hypot(eta, phi), axis=1), 0)) + 1.0
    assert (taus[:, 0] <= dr_max / 0.8 + 1e-9).all()


def test_axes_follow_phi_wrap_around():
    # two particles on either side of phi = pi: the axis must sit near pi, not near 0
    pt, eta, phi = jets([(100.0, 0.0, np.pi - 0.05), (100.0, 0.0, -np.pi + 0.05)])
    jets_idx, axes = exclusive_kt_axes(pt, eta, phi, 1)
    assert list(jets_idx) == [0]
    assert abs(abs(axes[0, 0, 1]) - np.pi) < 1e-9
    assert nsubjettiness(pt, eta, phi)[0, 0] == pytest.approx(0.05 / 0.8, rel=1e-9)


def test_empty_and_padded_input():
    values = np.array([[3.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    mask = np.array([[True, True, False], [False, False, False]])
    arr = jagged(values, mask)
    assert ak.to_list(arr) == [[3.0, 2.0], []]
    pt = np.array([[100.0, 50.0, 9.0], [1.0, 1.0, 1.0]])
    eta = np.array([[0.1, -0.3, 7.0], [0.0, 0.0, 0.0]])
    phi = np.array([[-0.2, 0.25, 7.0], [0.0, 0.0, 0.0]])
    obs, const = masked_observables(pt, eta, phi, mask)
    ref = jet_observables(*jets([(100.0, 0.1, -0.2), (50.0, -0.3, 0.25)]))
    assert obs["mass"][0] == pytest.approx(ref["mass"][0])
    assert obs["n"].tolist() == [2, 0] and obs["mass"][1] == 0 and obs["tau1"][1] == 0 and obs["pt"][1] == 0
    assert const["pt"].tolist() == [100.0, 50.0]
    none = jagged(np.zeros((0, 4)), np.zeros((0, 4), dtype=bool))  # no jets at all
    assert constituent_observables(none, none, none)["pt"].shape == (0,)
    assert jet_observables(none, none, none)["tau21"].shape == (0,)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="NaN or infinite"):
        jet_observables(*jets([(np.nan, 0.0, 0.0)]))
    with pytest.raises(ValueError, match="same shape"):
        jagged(np.zeros((2, 3)), np.zeros((2, 4), dtype=bool))
    with pytest.raises(ValueError, match="same number of constituents"):
        kinematic_observables(ak.Array([[1.0, 2.0]]), ak.Array([[0.0]]), ak.Array([[0.0, 0.0]]))
