"""omnijet_weaver.kinematics: hand-computed four-momenta and masses, torch == numpy == awkward, masked and empty jets."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import torch

from omnijet_weaver.kinematics import (
    invariant_mass,
    jet_kinematics,
    mass_from_pt_eta,
    massless_jet_kinematics,
    massless_p4,
    pt_eta_phi,
    sum_p4,
)

# two massless constituents: (pT [GeV], eta, phi)
P1, P2 = (100.0, 0.1, -0.2), (50.0, -0.3, 0.25)
#: m^2 = 2 pT1 pT2 (cosh(eta1 - eta2) - cos(phi1 - phi2)) for massless particles
TWO_MASS = np.sqrt(2 * 100 * 50 * (np.cosh(0.1 + 0.3) - np.cos(-0.2 - 0.25)))


def test_massless_p4_by_hand():
    px, py, pz, e = massless_p4(np.array(100.0), np.array(0.5), np.array(np.pi / 2))
    assert px == pytest.approx(0.0, abs=1e-12) and py == pytest.approx(100.0, rel=1e-15)
    assert pz == pytest.approx(100 * np.sinh(0.5), rel=1e-15) and e == pytest.approx(100 * np.cosh(0.5), rel=1e-15)
    assert e**2 == pytest.approx(px**2 + py**2 + pz**2, rel=1e-14)  # massless


def test_two_particle_jet_by_hand():
    pt, eta, phi = (np.array([[P1[i], P2[i]]]) for i in range(3))
    jpt, jeta, jphi, mass, energy = massless_jet_kinematics(pt, eta, phi)
    px = 100 * np.cos(-0.2) + 50 * np.cos(0.25)
    py = 100 * np.sin(-0.2) + 50 * np.sin(0.25)
    pz = 100 * np.sinh(0.1) + 50 * np.sinh(-0.3)
    assert mass[0] == pytest.approx(TWO_MASS, rel=1e-12)
    assert jpt[0] == pytest.approx(np.hypot(px, py), rel=1e-14)
    assert jphi[0] == pytest.approx(np.arctan2(py, px), rel=1e-14)
    assert jeta[0] == pytest.approx(np.arcsinh(pz / np.hypot(px, py)), rel=1e-14)
    assert energy[0] == pytest.approx(100 * np.cosh(0.1) + 50 * np.cosh(-0.3), rel=1e-14)
    # the same mass from (E, pT, eta) of the jet, and from its four-momentum
    assert mass_from_pt_eta(energy, jpt, jeta)[0] == pytest.approx(TWO_MASS, rel=1e-9)
    assert invariant_mass(*sum_p4(*massless_p4(pt, eta, phi)))[0] == mass[0]


def test_back_to_back_pair_has_mass_twice_the_energy():
    """Two 40 GeV particles back to back at eta = 0: p = 0, m = E = 80 GeV; pT = 0 gives eta = 0."""
    pt = torch.tensor([[40.0, 40.0]], dtype=torch.float64)
    jpt, jeta, jphi, mass, energy = massless_jet_kinematics(pt, torch.zeros_like(pt),
                                                            torch.tensor([[0.0, np.pi]], dtype=torch.float64))
    assert jpt.item() == pytest.approx(0.0, abs=1e-12) and mass.item() == pytest.approx(80.0, rel=1e-12)
    assert energy.item() == 80.0 and jeta.item() == pytest.approx(0.0, abs=1e-9)


def random_jets(b=32, n=20, seed=0):
    rng = np.random.default_rng(seed)
    pt = rng.exponential(20.0, (b, n)) + 0.5
    eta = rng.normal(0, 0.3, (b, n))
    phi = rng.normal(0, 0.3, (b, n))
    mask = rng.random((b, n)) < 0.7
    mask[0] = False  # an empty jet
    mask[1] = True  # a full one
    return pt, eta, phi, mask


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_torch_and_numpy_give_the_same_numbers(dtype):
    pt, eta, phi, mask = (a.astype(dtype) if a.dtype != bool else a for a in random_jets())
    t = [torch.from_numpy(a) for a in (pt, eta, phi, mask)]
    for got_np, got_t in zip(massless_p4(pt, eta, phi), massless_p4(*t[:3])):
        assert got_t.dtype == torch.from_numpy(got_np).dtype  # the dtype is kept
        np.testing.assert_allclose(got_t.numpy(), got_np, rtol=1e-6 if dtype == np.float32 else 1e-14)
    jets_np = massless_jet_kinematics(pt, eta, phi, mask)
    jets_t = massless_jet_kinematics(*t)
    for name, a, b in zip(("pt", "eta", "phi", "mass", "energy"), jets_np, jets_t):
        assert b.dtype == torch.from_numpy(np.asarray(a)).dtype, name
        # float32 sums in another order: a few ulps of the (up to 1 TeV) jet energy
        tol = dict(rtol=1e-4, atol=1e-3) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(b.numpy(), a, **tol, err_msg=name)


def test_masked_constituents_do_not_count_and_empty_jets_are_zero():
    pt, eta, phi, mask = random_jets()
    jets = massless_jet_kinematics(pt, eta, phi, mask)
    garbage = np.where(mask, pt, 1e6)  # masked-out entries hold anything finite
    for a, b in zip(jets, massless_jet_kinematics(garbage, eta, phi, mask)):
        np.testing.assert_array_equal(a, b)
    # the jets of the masked constituents = the jets of only the real ones (jagged, awkward)
    jagged = [ak.unflatten(a[mask], mask.sum(1)) for a in (pt, eta, phi)]
    for a, b in zip(jets, massless_jet_kinematics(*jagged)):
        np.testing.assert_allclose(np.asarray(b), a, rtol=1e-12, atol=1e-9)
    jpt, jeta, jphi, mass, energy = (x[0] for x in jets)  # the empty jet
    assert (jpt, jeta, jphi, mass, energy) == (0.0, 0.0, 0.0, 0.0, 0.0)
    t = massless_jet_kinematics(*(torch.from_numpy(a) for a in (pt, eta, phi, mask)))
    assert [x[0].item() for x in t] == [0.0] * 5


def test_single_particle_jet_is_the_particle():
    pt, eta, phi = (torch.tensor([[v, 7.0]], dtype=torch.float64) for v in (P1[0], P1[1], P1[2]))
    mask = torch.tensor([[True, False]])
    jpt, jeta, jphi, mass, _ = jet_kinematics(*massless_p4(pt, eta, phi), mask)
    assert (jpt.item(), jeta.item(), jphi.item()) == pytest.approx(P1, rel=1e-12)
    assert mass.item() == pytest.approx(0.0, abs=1e-5)  # massless, up to rounding under the sqrt


def test_pt_eta_phi_inverts_massless_p4():
    pt, eta, phi, _ = random_jets(4, 5)
    got = pt_eta_phi(*massless_p4(pt, eta, phi)[:3])
    for a, b in zip(got, (pt, eta, phi)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    assert pt_eta_phi(np.array([0.0]), np.array([0.0]), np.array([5.0]))[1][0] == 0.0  # pT = 0: eta = 0


def test_invariant_mass_of_a_massive_vector_and_rounding_below_zero():
    assert invariant_mass(3.0, 0.0, 4.0, 13.0) == pytest.approx(12.0)  # 169 - 25 = 144
    assert invariant_mass(np.array(1.0), np.array(0.0), np.array(0.0), np.array(1.0 - 1e-12)) == 0.0
    t = invariant_mass(*(torch.tensor(v, dtype=torch.float64) for v in (3.0, 0.0, 4.0, 13.0)))
    assert t.item() == pytest.approx(12.0)
    m = mass_from_pt_eta(torch.tensor([13.0]), torch.tensor([5.0]), torch.tensor([0.0]))
    assert m.item() == pytest.approx(12.0)
