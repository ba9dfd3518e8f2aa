"""The sampler: preallocated KV cache, continuous batching, per-jet randomness, precision, compiled step
(tiny models, CPU, fast)."""

from __future__ import annotations

import copy

import pytest
import torch
from test_gpt import PAD, START, STOP, K, V, one_thread  # noqa: F401 (one_thread: the module's autouse fixture)
from test_gpt import tiny as tiny_gpt

from omnijet_weaver.models.sampling import decode_step, pick_next, sample_tokens


def tiny(seed=0, dtype=torch.float32, stop_bias=1.0):
    """The tiny GPT of test_gpt, with a stop bias that spreads the lengths over 1 .. max_particles."""
    backbone, head = tiny_gpt(seed, dtype)
    with torch.no_grad():
        head.proj.bias[STOP] = stop_bias
    return backbone, head


def same(a, b) -> bool:
    return torch.equal(a.codes, b.codes) and torch.equal(a.lengths, b.lengths)


def check_valid(out, n, max_particles):
    assert out.codes.shape == (n, max_particles) and out.lengths.shape == (n,)
    assert ((out.lengths >= 1) & (out.lengths <= max_particles)).all()
    real = out.codes[out.mask]
    assert ((real >= 0) & (real < K)).all()  # never start, stop or pad inside a jet
    assert (out.codes[~out.mask] == 0).all()


def count_forwards(backbone):
    calls = []
    backbone.register_forward_hook(lambda *a: calls.append(1))
    return calls


# --- the preallocated cache ------------------------------------------------------------------------------------


def test_preallocated_cache_matches_full_forward_with_restarts():
    """Rows at different positions, one of them restarting from 0 over stale entries: each new token's hidden
    state equals the full forward of that row's own prefix."""
    backbone, _ = tiny()
    seqs = [torch.randint(0, K, (9,)) for _ in range(3)]
    for s in seqs:
        s[0] = START
    caches = backbone.new_caches(3, 9)
    assert caches[0]["k"].shape == (3, 4, 9, 8)
    # row 0 runs 0..8; row 1 starts 3 steps late; row 2 runs 0..4 then restarts a new sequence at 0
    restart = torch.randint(0, K, (9,))
    restart[0] = START
    with torch.no_grad():
        for step in range(9):
            pos = torch.tensor([step, max(step - 3, 0), step if step < 5 else step - 5])
            tok = torch.stack([seqs[0][pos[0]], seqs[1][pos[1]], (seqs[2] if step < 5 else restart)[pos[2]]])
            h = backbone(tok[:, None], caches=caches, positions=pos)[:, 0]
            for row, prefix in enumerate([seqs[0], seqs[1], seqs[2] if step < 5 else restart]):
                expected = backbone(prefix[None, : int(pos[row]) + 1])[0, -1]
                torch.testing.assert_close(h[row], expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="preallocated"):
        backbone(tok[:, None], positions=pos)


# --- the reproducibility rule ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("seed,temperature,top_k", [(0, 1.0, None), (1, 0.7, 5), (2, 1.5, 3)])
def test_cached_continuous_batching_equals_full_recomputation(dtype, seed, temperature, top_k):
    backbone, head = tiny(seed=20 + seed, dtype=dtype)
    kw = dict(codebook_size=K, num_jets=30, max_particles=20, temperature=temperature, top_k=top_k, generator=seed)
    cached = sample_tokens(backbone, head, batch_size=4, use_cache=True, **kw)  # many refills
    full = sample_tokens(backbone, head, batch_size=30, use_cache=False, **kw)  # one batch, no refill
    check_valid(cached, 30, 20)
    assert same(cached, full)
    assert cached.lengths.unique().numel() > 3


def test_jet_j_is_the_same_for_every_batch_size():
    backbone, head = tiny(seed=3)
    kw = dict(codebook_size=K, num_jets=40, max_particles=24, generator=11)
    ref = sample_tokens(backbone, head, batch_size=64, **kw)
    for batch_size in (1, 3, 7):
        assert same(sample_tokens(backbone, head, batch_size=batch_size, **kw), ref), batch_size
    assert same(sample_tokens(backbone, head, batch_size=7, use_cache=False, **kw), ref)


def test_fewer_jets_are_the_first_jets_of_more():
    backbone, head = tiny(seed=4)
    kw = dict(codebook_size=K, max_particles=20, generator=9)
    many = sample_tokens(backbone, head, num_jets=25, batch_size=6, **kw)
    for n, batch_size in ((1, 6), (5, 6), (13, 6), (13, 64), (7, 2)):
        few = sample_tokens(backbone, head, num_jets=n, batch_size=batch_size, **kw)
        assert torch.equal(few.codes, many.codes[:n]) and torch.equal(few.lengths, many.lengths[:n])


