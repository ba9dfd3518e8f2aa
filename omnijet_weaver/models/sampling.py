"""Autoregressive sampling of jets as token sequences (SPEC "Models": "Sampling").

:func:`sample_tokens` starts every sequence with the start token and samples until the stop token or
``max_particles`` constituents, in batches, with a KV cache (one forward of the newest token per step) or,
as the reference does, recomputing the whole prefix at every step (``use_cache=False``, kept for tests
and benchmarks). Finished sequences leave the batch (their cache rows are dropped too) and the loop ends as
soon as every sequence of the batch has ended.

Randomness: each step draws ``batch_size`` uniform numbers from a ``torch.Generator`` (one per batch row,
whether the row is still running or not, or even exists in a partial last batch) and picks the token by
inverse CDF on float64 probabilities. So, for a given seed and ``batch_size``, the jets of a smaller
``num_jets`` are the first jets of a larger one. The cached and the
full path therefore consume the same random stream and, for the same seed, give token-for-token identical
jets -- unless a draw falls within the float noise (~1e-6 relative in float32) of a CDF boundary, which
happens for about one draw in 10^6 (float32 models; never seen with float64 models).

Decoding the codes to constituents (frozen VQ-VAE decoder) is the caller's job.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from ..constants import MAX_PARTICLES, pad_token, start_token, stop_token, vocab_size

__all__ = ["SampledTokens", "sample_tokens", "make_generator", "pick_next", "check_sampling_args", "MIN_TEMPERATURE"]

#: Smallest sampling temperature: the logits are divided by it, and below this they may overflow (use top_k=1
#: for greedy sampling).
MIN_TEMPERATURE = 1e-6


def _whole(name: str, value, low: int) -> int:
    """``value`` as an int >= ``low`` (ints and numpy integers, not bools or floats), else ValueError."""
    import operator

    if isinstance(value, bool):
        raise ValueError(f"{name} must be a whole number of at least {low}, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be a whole number of at least {low}, got {value!r}") from None
    if value < low:
        raise ValueError(f"{name} must be a whole number of at least {low}, got {value!r}")
    return value


def check_sampling_args(num_jets, batch_size, temperature, top_k, max_particles=MAX_PARTICLES) -> tuple:
    """Check the sampling arguments before any work (a batch size of 0 would loop forever, a NaN temperature
    gives garbage tokens): returns ``(num_jets, batch_size, temperature, top_k, max_particles)`` or raises
    ValueError naming the argument. ``num_jets`` >= 0, ``batch_size`` >= 1, ``temperature`` finite and at least
    :data:`MIN_TEMPERATURE`, ``top_k`` None or >= 1, ``max_particles`` >= 1."""
    import math

    num_jets = _whole("num_jets", num_jets, 0)
    batch_size = _whole("batch_size", batch_size, 1)
    max_particles = _whole("max_particles", max_particles, 1)
    if top_k is not None:
        top_k = _whole("top_k", top_k, 1)
    try:
        if isinstance(temperature, (bool, str, bytes)):
            raise TypeError
        temperature = float(temperature)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}") from None
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature} (use top_k=1 for greedy "
                         f"sampling)")
    if temperature < MIN_TEMPERATURE:
        raise ValueError(f"temperature must be at least {MIN_TEMPERATURE:g}, got {temperature} (smaller ones overflow "
                         f"the logits; use top_k=1 for greedy sampling)")
    return num_jets, batch_size, temperature, top_k, max_particles


class SampledTokens(NamedTuple):
    """Sampled jets as code ids (on the CPU).

    Attributes:
        codes: (N, max_particles) long, code ids ``0 .. K-1``; jet i's constituents are
            ``codes[i, :lengths[i]]``, entries beyond are 0 (a valid code: always apply the mask).
        lengths: (N,) long, number of constituents, in ``1 .. max_particles``.
    """

    codes: torch.Tensor
    lengths: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """(N, max_particles) bool, True for real constituents."""
        return torch.arange(self.codes.shape[1])[None, :] < self.lengths[:, None]

    def to_lists(self) -> list[list[int]]:
        """One Python list of code ids per jet."""
        return [row[:n].tolist() for row, n in zip(self.codes, self.lengths.tolist())]


def make_generator(generator=None, device=None) -> torch.Generator:
    """A ``torch.Generator`` on ``device``.

    Args:
        generator: a ``torch.Generator`` (returned as is; it must live on ``device``'s type), an int seed, or
            None (a seed is drawn from torch's global RNG, so ``torch.manual_seed`` makes it reproducible).
        device: the device the random numbers are drawn on (default CPU).
    """
    device = torch.device("cpu" if device is None else device)
    if isinstance(generator, torch.Generator):
        if torch.device(generator.device).type != device.type:
            raise ValueError(f"the generator lives on {generator.device}, but sampling runs on {device}")
        return generator
    if generator is None:
        seed = int(torch.randint(0, 2**62, (), dtype=torch.int64).item())
    else:
        seed = int(generator)
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def pick_next(logits, u, codebook_size: int, first: bool, temperature: float = 1.0, top_k: int | None = None):
    """Choose the next token of each row by inverse CDF.

    Start and pad are never chosen; stop is not chosen when ``first`` (a jet has >= 1 constituent).

    Args:
        logits: (B, V) next-token logits (any float dtype; computed on in float64).
        u: (B,) uniform numbers in [0, 1) (float64).
        codebook_size: K.
        first: True at the first step (no constituent yet).
        temperature: logits are divided by it (> 0).
        top_k: keep only the k most likely allowed tokens (ties at the k-th value kept); None or 0 = all.
    Returns:
        (B,) long token ids.
    """
    logits = logits.to(torch.float64, copy=True)  # never modify the caller's tensor
    if temperature != 1.0:
        logits = logits / temperature
    banned = [start_token(codebook_size), pad_token(codebook_size)]
    if first:
        banned.append(stop_token(codebook_size))
    logits[:, banned] = float("-inf")
    if top_k:
        kth = torch.topk(logits, min(int(top_k), logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    # unnormalised CDF: exp(logits - max), summed up (the normalisation is folded into u * total)
    cdf = (logits - logits.amax(-1, keepdim=True)).exp_().cumsum_(-1)
    total = cdf[:, -1:]
    # first index with cdf > u * total; the cap keeps x < total, so a zero-probability tail is never reached
    x = torch.minimum(u.to(torch.float64)[:, None] * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, x, right=True).squeeze(1)


@torch.inference_mode()
def _sample_batch(backbone, head, codebook_size, n, batch_size, max_particles, temperature, top_k, g, use_cache, device):
    """Sample ``n <= batch_size`` jets; returns codes (n, max_particles) and lengths (n,) on ``device``.

    Every step draws ``batch_size`` uniforms, whatever ``n`` and however many rows still run, so row i's
    draws don't depend on the other rows: a partial last batch gives the same jets as a full one.
    """
    start, stop = start_token(codebook_size), stop_token(codebook_size)
    codes = torch.zeros(n, max_particles, dtype=torch.long, device=device)
    lengths = torch.full((n,), max_particles, dtype=torch.long, device=device)
    active = torch.arange(n, device=device)  # batch rows still running
    if use_cache:
        caches = backbone.new_caches()
        newest = torch.full((n, 1), start, dtype=torch.long, device=device)  # (B_active, 1)
    else:
        prefix = torch.empty(n, max_particles, dtype=torch.long, device=device)  # (B_active, <= max_particles)
        prefix[:, 0] = start
    for step in range(max_particles):  # step = number of constituents so far
        if use_cache:
            hidden = backbone(newest, caches=caches)[:, -1]
        else:
            hidden = backbone(prefix[:, : step + 1])[:, -1]
        logits = head(hidden)  # (B_active, V)
        if step == 0 and logits.shape[-1] != vocab_size(codebook_size):
            raise ValueError(
                f"the head gives {logits.shape[-1]} logits, but codebook size {codebook_size} means a "
                f"vocabulary of {vocab_size(codebook_size)}"
            )
        u = torch.rand(batch_size, generator=g, device=device, dtype=torch.float64)[active]
        nxt = pick_next(logits, u, codebook_size, step == 0, temperature, top_k)
        codes[active, step] = nxt
        stopped = nxt == stop
        lengths[active] = torch.where(stopped, step, lengths[active])
        if bool(stopped.any()):  # the one host sync per step: who is still running?
            keep = (~stopped).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            active, nxt = active[keep], nxt[keep]
            if use_cache:  # drop the finished rows from every cached tensor (keys, values)
                for cache in caches:
                    for key, value in cache.items():
                        if torch.is_tensor(value):
                            cache[key] = value.index_select(0, keep)
            else:
                prefix = prefix.index_select(0, keep)
        if use_cache:
            newest = nxt[:, None]
        elif step + 1 < max_particles:
            prefix[:, step + 1] = nxt
    # jets still running after max_particles constituents are ended there (lengths already max_particles)
    codes.masked_fill_(torch.arange(max_particles, device=device)[None, :] >= lengths[:, None], 0)
    return codes, lengths


def sample_tokens(
    backbone,
    head,
    codebook_size: int,
    num_jets: int,
    batch_size: int = 256,
    max_particles: int = MAX_PARTICLES,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator=None,
    use_cache: bool = True,
    device=None,
    progress: bool = False,
) -> SampledTokens:
    """Sample ``num_jets`` jets as code-id sequences.

    Each sequence starts with the start token; tokens are sampled until stop or until ``max_particles``
    constituents (then the jet is ended). Start and pad are never sampled, stop never as the first token,
    so every jet has 1 .. max_particles constituents.

    Args:
        backbone: :class:`~omnijet_weaver.models.gpt.Backbone` (anything with ``forward(tokens, caches=...)`` and
            ``new_caches()``), already on ``device``. Used as is (it has no dropout).
        head: next-token head, hidden (B, E) -> logits (B, V), V = ``vocab_size(codebook_size)``.
        codebook_size: K.
        num_jets: N (>= 0).
        batch_size: jets sampled together (>= 1).
        max_particles: most constituents per jet (>= 1).
        temperature: softmax temperature, finite, at least :data:`MIN_TEMPERATURE`.
        top_k: sample among the k most likely allowed tokens only (k >= 1); None = all. ``top_k=1`` is greedy.
            Bad values raise ValueError before any work (:func:`check_sampling_args`).
        generator: ``torch.Generator`` on the sampling device, an int seed, or None (seeded from torch's
            global RNG). The same seed (and ``batch_size``) gives the same jets, with or without the cache,
            and ``num_jets=n`` gives the first n jets of any larger ``num_jets``.
        use_cache: KV cache (one forward of the newest token per step); False recomputes the whole prefix
            each step (the reference behaviour; much slower).
        device: where to run; default: the device of ``backbone``'s parameters.
        progress: show a tqdm progress bar (in jets).
    Returns:
        :class:`SampledTokens` ``(codes (N, max_particles) long, lengths (N,) long)`` on the CPU.
    """
    num_jets, batch_size, temperature, top_k, max_particles = check_sampling_args(
        num_jets, batch_size, temperature, top_k, max_particles)
    if device is None:
        device = next(backbone.parameters()).device
    device = torch.device(device)
    g = make_generator(generator, device)
    all_codes, all_lengths = [], []
    with tqdm(total=num_jets, unit="jet", desc="sampling", disable=not progress) as bar:
        done = 0
        while done < num_jets:
            n = min(batch_size, num_jets - done)
            codes, lengths = _sample_batch(
                backbone, head, codebook_size, n, batch_size, max_particles, temperature, top_k, g, use_cache, device
            )
            all_codes.append(codes.cpu())
            all_lengths.append(lengths.cpu())
            done += n
            bar.update(n)
    if not all_codes:
        return SampledTokens(torch.zeros(0, max_particles, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    return SampledTokens(torch.cat(all_codes), torch.cat(all_lengths))
