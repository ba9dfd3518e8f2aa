"""The feature transform: weaver inputs -> tokenizer features and the exact inverse."""

import numpy as np
import pytest
import torch
import uproot
from conftest import DATA_CONFIG, shared_file, toy_jets

from omnijet_weaver.constants import ANGLE_CUT, ETA_PHI_SCALE, LOG_PT_SHIFT, MAX_PARTICLES
from omnijet_weaver.io.files import convert_to_ttree, write_root
from omnijet_weaver.models.features import FeatureTransform, from_features, jet_mass_from_features, to_features
from omnijet_weaver.weaver.dataset import jet_loader


def reference_particles(path):
    """Independent numpy reference from the file itself: per selected jet, the kept constituents'
    (pT, deta, dphi), pT-descending, at most 128."""
    t = uproot.open(path)["tree"].arrays()
    keep_jet = (t["label_QCD"] == 1) | (t["label_Tbqq"] == 1)
    out = []
    for jet in t[keep_jet]:
        pt = np.hypot(np.asarray(jet["part_px"]), np.asarray(jet["part_py"]))
        eta, phi = np.asarray(jet["part_deta"]), np.asarray(jet["part_dphi"])
        ok = (np.abs(eta) < ANGLE_CUT) & (np.abs(phi) < ANGLE_CUT) & (pt > 0)
        pt, eta, phi = pt[ok], eta[ok], phi[ok]
        order = np.argsort(-pt, kind="stable")[:MAX_PARTICLES]
        out.append((pt[order], eta[order], phi[order]))
    return out


def transformed_from_weaver(path):
    transform = FeatureTransform()
    jets = []
    for X, _, _ in jet_loader(DATA_CONFIG, [path], batch_size=64):
        feats, mask = transform(X["pf_points"], X["pf_vectors"], X["pf_mask"])
        pt, eta, phi = from_features(feats)
        for i in range(len(mask)):
            m = mask[i]
            jets.append((pt[i][m].numpy(), eta[i][m].numpy(), phi[i][m].numpy(), feats[i][~m]))
    return jets


def check_round_trip(path):
    ref = reference_particles(path)
    got = transformed_from_weaver(path)
    assert len(got) == len(ref) > 0
    for (pt, eta, phi), (gpt, geta, gphi, padding) in zip(ref, got):
        assert len(gpt) == len(pt)
        # ParT's kin inputs are float32: compare at float32 precision
        np.testing.assert_allclose(gpt, pt, rtol=2e-5)
        np.testing.assert_allclose(geta, eta, atol=2e-6)
        np.testing.assert_allclose(gphi, phi, atol=2e-6)
        assert torch.all(padding == 0)


def test_round_trip_on_generated_ttree(tmp_path):
    path = tmp_path / "toy.root"
    write_root(path, toy_jets(100, seed=3))
    check_round_trip(path)


def test_round_trip_on_real_jetclass(tmp_path):
    # the shared sample is an RNTuple, which weaver does not read: convert it as a user would
    path = tmp_path / "mixed500.root"
    assert convert_to_ttree(shared_file("real", "JetClass_mixed500.root"), path) == 500
    check_round_trip(path)


def test_inverse_is_exact():
    g = torch.Generator().manual_seed(0)
    pt = torch.rand(1000, generator=g, dtype=torch.float64) * 500 + 0.1
    eta = (torch.rand(1000, generator=g, dtype=torch.float64) - 0.5) * 1.6
    phi = (torch.rand(1000, generator=g, dtype=torch.float64) - 0.5) * 1.6
    f = to_features(pt, eta, phi)
    np.testing.assert_allclose(f[:, 0], ETA_PHI_SCALE * eta)
    np.testing.assert_allclose(f[:, 2], np.log(pt.numpy()) + LOG_PT_SHIFT)
    back = from_features(f)
    for a, b in zip(back, (pt, eta, phi)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def _inputs(pt, eta, phi, mask):
    """Weaver-shaped inputs (B=1) from per-constituent lists; the jet axis is at eta = phi = 0."""
    pt, eta, phi = (torch.tensor([x], dtype=torch.float32) for x in (pt, eta, phi))
    points = torch.stack([eta, phi], 1)
    vectors = torch.stack([pt * torch.cos(phi), pt * torch.sin(phi), pt * torch.sinh(eta), pt * torch.cosh(eta)], 1)
    return points, vectors, torch.tensor([[mask]], dtype=torch.float32)


def test_cut_sort_mask_and_wrap_padding():
    # 3 real constituents, then weaver's wrap padding (copies), masked by pf_mask
    pt, eta, phi = [10.0, 50.0, 20.0, 10.0, 50.0], [0.1, -0.2, 0.85, 0.1, -0.2], [0.0, 0.3, 0.0, 0.0, 0.3]
    inputs = _inputs(pt, eta, phi, [1, 1, 1, 0, 0])
    feats, mask = FeatureTransform(trim_padding=False)(*inputs)
    assert mask.tolist() == [[True, True, False, False, False]]  # |eta|=0.85 is outside the cone
    got_pt = from_features(feats)[0][0, :2]
    torch.testing.assert_close(got_pt, torch.tensor([50.0, 10.0]), rtol=1e-5, atol=0)
    assert torch.all(feats[0, 2:] == 0)
    # by default, padding beyond the batch's largest multiplicity is cut away
    trimmed, trimmed_mask = FeatureTransform()(*inputs)
    assert trimmed_mask.tolist() == [[True, True]] and torch.equal(trimmed, feats[:, :2])


def test_more_than_128_keeps_leading():
    n = 200
    pt = list(np.linspace(1, 200, n))
    feats, mask = FeatureTransform()(*_inputs(pt, [0.0] * n, [0.0] * n, [1] * n))
    assert feats.shape == (1, MAX_PARTICLES, 3) and mask.all()
    got = from_features(feats)[0][0]
    torch.testing.assert_close(got, torch.tensor(pt[::-1][:MAX_PARTICLES], dtype=torch.float32), rtol=1e-5, atol=0)


def test_nan_inf_zero_pt_and_empty_jets_are_masked():
    pt = [float("nan"), 5.0, float("inf"), 0.0, 3.0]
    eta = [0.0, float("nan"), 0.0, 0.0, 0.95]
    feats, mask = FeatureTransform()(*_inputs(pt, eta, [0.0] * 5, [1] * 5))
    assert not mask.any() and mask.shape == (1, 1)  # an all-empty batch keeps one (masked) slot
    assert torch.isfinite(feats).all() and torch.all(feats == 0)


def test_jet_mass_of_two_particles():
    # two massless particles back to back in phi at eta=0: m = 2 * sqrt(pt1 * pt2) * sin(dphi/2) * ... exact:
    pt = torch.tensor([[100.0, 50.0]], dtype=torch.float64)
    eta = torch.tensor([[0.0, 0.5]], dtype=torch.float64)
    phi = torch.tensor([[0.0, 0.3]], dtype=torch.float64)
    m = jet_mass_from_features(to_features(pt, eta, phi), torch.ones(1, 2, dtype=torch.bool))
    expected = np.sqrt(2 * 100 * 50 * (np.cosh(0.5) - np.cos(0.3)))
    assert m.item() == pytest.approx(expected, rel=1e-9)