def test_jet_j_uses_the_jth_chunk_of_the_stream():
    """Jet j's uniforms are the j-th torch.rand(max_particles) of the generator: replaying them by hand on jet 2
    with a full forward per step gives the sampler's jet 2."""
    backbone, head = tiny(seed=5)
    m = 12
    out = sample_tokens(backbone, head, K, num_jets=4, batch_size=2, max_particles=m, generator=7)
    g = torch.Generator().manual_seed(7)
    u = [torch.rand(m, generator=g) for _ in range(4)][2]
    seq = [START]
    with torch.no_grad():
        for step in range(m):
            logits = head(backbone(torch.tensor([seq]))[:, -1])
            nxt = int(pick_next(logits, u[step : step + 1], K, step == 0))
            if nxt == STOP:
                break
            seq.append(nxt)
    assert out.to_lists()[2] == seq[1:]


def test_rand_chunks_are_consecutive_draws_on_cpu():
    """The property the rule relies on (the sampler draws per jet anyway): on the CPU, torch.rand(k, M) is k
    consecutive torch.rand(M)."""
    g = torch.Generator().manual_seed(3)
    block = torch.rand(5, 17, generator=g)
    g = torch.Generator().manual_seed(3)
    assert torch.equal(block, torch.stack([torch.rand(17, generator=g) for _ in range(5)]))


# --- continuous batching --------------------------------------------------------------------------------------


def jet_steps(lengths, m):
    """Forwards each jet needs: ``length + 1`` (its last step picks stop), or ``m`` if it reached max_particles."""
    return [n if n == m else n + 1 for n in lengths.tolist()]


def test_finished_slots_are_refilled():
    """2 slots, 10 jets of spread lengths: with refills, fewer forwards than batch-by-batch sampling (which runs
    each batch of 2 until its longer jet ends), and about half the jets' steps (both slots always busy)."""
    backbone, head = tiny(seed=6, stop_bias=2.0)
    m = 16
    calls = count_forwards(backbone)
    out = sample_tokens(backbone, head, K, num_jets=10, batch_size=2, max_particles=m, generator=1)
    check_valid(out, 10, m)
    steps = jet_steps(out.lengths, m)
    per_batch = sum(max(steps[i : i + 2]) for i in range(0, 10, 2))
    assert len(calls) < per_batch, (steps, len(calls), per_batch)
    # both slots busy until the last jet is admitted, then at most the longest jet's steps (the tail)
    assert sum(steps) / 2 <= len(calls) <= sum(steps) / 2 + max(steps)


def test_the_batch_stays_full_while_jets_remain():
    """12 jets on 4 slots: full-batch forwards until the last jet is admitted (that is, until 8 jets have
    ended), then the idle slots are dropped (the batch shrinks, never grows back)."""
    backbone, head = tiny(seed=7)
    m = 10
    shapes = []
    backbone.register_forward_hook(lambda module, args, out: shapes.append(out.shape[0]))
    out = sample_tokens(backbone, head, K, num_jets=12, batch_size=4, max_particles=m, generator=2)
    check_valid(out, 12, m)
    steps = jet_steps(out.lengths, m)
    full = shapes.count(4)
    assert shapes[:full] == [4] * full and sorted(shapes, reverse=True) == shapes
    assert full >= sum(sorted(steps)[:8]) / 4  # 8 jets ended (at the least, the 8 shortest) on a full batch
    assert min(shapes) < 4  # the tail ran on a smaller batch
    assert sum(shapes) >= sum(steps)  # every step of every jet had a slot


def test_lengths_stop_and_special_tokens():
    backbone, head = tiny(seed=8)
    biased = copy.deepcopy(head)
    with torch.no_grad():
        biased.proj.bias[START] = 20.0
        biased.proj.bias[PAD] = 20.0
    out = sample_tokens(backbone, biased, K, num_jets=50, batch_size=8, max_particles=16, generator=0)
    check_valid(out, 50, 16)
    # stop very likely: it is never first, so every jet has exactly one constituent
    out = sample_tokens(backbone, tiny(seed=8, stop_bias=50.0)[1], K, num_jets=20, batch_size=3, max_particles=9,
                        generator=0)
    check_valid(out, 20, 9)
    assert (out.lengths == 1).all()
    # stop never: every jet runs to max_particles
    out = sample_tokens(backbone, tiny(seed=8, stop_bias=-1e4)[1], K, num_jets=7, batch_size=3, max_particles=9,
                        generator=0)
    assert (out.lengths == 9).all()
    # max_particles 1: one constituent each
    out = sample_tokens(backbone, head, K, num_jets=5, batch_size=2, max_particles=1, generator=0)
    check_valid(out, 5, 1)


def test_top_k_1_is_the_argmax_continuation():
    backbone, head = tiny(seed=9)
    out = sample_tokens(backbone, head, K, num_jets=5, batch_size=2, max_particles=10, top_k=1, generator=3)
    seq = [START]
    with torch.no_grad():
        for step in range(10):
            logits = head(backbone(torch.tensor([seq]))[:, -1])[0]
            logits[[START, PAD] + ([STOP] if step == 0 else [])] = float("-inf")
            nxt = int(logits.argmax())
            if nxt == STOP:
                break
            seq.append(nxt)
    assert out.to_lists() == [seq[1:]] * 5


