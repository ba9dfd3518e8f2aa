"""The three tokenizers behind one encode/decode API, and their self-describing checkpoints."""

import pytest
import torch

from omnijet_weaver.constants import MAX_PARTICLES
from omnijet_weaver.models.checkpoint import CheckpointError, load_model, save_model
from omnijet_weaver.models.features import FeatureTransform
from omnijet_weaver.models.tokenizer import VQVAE, BinnedTokenizer, grid_size_for, load_tokenizer

TINY = dict(codebook_size=32, hidden_dim=16, num_blocks=1, num_heads=2)


def weaver_batch(batch=6, length=40, seed=0):
    """Random weaver-shaped inputs with uneven multiplicities, one empty jet and a few out-of-cone particles."""
    g = torch.Generator().manual_seed(seed)
    points = (torch.rand(batch, 2, length, generator=g) - 0.5) * 1.8
    pt = torch.rand(batch, length, generator=g) * 100 + 0.2
    eta, phi = points[:, 0], points[:, 1]
    vectors = torch.stack([pt * torch.cos(phi), pt * torch.sin(phi), pt * torch.sinh(eta), pt * torch.cosh(eta)], 1)
    counts = torch.randint(1, length + 1, (batch,), generator=g)
    counts[1] = 0
    mask = (torch.arange(length)[None] < counts[:, None]).float().unsqueeze(1)
    return points, vectors, mask


TOKENIZERS = [
    pytest.param(lambda: VQVAE(**TINY), id="conditional"),
    pytest.param(lambda: VQVAE(**TINY, conditional=False), id="unconditional"),
    pytest.param(lambda: BinnedTokenizer(bins=9), id="binned"),
]


@pytest.mark.parametrize("make", TOKENIZERS)
def test_round_trip_shapes_and_masks(make):
    tok = make().eval()
    points, vectors, mask = weaver_batch()
    ids, keep = tok.encode(points, vectors, mask)
    _, expected_keep = FeatureTransform()(points, vectors, mask)
    assert ids.shape == keep.shape == expected_keep.shape and ids.dtype == torch.long
    assert keep.shape[1] == int(expected_keep.sum(1).max()) <= 40
    assert torch.equal(keep, expected_keep)
    assert not keep[1].any()  # the empty jet stays empty
    assert ids.min() >= 0 and ids.max() < tok.codebook_size
    assert torch.all(ids[~keep] == 0)
    pt, eta, phi = tok.decode(ids, keep)
    for x in (pt, eta, phi):
        assert x.shape == keep.shape and torch.isfinite(x).all()
        assert torch.all(x[~keep] == 0)
    assert torch.all(pt[keep] > 0)
    # decoding is deterministic
    again = tok.decode(ids, keep)
    for a, b in zip((pt, eta, phi), again):
        assert torch.equal(a, b)


