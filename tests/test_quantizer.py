"""VectorQuant: vqtorch's training rule, mask-aware and DDP-consistent."""

import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from omnijet_weaver.models.quantizer import VectorQuant, codebook_usage, kmeans, nearest_code, usage_stats

CENTRES = torch.tensor(
    [[0.0, 0.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0], [0.0, 3.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0],
     [0.0, 0.0, 0.0, 3.0], [3.0, 3.0, 0.0, 0.0], [0.0, 3.0, 3.0, 0.0], [3.0, 0.0, 0.0, 3.0]]
)


def clustered(b, l, centres=CENTRES, spread=0.05, seed=0):
    """(B, L, 4) latents around the given centres."""
    g = torch.Generator().manual_seed(seed)
    which = torch.randint(len(centres), (b, l), generator=g)
    return centres[which] + spread * torch.randn(b, l, 4, generator=g)


def brute_nearest(x, codebook):
    return ((x[:, None, :] - codebook[None]) ** 2).sum(-1).argmin(1)


def padded(z_real, lengths, pad_value=1e4):
    """Put the first lengths[i] latents of row i of z_real in a padded batch; padding holds pad_value."""
    b, l, d = z_real.shape
    mask = torch.arange(l)[None, :] < torch.tensor(lengths)[:, None]
    z = torch.where(mask[..., None], z_real, torch.full_like(z_real, pad_value))
    return z, mask


# --- nearest code ---------------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 40), k=st.integers(1, 30), seed=st.integers(0, 2**16), chunk=st.integers(1, 200))
def test_nearest_code_is_brute_force_nearest(n, k, seed, chunk):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g, dtype=torch.float64)
    codebook = torch.randn(k, 4, generator=g, dtype=torch.float64)
    assert torch.equal(nearest_code(x, codebook, chunk_elements=chunk), brute_nearest(x, codebook))


def test_forward_indices_are_nearest_under_transformed_codebook():
    torch.manual_seed(0)
    vq = VectorQuant(64, kmeans_init=False).eval()
    with torch.no_grad():
        vq.affine_scale.copy_(torch.tensor([0.1, -0.2, 0.3, 0.05]))
        vq.affine_bias.copy_(torch.tensor([0.5, 0.0, -0.5, 0.2]))
    z = torch.randn(5, 30, 4)
    out = vq(z)
    cb = vq.codebook_transformed().detach()
    assert torch.allclose(cb, (1 + 2.0 * vq.affine_scale) * vq.codebook + 2.0 * vq.affine_bias)
    dist = ((z.reshape(-1, 1, 4) - cb[None]) ** 2).sum(-1)
    chosen = dist.gather(1, out.indices.reshape(-1, 1)).squeeze(1)
    assert torch.allclose(chosen, dist.min(1).values, atol=1e-5)
    assert out.indices.shape == (5, 30) and out.indices.dtype == torch.long


# --- straight-through with synchronized update, loss, gradients --------------------------------------------------


def test_forward_value_is_code_and_gradients_follow_synchronized_update():
    torch.manual_seed(1)
    vq = VectorQuant(16, kmeans_init=False, sync_nu=0.5)
    z = torch.randn(3, 7, 4, requires_grad=True)
    out = vq(z)
    assert torch.allclose(out.z_q, vq.lookup(out.indices), atol=1e-6)  # the value is the nearest code
    w = torch.randn(3, 7, 4)
    (out.z_q * w).sum().backward()
    assert torch.allclose(z.grad, w)  # identity to the encoder
    expected = torch.zeros(16, 4).index_add_(0, out.indices.reshape(-1), 0.5 * w.reshape(-1, 4))
    assert torch.allclose(vq.codebook.grad, expected, atol=1e-6)  # nu times the upstream gradient, s = 0
    assert vq.affine_scale.grad.abs().sum() > 0 and vq.affine_bias.grad.abs().sum() > 0


def test_plain_straight_through_without_sync():
    vq = VectorQuant(16, kmeans_init=False, sync_nu=0.0)
    z = torch.randn(2, 5, 4, requires_grad=True)
    out = vq(z)
    out.z_q.sum().backward()
    assert torch.allclose(z.grad, torch.ones_like(z))
    assert vq.codebook.grad is None or vq.codebook.grad.abs().sum() == 0


