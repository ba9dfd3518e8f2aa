"""Property-based: random jets (random multiplicities, extreme but finite values) go through the feature
transform and every tokenizer without errors or NaN."""

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omnijet_weaver.constants import ANGLE_CUT, MAX_PARTICLES
from omnijet_weaver.models.features import FeatureTransform, from_features
from omnijet_weaver.models.tokenizer import VQVAE, BinnedTokenizer

torch.manual_seed(0)
TOKENIZERS = [
    VQVAE(codebook_size=16, hidden_dim=16, num_blocks=1, num_heads=2).eval(),
    VQVAE(codebook_size=16, hidden_dim=16, conditional=False).eval(),
    BinnedTokenizer(bins=5),
]

finite = dict(allow_nan=False, allow_infinity=False, width=32)


@st.composite
def jets(draw):
    batch = draw(st.integers(1, 4))
    length = draw(st.integers(1, 160))
    pt = draw(st.lists(st.floats(2.0**-20, 1e5, **finite), min_size=batch * length, max_size=batch * length))
    ang = st.floats(-3.0, 3.0, **finite)
    eta = draw(st.lists(ang, min_size=batch * length, max_size=batch * length))
    phi = draw(st.lists(ang, min_size=batch * length, max_size=batch * length))
    counts = draw(st.lists(st.integers(0, length), min_size=batch, max_size=batch))
    shape = (batch, length)
    pt, eta, phi = (torch.tensor(x, dtype=torch.float32).view(shape) for x in (pt, eta, phi))
    mask = (torch.arange(length)[None] < torch.tensor(counts)[:, None]).float()
    vectors = torch.stack([pt * torch.cos(phi), pt * torch.sin(phi), pt * torch.sinh(eta), pt * torch.cosh(eta)], 1)
    return torch.stack([eta, phi], 1), vectors, mask.unsqueeze(1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(jets())
def test_random_jets_round_trip_without_errors_or_nan(inputs):
    points, vectors, mask = inputs
    x, keep = FeatureTransform()(points, vectors, mask)
    assert torch.isfinite(x).all()
    assert keep.shape[1] <= MAX_PARTICLES
    # the kept constituents are exactly the finite in-cone ones with pT > 0, pT-ordered
    pt, eta, phi = from_features(x.double())
    kept_pt = torch.where(keep, pt, torch.zeros_like(pt))
    assert torch.all(kept_pt[:, :-1] >= kept_pt[:, 1:] * (1 - 1e-6))
    assert torch.all(eta[keep].abs() < ANGLE_CUT + 1e-6) and torch.all(phi[keep].abs() < ANGLE_CUT + 1e-6)
    in_cone = (points[:, 0].abs() < ANGLE_CUT) & (points[:, 1].abs() < ANGLE_CUT) & (mask[:, 0] > 0)
    in_cone &= torch.hypot(vectors[:, 0], vectors[:, 1]) > 0
    assert torch.equal(keep.sum(1), in_cone.sum(1).clamp(max=MAX_PARTICLES))
    for tok in TOKENIZERS:
        ids, m = tok.encode(points, vectors, mask)
        assert torch.equal(m, keep) and ids.min() >= 0 and ids.max() < tok.codebook_size
        for v in tok.decode(ids, m):
            assert torch.isfinite(v).all() and torch.all(v[~m] == 0)
        if isinstance(tok, VQVAE):
            out = tok(points, None, vectors, mask)
            assert np.isfinite(out["loss"].item())