def test_binned_decodes_to_cell_centres():
    tok = BinnedTokenizer(bins=21)
    assert tok.codebook_size == 9261 == grid_size_for(8192) ** 3
    x = torch.tensor([[[0.3, -1.1, 2.0], [2.39, -2.39, -4.4], [5.0, 5.0, 9.0]]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    ids = tok.encode_features(x, mask)
    back = tok.decode_features(ids, mask)
    assert torch.all((back[0, :2] - x[0, :2]).abs() <= tok.width / 2 + 1e-6)
    # out of range values land in the edge cells
    assert torch.allclose(back[0, 2], tok.low + (torch.tensor([20, 20, 20]) + 0.5) * tok.width)
    with pytest.raises(ValueError, match="outside the grid"):
        tok.decode_features(torch.tensor([[9261]]), torch.ones(1, 1, dtype=torch.bool))


def test_unconditional_tokens_are_context_free_conditional_are_not():
    torch.manual_seed(0)
    points, vectors, mask = weaver_batch(batch=2, length=10)
    for conditional in (False, True):
        tok = VQVAE(**TINY, conditional=conditional).eval()
        ids, keep = tok.encode(points, vectors, mask)
        keep = keep.clone()
        full = tok.decode_features(ids, keep)
        keep[0, 1:] = False  # decode only the leading constituent of jet 0
        alone = tok.decode_features(ids, keep)
        same = torch.allclose(full[0, 0], alone[0, 0], atol=1e-6)
        assert same is (not conditional)


def test_paper_defaults():
    tok = VQVAE()
    assert tok.codebook_size == 8192 and tok.quantizer.dim == 4 and len(tok.enc_blocks) == 4
    assert tok.enc_in.out_features == 128 and tok.enc_blocks[0].attn.num_heads == 8
    assert tok.alpha == 10 and tok.quantizer.beta == 0.9 and tok.quantizer.replace_freq == 10
    assert tok.transform.max_particles == MAX_PARTICLES
    unc = VQVAE(conditional=False)
    assert [m.out_features for m in unc.encoder if isinstance(m, torch.nn.Linear)] == [128, 128, 128, 4]


@pytest.mark.parametrize("make", TOKENIZERS)
def test_checkpoint_round_trip(make, tmp_path):
    tok = make()
    points, vectors, mask = weaver_batch(seed=1)
    if isinstance(tok, VQVAE):  # a training step initialises the codebook (k-means) and moves weights
        tok.train()
        tok(points, None, vectors, mask)["loss"].backward()
    tok.eval()
    path = tmp_path / "tok.pt"
    save_model(tok, path)
    loaded = load_tokenizer(path)
    assert type(loaded) is type(tok) and loaded.config == tok.config
    a, b = tok.encode(points, vectors, mask), loaded.encode(points, vectors, mask)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for x, y in zip(tok.decode(*a), loaded.decode(*b)):
        assert torch.equal(x, y)


def test_checkpoint_errors(tmp_path):
    tok = VQVAE(**TINY)
    path = tmp_path / "tok.pt"
    save_model(tok, path)
    # other sizes: loading into a differently configured model names the option
    other = VQVAE(**{**TINY, "codebook_size": 64})
    with pytest.raises(CheckpointError, match="codebook_size: checkpoint 32 vs model 64"):
        other.load_state_dict(torch.load(path, weights_only=True))
    # the wrong kind
    save_model(BinnedTokenizer(), tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match="'binned'.*one of"):
        load_model(tmp_path / "b.pt", kinds={"vqvae"})
    # not a checkpoint at all, a missing file, a foreign state dict
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_tokenizer(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_tokenizer(tmp_path / "missing.pt")
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an omnijet-weaver checkpoint"):
        load_tokenizer(tmp_path / "foreign.pt")


def test_epoch_summary_usage_and_mass_resolution():
    """The logged epoch figures: codebook usage and perplexity of the summed code histogram
    (:func:`~omnijet_weaver.models.quantizer.codebook_usage`), and the resolution sqrt(<dm^2> - <dm>^2)."""
    from omnijet_weaver.weaver.loops import EpochStats

    tok = VQVAE(codebook_size=8, hidden_dim=16, num_blocks=1, num_heads=2).eval()
    stats = EpochStats()
    for counts, dm in (([4, 0, 0, 4, 0, 0, 0, 0], (2.0, 4.0)), ([0, 0, 0, 0, 4, 0, 0, 4], (-2.0, -1.0))):
        stats.add({"loss": (1.0, 1), "recon_loss": (0.5, 1), "vq_loss": (0.5, 1), "replaced_per_step": (0.0, 1),
                   "mass_diff": (sum(dm), 2), "mass_diff_sq": (sum(x * x for x in dm), 2),
                   "code_counts": torch.tensor(counts)})
    s = tok.epoch_summary(stats)
    assert s["code_usage"] == 0.5 and s["perplexity"] == pytest.approx(4.0, rel=1e-15)  # 4 codes, equally used
    dm = [2.0, 4.0, -2.0, -1.0]
    assert s["mass_bias_GeV"] == pytest.approx(0.75)
    assert s["mass_resolution_GeV"] == pytest.approx(float(torch.tensor(dm, dtype=torch.float64).std(unbiased=False)),
                                                     rel=1e-12)


def test_batch_stats_stay_on_the_device_and_sum_like_numbers():
    """batch_stats gives tensors (no host read per step); EpochStats sums them as it sums Python numbers, and the
    code histogram counts the real constituents' codes only."""
    from omnijet_weaver.weaver.loops import EpochStats

    torch.manual_seed(0)
    tok = VQVAE(codebook_size=8, hidden_dim=16, num_blocks=1, num_heads=2).train()
    on_device, as_numbers = EpochStats(), EpochStats()
    for seed in (1, 2):
        g = torch.Generator().manual_seed(seed)
        points = 0.2 * torch.rand(5, 2, 12, generator=g) - 0.1
        vectors = 1 + 50 * torch.rand(5, 4, 12, generator=g)
        mask = (torch.arange(12)[None, :] < torch.randint(1, 13, (5,), generator=g)[:, None]).float()[:, None]
        out = tok(points, torch.zeros(5, 4, 12), vectors, mask)
        batch = tok.batch_stats(out)
        assert all(isinstance(v[0], torch.Tensor) for k, v in batch.items() if k not in ("code_counts",
                                                                                         "replaced_per_step"))
        expected = torch.bincount(out["ids"][out["mask"]], minlength=8).double()
        assert torch.equal(batch["code_counts"], expected)
        on_device.add(batch)
        as_numbers.add({k: v if k == "code_counts" else (float(v[0]), float(v[1])) for k, v in batch.items()})
    assert on_device.means() == pytest.approx(as_numbers.means(), rel=1e-12)
    assert torch.equal(on_device.read().arrays["code_counts"], as_numbers.read().arrays["code_counts"])
    assert tok.epoch_summary(on_device) == pytest.approx(tok.epoch_summary(as_numbers), rel=1e-12)