def test_loss_value_and_gradients():
    torch.manual_seed(2)
    vq = VectorQuant(16, beta=0.9, kmeans_init=False, replace_freq=0)
    z = torch.randn(4, 6, 4, requires_grad=True)
    out = vq(z)
    zq = vq.lookup(out.indices).detach()
    assert torch.allclose(out.loss, ((z.detach() - zq) ** 2).mean(), atol=1e-6)  # mse per component
    out.loss.backward()
    assert torch.allclose(z.grad, 0.1 * 2 * (z.detach() - zq) / z.numel(), atol=1e-7)  # only (1 - beta) term
    for p in (vq.codebook, vq.affine_scale, vq.affine_bias):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_no_real_positions_gives_zero_loss_in_the_graph():
    vq = VectorQuant(8)
    z = torch.randn(2, 3, 4, requires_grad=True)
    out = vq(z, torch.zeros(2, 3, dtype=torch.bool))
    assert out.loss.item() == 0.0 and out.loss.requires_grad
    out.loss.backward()
    assert torch.count_nonzero(z.grad) == 0
    assert not vq.initialized  # no data: k-means waits for a batch with real latents
    assert out.usage.item() == 0.0 and out.perplexity.item() == 0.0


# --- k-means init ----------------------------------------------------------------------------------------------


def test_kmeans_init_puts_codes_on_the_data():
    torch.manual_seed(3)
    z = clustered(16, 32)
    random_cb = VectorQuant(8, affine_lr=2.0)
    with torch.no_grad():
        random_loss = random_cb.eval()(z).loss.item()
    torch.manual_seed(3)
    vq = VectorQuant(8)
    assert not vq.initialized
    loss = vq.train()(z).loss.item()
    assert vq.initialized
    assert loss < 0.05 * random_loss
    # every centre has a code within the spread
    dist = torch.cdist(CENTRES, vq.codebook_transformed().detach())
    assert dist.min(1).values.max() < 0.1
    # a second training batch does not re-initialize
    before = vq.codebook.detach().clone()
    vq(clustered(16, 32, centres=CENTRES + 10, seed=1))
    assert torch.allclose(vq.codebook, before)


def test_kmeans_init_respects_affine_transform():
    torch.manual_seed(4)
    vq = VectorQuant(8)
    with torch.no_grad():
        vq.affine_scale.fill_(0.2)
        vq.affine_bias.fill_(-0.3)
    vq.train()(clustered(16, 32))
    dist = torch.cdist(CENTRES, vq.codebook_transformed().detach())
    assert dist.min(1).values.max() < 0.1


def test_kmeans_with_fewer_points_than_codes_uses_every_point():
    torch.manual_seed(5)
    x = torch.randn(5, 4)
    c = kmeans(x, 12, noise=1e-3)
    assert c.shape == (12, 4)
    assert torch.cdist(x, c).min(1).values.max() < 0.05  # every point is represented
    assert torch.cdist(c, x).min(1).values.max() < 0.05  # every centroid is (near) a point
    assert len(torch.unique(c, dim=0)) == 12  # jittered duplicates


def test_eval_mode_changes_nothing():
    torch.manual_seed(6)
    vq = VectorQuant(8, replace_freq=2).eval()
    state = {k: v.clone() for k, v in vq.state_dict().items()}
    with torch.no_grad():
        for _ in range(5):
            out = vq(clustered(4, 8))
    assert out.num_replaced == 0
    for k, v in vq.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert not vq.initialized


def test_training_under_no_grad_works():
    vq = VectorQuant(8).train()
    with torch.no_grad():
        out = vq(clustered(4, 8))
    assert vq.initialized and out.loss.item() >= 0


# --- dead-code replacement ----------------------------------------------------------------------------------------


def _half_dead_quantizer(replace_freq=3):
    """8 codes: 0-3 on the first four centres, 4-7 far away (never nearest)."""
    vq = VectorQuant(8, kmeans_init=False, replace_freq=replace_freq, replace_noise=1e-3)
    with torch.no_grad():
        vq.codebook.copy_(torch.cat([CENTRES[:4], torch.full((4, 4), 50.0)]))
    return vq.train()


