"""GPT backbone, next-token objective and sampling (tiny models, CPU, fast)."""

from __future__ import annotations

import copy

import pytest
import torch

from omnijet_weaver.constants import pad_token, start_token, stop_token, vocab_size
from omnijet_weaver.models.checkpoint import CheckpointError, load_model, save_model
from omnijet_weaver.models.gpt import (
    Backbone,
    GPTBlock,
    NextTokenHead,
    make_sequences,
    next_token_loss,
    summarize_stats,
)
from omnijet_weaver.models.sampling import SampledTokens, make_generator, pick_next, sample_tokens

K = 16  # codebook size of the tiny models
V = vocab_size(K)
START, STOP, PAD = start_token(K), stop_token(K), pad_token(K)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and lose a lot on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(seed=0, dtype=torch.float32, max_len=128):
    torch.manual_seed(seed)
    backbone = Backbone(K, embed_dim=32, num_blocks=2, num_heads=4, ff_dim=64, max_len=max_len).to(dtype).eval()
    head = NextTokenHead(32, V).to(dtype).eval()
    return backbone, head


def with_stop_bias(head, bias):
    head = copy.deepcopy(head)
    with torch.no_grad():
        head.proj.bias[STOP] = bias
    return head


def random_sequences(b=5, length=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, K, (b, length), generator=g)
    n = torch.randint(1, length + 1, (b,), generator=g)
    n[0] = length  # one full jet
    mask = torch.arange(length)[None] < n[:, None]
    return codes, mask


# --- backbone -----------------------------------------------------------------------------------------------


def test_block_is_post_norm():
    torch.manual_seed(0)
    block = GPTBlock(32, 4, 64).eval()
    x = torch.randn(2, 7, 32)
    a = block.attn(x, causal=True)
    h = block.norm1(x + a)
    expected = block.norm2(h + block.ff[2](torch.relu(block.ff[0](h))))
    torch.testing.assert_close(block(x), expected)
    assert not any(isinstance(m, torch.nn.Dropout) for m in block.modules())


def test_no_positional_encoding():
    backbone, _ = tiny(max_len=128)
    names = {n for n, _ in backbone.named_parameters()}
    assert not any("pos" in n for n in names)
    # only the token embedding is a per-id table; nothing is sized by the sequence length
    for n, p in backbone.named_parameters():
        assert 128 not in p.shape, n
    assert backbone.embed.weight.shape == (V, 32)
    # identical tokens give identical outputs at every position (with a positional encoding they would not)
    with torch.no_grad():
        h = backbone(torch.full((1, 20), 5))
    torch.testing.assert_close(h, h[:, :1].expand_as(h), atol=1e-5, rtol=1e-5)


