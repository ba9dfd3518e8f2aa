#!/usr/bin/env python
"""Benchmark jet sampling: KV cache vs full recomputation of the prefix, at the paper's model size.

Model: Backbone(codebook 8192, embed 256, 3 blocks, 8 heads, ff 1024) + NextTokenHead, random weights
(seeded), float32, on CPU by default. Two regimes, both paths measured in the same run:

(a) full length: the stop logit's bias is set to -1e4, so stop is never sampled and every jet runs the
    whole ``--max-particles`` (128) steps -- the reference's cost, which always runs 128 steps;
(b) natural stopping: random weights give stop a probability of ~1/8195 per step (almost never), so the
    stop bias is raised to give a per-step stop probability p such that the mean length of
    min(1 + Geometric(p), 128) is ``--mean-length`` (60); the bias is first estimated from the
    log-sum-exp of the other logits on random prefixes, then corrected once from a sampling run of
    ``--calibration-jets`` jets; the measured mean length is printed.

For each regime it prints jets/s of both paths, their ratio, and how many jets came out token-for-token
identical with the same seed (float32 noise can flip a draw that falls on a CDF boundary). Timings are
the best of ``--repeats`` runs (KV cache) and ``--repeats-full`` runs (full recomputation), after a
warm-up batch at full length (the first large allocations of a process are slow on CPU: page faults).
On a shared machine, other jobs make timings noisy (the load average is printed), and the cached path
(many small ops per step) suffers most from intra-op threads waiting for a descheduled core: there,
``--threads 1`` gives the fairer comparison.

KV-cache runs can be repeated over several ``--batch-size`` values, ``--precision fp32 bf16`` and ``--compile``.

    python scripts/bench_sampling.py --threads 1 --num-jets 512 --num-jets-full 256 --repeats 2
    python scripts/bench_sampling.py --threads 2 --only natural --num-jets 1024 --num-jets-full 64 \
        --batch-size 256 1024
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import time

import torch

from omnijet_weaver.constants import stop_token, vocab_size
from omnijet_weaver.models.gpt import Backbone, NextTokenHead
from omnijet_weaver.models.sampling import sample_tokens


def stop_probability_for_mean(mean_length: float, max_particles: int) -> float:
    """p such that E[min(1 + G, max)] = mean_length, G ~ Geometric(p) failures before the first stop."""

    def mean(p):
        # stop is banned at step 0, so L = min(1 + G, M) and P(L > k) = (1-p)^k for k >= 1:
        # E[L] = sum_{k=0}^{M-1} P(L > k) = 1 + sum_{k=1}^{M-1} (1-p)^k
        return 1.0 + sum((1 - p) ** k for k in range(1, max_particles))

    lo, hi = 1e-9, 1.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if mean(mid) > mean_length:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@torch.inference_mode()
def calibrate_stop_bias(backbone, head, codebook_size, p, max_particles, n=64, seed=0):
    """Stop bias giving a mean per-step stop probability ~p on random prefixes."""
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(0, codebook_size, (n, max_particles), generator=g)
    seq[:, 0] = codebook_size  # start
    seq = seq.to(next(backbone.parameters()).device)
    logits = head(backbone(seq))  # (n, T, V)
    stop = stop_token(codebook_size)
    others = torch.cat([logits[..., :codebook_size], logits[..., stop + 1 : stop + 1]], dim=-1)
    lse = torch.logsumexp(others, dim=-1).mean().item()
    raw = logits[..., stop].mean().item() - head.proj.bias[stop].item()  # stop logit without its bias
    return lse + math.log(p / (1 - p)) - raw


def best_time(fn, repeats):
    """(output of the last run, best wall time over ``repeats`` runs)."""
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def flop_ratio(lengths, args) -> float:
    """Multiply-accumulates of full recomputation over those of the KV cache for jets of these ``lengths``:
    the ratio two equally efficient implementations would reach. A step at prefix length l (start token + the
    constituents so far) costs the cached path one token through the blocks (4 d^2 + 2 d ff linear, 2 l d
    attention) and the head (d V); full recomputation l tokens through the blocks (attention 2 l^2 d, causal)
    and the head at the last position only."""
    d, ff, nb = args.embed_dim, args.ff_dim, args.num_blocks
    vocab = vocab_size(args.codebook_size)
    linear, head = 4 * d * d + 2 * d * ff, d * vocab
    steps = torch.clamp(lengths + 1, max=args.max_particles)  # a jet of n < max: n + 1 steps (the last is stop)
    full = cached = 0.0
    for n in steps.tolist():
        ls = torch.arange(1, n + 1, dtype=torch.float64)
        full += float((nb * (ls * linear + 2 * ls**2 * d) + head).sum())
        cached += float((nb * (linear + 2 * ls * d) + head).sum())
    return full / cached


def run(backbone, head, args, label):
    common = dict(
        codebook_size=args.codebook_size,
        max_particles=args.max_particles,
        temperature=1.0,
        top_k=None,
        generator=args.seed,
    )
    n_c, n_f = args.num_jets, args.num_jets_full
    print(f"[{label}]  (load average {os.getloadavg()[0]:.1f})", flush=True)
    full, t_f = best_time(lambda: sample_tokens(backbone, head, num_jets=n_f, use_cache=False,
                                                batch_size=args.batch_size_full, **common), args.repeats_full)
    rate_f = n_f / t_f
    print(f"  full prefix, fp32, batch {args.batch_size_full:5d}: {n_f:6d} jets in {t_f:8.2f} s = {rate_f:8.2f} "
          f"jets/s, mean length {full.lengths.float().mean():.1f}; FLOP ratio full/cached for these jets "
          f"{flop_ratio(full.lengths, args):.1f}x (the bound for equally efficient paths)", flush=True)
    rates = {}
    for batch_size in args.batch_size:
        for precision in args.precision:
            for compiled in ([False, True] if args.compile else [False]):
                kw = dict(batch_size=batch_size, precision=precision, compile=compiled, **common)
                if compiled:  # compile outside the timing (one small run at the same batch size)
                    t0 = time.perf_counter()
                    sample_tokens(backbone, head, num_jets=min(n_c, batch_size), **kw)
                    print(f"  (compiling took {time.perf_counter() - t0:.1f} s)")
                cached, t_c = best_time(lambda: sample_tokens(backbone, head, num_jets=n_c, **kw), args.repeats)
                rate_c = n_c / t_c
                # jet j uses its own uniforms: the first min(n_c, n_f) jets should be the same in both runs
                n = min(n_c, n_f)
                same = ((cached.codes[:n] == full.codes[:n]).all(1) & (cached.lengths[:n] == full.lengths[:n]))
                name = f"KV cache, {precision}{', compiled' if compiled else ''}, batch {batch_size:5d}"
                print(f"  {name}: {n_c:6d} jets in {t_c:8.2f} s = {rate_c:8.2f} jets/s, mean length "
                      f"{cached.lengths.float().mean():.1f};  {rate_c / rate_f:6.1f}x full;  identical to full: "
                      f"{int(same.sum())}/{n};  load average {os.getloadavg()[0]:.1f}", flush=True)
                rates[name] = rate_c
    return rates


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-jets", type=int, default=512, help="jets sampled with the KV cache")
    ap.add_argument("--num-jets-full", type=int, default=256, help="jets sampled with full recomputation")
    ap.add_argument("--batch-size", type=int, nargs="+", default=[512],
                    help="KV-cache runs: batch sizes (slots) to measure, space-separated")
    ap.add_argument("--batch-size-full", type=int, default=256, help="full-recomputation run: batch size")
    ap.add_argument("--precision", nargs="+", choices=["fp32", "bf16"], default=["fp32"],
                    help="KV-cache runs: precisions to measure (the full recomputation is fp32)")
    ap.add_argument("--compile", action="store_true", help="also measure the KV cache with compile=True")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--max-particles", type=int, default=128)
    ap.add_argument("--mean-length", type=float, default=60.0, help="target mean length for regime (b)")
    ap.add_argument("--codebook-size", type=int, default=8192)
    ap.add_argument("--embed-dim", type=int, default=256)
    ap.add_argument("--num-blocks", type=int, default=3)
    ap.add_argument("--num-heads", type=int, default=8)
    ap.add_argument("--ff-dim", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2, help="KV-cache timings: best of this many runs")
    ap.add_argument("--repeats-full", type=int, default=1, help="full-recompute timings: best of this many runs")
    ap.add_argument("--calibration-jets", type=int, default=512, help="jets of the run correcting the stop bias in (b)")
    ap.add_argument("--device", default="cpu", help="torch device of the model and the sampling (default cpu)")
    ap.add_argument("--only", choices=["full-length", "natural"], default=None, help="run one regime only")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
          f"model: codes {args.codebook_size}, embed {args.embed_dim}, {args.num_blocks} blocks, "
          f"{args.num_heads} heads, ff {args.ff_dim}")

    torch.manual_seed(0)
    backbone = Backbone(args.codebook_size, args.embed_dim, args.num_blocks, args.num_heads, args.ff_dim)
    backbone = backbone.to(args.device).eval()
    head = NextTokenHead(args.embed_dim, vocab_size(args.codebook_size)).to(args.device).eval()
    stop = stop_token(args.codebook_size)

    never = copy.deepcopy(head)
    with torch.no_grad():
        never.proj.bias[stop] = -1e4
    print(f"load average {os.getloadavg()[0]:.1f}; warming up ...", flush=True)
    warm = max(args.batch_size)
    sample_tokens(backbone, never, args.codebook_size, warm, batch_size=warm, max_particles=args.max_particles,
                  generator=12345)

    if args.only in (None, "full-length"):
        run(backbone, never, args, f"(a) full length: stop disabled, {args.max_particles} steps")

    if args.only in (None, "natural"):
        p = stop_probability_for_mean(args.mean_length, args.max_particles)
        natural = copy.deepcopy(head)
        bias = calibrate_stop_bias(backbone, head, args.codebook_size, p, args.max_particles)
        # one correction from a calibration run: shift the bias by the log-odds between target and measured p
        with torch.no_grad():
            natural.proj.bias[stop] = bias
        trial = sample_tokens(backbone, natural, args.codebook_size, args.calibration_jets,
                              batch_size=max(args.batch_size), max_particles=args.max_particles, generator=54321)
        mean_len = trial.lengths.float().mean().item()
        print(f"  calibration: stop bias {bias:.3f} -> mean length {mean_len:.1f} ({args.calibration_jets} jets)")
        p_meas = stop_probability_for_mean(mean_len, args.max_particles)
        bias += math.log(p / (1 - p)) - math.log(p_meas / (1 - p_meas))
        with torch.no_grad():
            natural.proj.bias[stop] = bias
        run(backbone, natural, args, f"(b) natural stopping: stop bias {bias:.2f} (target mean length "
            f"{args.mean_length:g})")


if __name__ == "__main__":
    main()