def test_dead_codes_are_replaced_by_live_latents():
    torch.manual_seed(7)
    vq = _half_dead_quantizer(replace_freq=3)
    with torch.no_grad():  # a non-trivial affine transform: the replaced C' must still be on the latents
        vq.affine_scale.fill_(0.1)
        vq.affine_bias.fill_(0.2)
        vq.codebook.copy_((torch.cat([CENTRES[:4], torch.full((4, 4), 50.0)]) - 0.4) / 1.2)
    for step in range(1, 4):
        z = clustered(4, 16, centres=CENTRES[:4], seed=step)
        out = vq(z)
        assert set(out.indices.unique().tolist()) <= {0, 1, 2, 3}
        assert out.num_replaced == vq.last_num_replaced == (4 if step == 3 else 0)
    cb = vq.codebook_transformed().detach()
    assert torch.allclose(cb[:4], CENTRES[:4], atol=1e-5)  # live codes untouched
    to_latent = torch.cdist(cb[4:], z.reshape(-1, 4)).min(1).values
    assert to_latent.max() < 0.05  # near a latent of the last batch (relative noise 1e-3)
    assert to_latent.min() > 0  # but with noise
    assert vq.unused_steps.tolist() == [0] * 8
    out = vq(clustered(4, 16, centres=CENTRES[:4], seed=9))
    assert out.num_replaced == 0


def test_replacement_disabled_with_zero_freq():
    vq = _half_dead_quantizer(replace_freq=0)
    for step in range(5):
        assert vq(clustered(4, 16, centres=CENTRES[:4], seed=step)).num_replaced == 0
    assert vq.unused_steps[4:].tolist() == [5] * 4


# --- padding never counts ----------------------------------------------------------------------------------------


def test_padding_excluded_from_loss_and_usage():
    torch.manual_seed(8)
    z_real = clustered(4, 10)
    lengths = [10, 3, 7, 1]
    z, mask = padded(z_real, lengths)
    packed = torch.cat([z_real[i, :n] for i, n in enumerate(lengths)])[None]
    vq = VectorQuant(8, kmeans_init=False, replace_freq=0).train()
    a, b = vq(z, mask), vq(packed)
    assert torch.allclose(a.loss, b.loss, atol=1e-6)
    assert torch.equal(a.indices[mask], b.indices[0])
    assert torch.equal(a.usage, b.usage) and torch.allclose(a.perplexity, b.perplexity)
    frac, ppl = vq.usage_stats(a.indices, mask)
    assert torch.equal(frac, a.usage) and torch.allclose(ppl, a.perplexity)
    z_in = z.clone().requires_grad_(True)
    vq(z_in, mask).loss.backward()
    assert torch.count_nonzero(z_in.grad[~mask]) == 0


def test_padding_excluded_from_kmeans():
    z_real = clustered(4, 10)
    lengths = [10, 3, 7, 1]
    z, mask = padded(z_real, lengths)
    packed = torch.cat([z_real[i, :n] for i, n in enumerate(lengths)])[None]
    torch.manual_seed(9)
    a = VectorQuant(8).train()
    torch.manual_seed(9)
    b = VectorQuant(8).train()
    torch.manual_seed(10)
    a(z, mask)
    torch.manual_seed(10)
    b(packed)
    assert torch.allclose(a.codebook, b.codebook)
    assert a.codebook.abs().max() < 10  # nowhere near the padding value 1e4


def test_padding_neither_keeps_codes_alive_nor_feeds_replacements():
    torch.manual_seed(11)
    vq = _half_dead_quantizer(replace_freq=2)
    with torch.no_grad():
        vq.codebook[7] = 1e4  # the padding's nearest code
    for step in range(2):
        z, mask = padded(clustered(4, 16, centres=CENTRES[:4], seed=step), [16, 5, 9, 2])
        out = vq(z, mask)
        assert (out.indices[~mask] == 7).all()
    assert out.num_replaced == 4  # code 7 counts as unused: only padding chose it
    cb = vq.codebook_transformed().detach()
    real = z[mask]
    assert torch.cdist(cb[4:], real).min(1).values.max() < 0.05  # all replaced from real latents


# --- helpers and state ------------------------------------------------------------------------------------------