def test_one_block_sees_the_prefix_as_a_set():
    """Without positional encoding, one causal block's last output is invariant to permuting earlier tokens.
    (With more blocks, earlier positions' own outputs depend on their order, so only one block is exact.)"""
    torch.manual_seed(0)
    backbone = Backbone(K, embed_dim=32, num_blocks=1, num_heads=4, ff_dim=64).eval()
    seq = torch.tensor([[START, 3, 7, 1, 12, 5, 9, 4]])
    perm = torch.tensor([[5, 9, 3, START, 12, 1, 7, 4]])
    with torch.no_grad():
        h1, h2 = backbone(seq), backbone(perm)
    torch.testing.assert_close(h1[:, -1], h2[:, -1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(h1[:, 1:-1], h2[:, 1:-1], atol=1e-3)  # ...but earlier positions differ


def test_causal():
    backbone, _ = tiny()
    seq = torch.randint(0, K, (3, 10))
    seq[:, 0] = START
    changed = seq.clone()
    changed[:, 6] = (changed[:, 6] + 1) % K
    with torch.no_grad():
        a, b = backbone(seq), backbone(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_padding_mask_matches_unmasked_for_right_padding():
    backbone, _ = tiny()
    seq, _, seq_mask = make_sequences(*random_sequences(), K)
    with torch.no_grad():
        masked, unmasked = backbone(seq, mask=seq_mask), backbone(seq)
    torch.testing.assert_close(masked[seq_mask], unmasked[seq_mask], atol=1e-5, rtol=1e-5)


def test_incremental_decoding_matches_full_forward():
    backbone, _ = tiny()
    seq = torch.randint(0, K, (4, 9))
    seq[:, 0] = START
    caches = backbone.new_caches()
    with torch.no_grad():
        full = backbone(seq)
        first = backbone(seq[:, :3], caches=caches)
        rest = [backbone(seq[:, t : t + 1], caches=caches) for t in range(3, 9)]
    torch.testing.assert_close(torch.cat([first, *rest], 1), full, atol=1e-5, rtol=1e-5)


def test_checkpoint_round_trip(tmp_path):
    backbone, _ = tiny()
    path = tmp_path / "bb.pt"
    save_model(backbone, path)
    loaded = load_model(path, kinds={"gpt_backbone"})
    assert isinstance(loaded, Backbone) and loaded.config == backbone.config
    seq = torch.tensor([[START, 1, 2, 3]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(seq), backbone(seq))
    other = Backbone(K, embed_dim=32, num_blocks=3, num_heads=4, ff_dim=64)
    with pytest.raises(CheckpointError, match="num_blocks"):
        other.load_state_dict(torch.load(path, weights_only=True))


# --- sequences and loss ---------------------------------------------------------------------------------------


def test_make_sequences_layout():
    codes = torch.tensor([[4, 5, 6], [7, 8, 9], [1, 2, 3]])
    mask = torch.tensor([[True, True, True], [True, False, False], [False, True, False]])
    seq, targets, seq_mask = make_sequences(codes, mask.unsqueeze(1).float(), K)  # weaver's (B, 1, L) float
    assert seq.tolist() == [
        [START, 4, 5, 6, STOP],
        [START, 7, STOP, PAD, PAD],
        [START, 2, STOP, PAD, PAD],  # a non-left-aligned constituent is moved to the front
    ]
    assert targets.tolist() == [row[1:] + [PAD] for row in seq.tolist()]
    assert seq_mask.tolist() == [[True] * 5, [True, True, True, False, False], [True, True, True, False, False]]
    assert seq.dtype == targets.dtype == torch.long and seq_mask.dtype == torch.bool


def test_loss_is_masked_cross_entropy():
    backbone, head = tiny()
    seq, targets, seq_mask = make_sequences(*random_sequences(), K)
    logits = head(backbone(seq))
    loss, stats = next_token_loss(logits, seq, seq_mask, return_stats=True)
    valid = seq_mask[:, 1:]
    manual = torch.nn.functional.cross_entropy(logits[:, :-1][valid], seq[:, 1:][valid])
    torch.testing.assert_close(loss, manual)
    torch.testing.assert_close(next_token_loss(logits[:, :-1], seq, seq_mask), manual)  # (B, T-1, V) accepted
    assert int(stats["count"]) == int(valid.sum()) == int((targets != PAD).sum())
    summary = summarize_stats(stats)
    assert summary["perplexity"] == pytest.approx(torch.exp(manual).item(), rel=1e-5)
    acc = (logits[:, :-1].argmax(-1)[valid] == seq[:, 1:][valid]).float().mean().item()
    assert summary["accuracy"] == pytest.approx(acc)
    loss.backward()
    assert backbone.embed.weight.grad is not None


def test_loss_ignores_tokens_after_stop():
    backbone, head = tiny()
    seq, _, seq_mask = make_sequences(*random_sequences(), K)
    garbage = torch.where(seq_mask, seq, torch.randint(0, V, seq.shape))
    assert not torch.equal(garbage, seq)
    with torch.no_grad():
        a = next_token_loss(head(backbone(seq)), seq, seq_mask)
        b = next_token_loss(head(backbone(garbage)), garbage, seq_mask)
        c = next_token_loss(head(backbone(garbage, mask=seq_mask)), garbage, seq_mask)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c, atol=1e-6, rtol=1e-5)


def test_training_decreases_loss():
    """A toy distribution: x_{i+1} = x_i + 1 (mod K), random first code and length."""
    backbone, head = tiny(seed=1)
    backbone.train(), head.train()
    opt = torch.optim.Adam([*backbone.parameters(), *head.parameters()], lr=3e-3)
    g = torch.Generator().manual_seed(0)

    def batch(b=32, length=10):
        first = torch.randint(0, K, (b, 1), generator=g)
        codes = (first + torch.arange(length)[None]) % K
        n = torch.randint(2, length + 1, (b,), generator=g)
        return make_sequences(codes, torch.arange(length)[None] < n[:, None], K)

    losses = []
    for _ in range(80):
        seq, _, seq_mask = batch()
        loss = next_token_loss(head(backbone(seq)), seq, seq_mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.6 * first, (first, last)


# --- sampling --------------------------------------------------------------------------------------------------


def check_jets(out: SampledTokens, n, max_particles):
    assert isinstance(out, SampledTokens)
    assert out.codes.shape == (n, max_particles) and out.lengths.shape == (n,)
    assert out.codes.dtype == out.lengths.dtype == torch.long
    assert ((out.lengths >= 1) & (out.lengths <= max_particles)).all()
    real = out.codes[out.mask]
    assert ((real >= 0) & (real < K)).all()  # never start, stop or pad inside a jet
    assert (out.codes[~out.mask] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    "seed,temperature,top_k", [(0, 1.0, None), (1, 0.7, None), (2, 1.5, 5), (3, 1.0, 3), (4, 0.5, 8)]
)
def test_cache_identical_to_full_recomputation(dtype, seed, temperature, top_k):
    backbone, head = tiny(seed=10 + seed, dtype=dtype)
    head = with_stop_bias(head, 1.0)  # lengths spread over 1..max_particles
    kw = dict(codebook_size=K, num_jets=40, batch_size=16, max_particles=24, temperature=temperature, top_k=top_k)
    cached = sample_tokens(backbone, head, generator=seed, use_cache=True, **kw)
    full = sample_tokens(backbone, head, generator=seed, use_cache=False, **kw)
    check_jets(cached, 40, 24)
    assert torch.equal(cached.codes, full.codes) and torch.equal(cached.lengths, full.lengths)
    assert cached.lengths.unique().numel() > 3


def test_jets_valid_and_special_tokens_never_sampled():
    backbone, head = tiny()
    # make start and pad the most likely tokens: they must still never appear
    biased = copy.deepcopy(head)
    with torch.no_grad():
        biased.proj.bias[START] = 20.0
        biased.proj.bias[PAD] = 20.0
    out = sample_tokens(backbone, biased, K, num_jets=50, batch_size=16, max_particles=16, generator=0)
    check_jets(out, 50, 16)
    assert len(out.to_lists()) == 50 and [len(x) for x in out.to_lists()] == out.lengths.tolist()


def count_forwards(backbone):
    calls = []
    backbone.register_forward_hook(lambda *a: calls.append(1))
    return calls


def test_stop_very_likely_gives_one_constituent_and_ends_early():
    backbone, head = tiny()
    calls = count_forwards(backbone)
    out = sample_tokens(backbone, with_stop_bias(head, 50.0), K, num_jets=20, batch_size=20, max_particles=30, generator=0)
    check_jets(out, 20, 30)
    assert (out.lengths == 1).all()  # stop is banned at the first step only
    assert len(calls) == 2  # the loop stopped once every jet had ended


@pytest.mark.parametrize("use_cache", [True, False])
def test_stop_never_gives_max_particles(use_cache):
    backbone, head = tiny()
    calls = count_forwards(backbone)
    out = sample_tokens(
        backbone, with_stop_bias(head, -1e4), K, num_jets=10, batch_size=4, max_particles=12,
        generator=0, use_cache=use_cache,
    )
    check_jets(out, 10, 12)
    assert (out.lengths == 12).all()
    assert len(calls) == 3 * 12  # 3 batches, max_particles forwards each


def test_seed_reproducibility():
    backbone, head = tiny()
    kw = dict(codebook_size=K, num_jets=30, batch_size=8, max_particles=20)
    a = sample_tokens(backbone, head, generator=5, **kw)
    b = sample_tokens(backbone, head, generator=5, **kw)
    c = sample_tokens(backbone, head, generator=6, **kw)
    d = sample_tokens(backbone, head, generator=torch.Generator().manual_seed(5), **kw)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.lengths, b.lengths)
    assert torch.equal(a.codes, d.codes)
    assert not torch.equal(a.codes, c.codes)
    torch.manual_seed(3)
    e = sample_tokens(backbone, head, **kw)
    torch.manual_seed(3)
    f = sample_tokens(backbone, head, **kw)
    assert torch.equal(e.codes, f.codes)


def test_fewer_jets_are_a_prefix_of_more():
    backbone, head = tiny()
    head = with_stop_bias(head, 1.0)
    kw = dict(codebook_size=K, batch_size=8, max_particles=20, generator=9)
    many = sample_tokens(backbone, head, num_jets=20, **kw)
    for n in (3, 8, 13):
        few = sample_tokens(backbone, head, num_jets=n, **kw)
        assert torch.equal(few.codes, many.codes[:n]) and torch.equal(few.lengths, many.lengths[:n])


def test_top_k_1_is_greedy():
    backbone, head = tiny()
    head = with_stop_bias(head, 1.0)
    kw = dict(codebook_size=K, num_jets=6, batch_size=3, max_particles=10, top_k=1)
    a = sample_tokens(backbone, head, generator=0, **kw)
    b = sample_tokens(backbone, head, generator=123, temperature=2.0, **kw)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.lengths, b.lengths)
    # all jets are the same greedy sequence; rebuild it by argmax
    assert (a.codes == a.codes[0]).all()
    seq = [START]
    with torch.no_grad():
        for step in range(10):
            logits = head(backbone(torch.tensor([seq]))[:, -1])[0]
            logits[[START, PAD] + ([STOP] if step == 0 else [])] = float("-inf")
            nxt = int(logits.argmax())
            if nxt == STOP:
                break
            seq.append(nxt)
    assert a.to_lists()[0] == seq[1:]


def test_pick_next_distribution_and_top_k():
    row = torch.linspace(-2.0, 1.0, V)  # distinct logits, increasing with the id
    row[START], row[PAD] = 9.0, 8.0  # the most likely, but banned
    row[STOP] = 0.9  # the most likely allowed token after the first step
    logits = row.repeat(20000, 1)
    u = torch.rand(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def frequencies(picks):
        return torch.bincount(picks, minlength=V).double() / len(picks)

    def expected(allowed, temperature=1.0):
        p = torch.zeros(V, dtype=torch.float64)
        p[allowed] = torch.softmax(row[allowed].double() / temperature, 0)
        return p

    codes = list(range(K))
    torch.testing.assert_close(frequencies(pick_next(logits, u, K, first=True)), expected(codes), atol=0.01, rtol=0)
    torch.testing.assert_close(
        frequencies(pick_next(logits, u, K, first=False, temperature=0.5)), expected(codes + [STOP], 0.5),
        atol=0.01, rtol=0,
    )
    top3 = [STOP, K - 1, K - 2]
    torch.testing.assert_close(
        frequencies(pick_next(logits, u, K, first=False, top_k=3)), expected(top3), atol=0.01, rtol=0
    )
    assert set(pick_next(logits, u, K, first=True, top_k=1).tolist()) == {K - 1}
    assert set(pick_next(logits, u, K, first=False, top_k=1).tolist()) == {STOP}
    torch.testing.assert_close(logits, row.repeat(20000, 1))  # the caller's logits are left alone


def test_generator_checks():
    assert make_generator(3).initial_seed() == 3
    g = torch.Generator()
    assert make_generator(g) is g
    backbone, head = tiny()
    with pytest.raises(ValueError, match="temperature"):
        sample_tokens(backbone, head, K, 2, temperature=0)
    with pytest.raises(ValueError, match="vocabulary"):
        sample_tokens(backbone, NextTokenHead(32, V + 1), K, 2)
    empty = sample_tokens(backbone, head, K, 0, max_particles=5)
    assert empty.codes.shape == (0, 5)