def test_pick_next_per_row_first():
    logits = torch.zeros(4, V)
    logits[:, STOP] = 50.0  # stop is by far the most likely
    first = torch.tensor([True, False, True, False])
    picks = pick_next(logits, torch.full((4,), 0.5), K, first)
    assert (picks[first] < K).all() and (picks[~first] == STOP).all()
    assert pick_next(logits.bfloat16(), torch.full((4,), 0.5), K, first).dtype == torch.long


# --- precision and compile ----------------------------------------------------------------------------------------


def test_bf16_gives_valid_jets_and_fp32_is_unchanged():
    backbone, head = tiny(seed=10)
    kw = dict(codebook_size=K, num_jets=20, batch_size=6, max_particles=16, generator=4)
    fp32 = sample_tokens(backbone, head, **kw)
    bf16 = sample_tokens(backbone, head, precision="bf16", **kw)
    check_valid(bf16, 20, 16)
    assert same(sample_tokens(backbone, head, precision="fp32", **kw), fp32)
    assert same(sample_tokens(backbone, head, precision="bf16", **kw), bf16)  # reproducible
    assert backbone.embed.weight.dtype == torch.float32  # the model is left alone
    check_valid(sample_tokens(backbone, head, precision="bf16", use_cache=False, **kw), 20, 16)
    for bad in ("fp16", "BF16", None, 16):
        with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
            sample_tokens(backbone, head, precision=bad, **kw)


def _compile_works() -> bool:
    try:
        f = torch.compile(lambda x: x * 2 + 1, dynamic=False)
        return bool(torch.equal(f(torch.ones(3)), torch.full((3,), 3.0)))
    except Exception:  # no C compiler, unsupported Python, ...
        return False


def test_compiled_step_gives_the_eager_tokens():
    if not _compile_works():
        pytest.skip("torch.compile cannot run here")
    backbone, head = tiny(seed=11)
    kw = dict(codebook_size=K, num_jets=12, batch_size=4, max_particles=10, generator=5)
    eager = sample_tokens(backbone, head, **kw)
    compiled = sample_tokens(backbone, head, compile=True, **kw)
    assert same(compiled, eager)
    # the step alone, one call, against eager on the same cache state
    with torch.inference_mode():
        caches_a, caches_b = backbone.new_caches(3, 10), backbone.new_caches(3, 10)
        tokens, positions = torch.full((3,), START), torch.zeros(3, dtype=torch.long)
        uniforms = torch.rand(3, 10, generator=torch.Generator().manual_seed(0))
        step = torch.compile(decode_step, dynamic=False)
        a = step(backbone, head, tokens, positions, uniforms, caches_a, K)
        b = decode_step(backbone, head, tokens, positions, uniforms, caches_b, K)
        assert torch.equal(a, b)
        torch.testing.assert_close(caches_a[0]["k"], caches_b[0]["k"])


def test_aligned_head_gives_the_head_logits_from_a_padded_matrix():
    from omnijet_weaver.models.sampling import HEAD_ALIGN, _aligned_head

    _, head = tiny()
    assert head.proj.out_features % HEAD_ALIGN  # the tiny vocabulary is not aligned: the padding is exercised
    hidden = torch.randn(5, head.proj.in_features)
    fast = _aligned_head(head)
    assert fast is not head
    out = fast(hidden)
    v = head.proj.out_features
    assert out.shape[0] == 5 and out.shape[1] % HEAD_ALIGN == 0 and out.shape[1] > v
    torch.testing.assert_close(out[:, :v], head(hidden))
    assert (out[:, v:] == 0).all()  # padding: finite, and never chosen
    u = torch.full((5,), 0.999999)
    assert (pick_next(out.clone(), u, K, first=False) < v).all()
    other = torch.nn.Sequential(head.proj)  # not a NextTokenHead: used as it is
    assert _aligned_head(other) is other


def test_window_caches_move_keeps_the_positions_and_keep_rows_the_rows():
    from omnijet_weaver.models.sampling import _WindowCaches

    backbone, _ = tiny()
    caches = _WindowCaches(backbone, rows=3, length=8, window=2, device="cpu", dtype=torch.float32)
    k = caches.caches[0]["k"]
    assert k.shape[0] == 3 and k.shape[2] == 2 and k.is_contiguous()
    k.copy_(torch.randn_like(k))
    before = k.clone()
    caches.move(6)
    grown = caches.caches[0]["k"]
    assert grown.shape[2] == 6 and grown.is_contiguous()
    assert torch.equal(grown[:, :, :2], before) and torch.isfinite(grown).all()
    caches.move(1)
    assert torch.equal(caches.caches[0]["k"], before[:, :, :1])
    caches.keep_rows(torch.tensor([2, 0]))
    assert torch.equal(caches.caches[0]["k"], before[[2, 0], :, :1])