def test_lookup_and_usage_stats():
    vq = VectorQuant(8, kmeans_init=False)
    idx = torch.tensor([[0, 1, 1, 5], [2, 2, 7, 7]])
    assert torch.equal(vq.lookup(idx), vq.codebook_transformed()[idx])
    assert vq.lookup(idx).shape == (2, 4, 4)
    frac, ppl = usage_stats(idx, 8)
    assert frac.item() == pytest.approx(5 / 8)
    p = torch.tensor([1, 2, 2, 1, 2]) / 8.0
    assert ppl.item() == pytest.approx(torch.exp(-(p * p.log()).sum()).item())
    mask = torch.tensor([[True, False, False, False], [False, False, False, False]])
    frac, ppl = vq.usage_stats(idx, mask)
    assert frac.item() == pytest.approx(1 / 8) and ppl.item() == pytest.approx(1.0)


def test_codebook_usage_by_hand_and_for_every_input_type():
    # k codes used equally often out of K: usage k / K, perplexity exactly k
    counts = [0, 3, 3, 0, 3, 3, 0, 0]
    assert codebook_usage(counts) == (0.5, pytest.approx(4.0, rel=1e-15))
    # frequencies (1/2, 1/4, 1/4): entropy 1.5 ln 2, perplexity 2^1.5
    usage, ppl = codebook_usage(np.array([2, 1, 1, 0]))
    assert usage == 0.75 and ppl == pytest.approx(2**1.5, rel=1e-15)
    assert isinstance(usage, float) and isinstance(ppl, float)
    # torch: 0-dim tensors in the counts' float dtype (float32 for integer counts), same numbers
    for t, dtype in ((torch.tensor([2, 1, 1, 0]), torch.float32), (torch.tensor([2.0, 1, 1, 0], dtype=torch.float64),
                                                                      torch.float64)):
        u, p = codebook_usage(t)
        assert u.dtype == p.dtype == dtype and u.ndim == p.ndim == 0
        assert u.item() == 0.75 and p.item() == pytest.approx(2**1.5, rel=1e-6)
    assert codebook_usage(np.zeros(5)) == (0.0, 0.0)  # nothing chosen
    rng = np.random.default_rng(0)
    c = rng.integers(0, 40, 512)
    p = c[c > 0] / c.sum()
    assert codebook_usage(c)[1] == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-13)
    assert codebook_usage(torch.from_numpy(c).double())[1].item() == codebook_usage(c)[1]


def test_state_dict_round_trip(tmp_path):
    torch.manual_seed(12)
    vq = VectorQuant(8, replace_freq=5).train()
    vq(clustered(4, 16))
    vq(clustered(4, 16, centres=CENTRES[:2], seed=3))
    path = tmp_path / "vq.pt"
    torch.save(vq.state_dict(), path)
    fresh = VectorQuant(8, replace_freq=5)
    assert not fresh.initialized
    fresh.load_state_dict(torch.load(path, weights_only=True))
    assert fresh.initialized
    assert torch.equal(fresh.codebook, vq.codebook)
    assert torch.equal(fresh.unused_steps, vq.unused_steps) and fresh.unused_steps.max() > 0
    before = fresh.codebook.detach().clone()
    fresh.train()(clustered(4, 16, seed=5))  # already initialized: no second k-means
    assert torch.allclose(fresh.codebook, before)


# --- torch.distributed: all ranks keep the same codebook -----------------------------------------------------------


def _ddp_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        vq = VectorQuant(16, replace_freq=2, replace_noise=1e-3).train()  # same start on both ranks
        torch.manual_seed(100 + rank)  # but different random streams, as on real ranks
        # different data and numbers of real latents per rank; rank 1 has padding with huge values
        z, mask = padded(clustered(3, 20, seed=rank), [20, 11, 4] if rank else [20, 20, 20])
        vq(z, mask)
        assert vq.initialized
        replaced = []
        for step in range(3):  # now only two centres: most codes die and are replaced
            z, mask = padded(clustered(2, 10, centres=CENTRES[:2], seed=10 * rank + step), [10, 3 + 5 * rank])
            replaced.append(vq(z, mask).num_replaced)
        torch.save({"codebook": vq.codebook.detach(), "unused": vq.unused_steps, "replaced": replaced},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not available")
def test_ddp_ranks_agree_on_init_and_replacement(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert sum(r0["replaced"]) > 0
    assert r0["replaced"] == r1["replaced"]
    assert torch.equal(r0["unused"], r1["unused"])
    assert torch.equal(r0["codebook"], r1["codebook"])
    assert r0["codebook"].abs().max() < 10  # padding stayed out on rank 1
