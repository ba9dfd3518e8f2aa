"""Autoregressive sampling of jets as token sequences (SPEC "Models": "Sampling").

:func:`sample_tokens` starts every sequence with the start token and samples until the stop token or
``max_particles`` constituents. It keeps ``batch_size`` slots busy (continuous batching): when a jet ends,
its slot takes the next jet at once (its cache rows are overwritten from position 0), so the batch stays
full until fewer jets remain than slots; then the idle slots are dropped (the batch is compacted whenever
half of it is idle; not with ``compile=True``, which keeps one shape) and the loop ends with the last jet.
Two ways to get the next-token logits:

- KV cache (default): per block, keys and values (slots, heads, window, head dim), written in place at each
  slot's own position; the new token of a slot attends to the cache positions up to its own (the GPT has no
  positional encoding, so a position only matters through this mask). The window is the furthest slot's
  position rounded up to :data:`WINDOW_STEP`: the cache is resized (copied, contiguous) when the window moves,
  so a step reads only the positions in use (with ``compile=True``: max_particles positions allocated once,
  one shape to the end). One forward of the newest tokens per step, at
  fixed shapes and without host syncs (:func:`decode_step`), so ``compile=True`` can hand it to
  ``torch.compile``; the refill bookkeeping around it syncs with the host once per step.
- full recomputation of every slot's prefix at every step (``use_cache=False``, the reference behaviour,
  kept for tests and benchmarks).

``precision="bf16"`` runs the backbone and the head under ``torch.autocast(dtype=torch.bfloat16)`` (the
KV cache is then bf16 too); the token choice is always computed in float32 (float64 for a float64 model).

Randomness (the reproducibility rule): jets are admitted to the slots in index order, and when jet j is
admitted it draws its own ``max_particles`` float32 uniforms from the ``torch.Generator`` (the j-th chunk of
the generator's stream: one ``torch.rand(max_particles)`` per jet, in index order), one per step, used by
inverse CDF (:func:`pick_next`). A jet's tokens therefore depend only on the seed, its index and the model:
for a seed, jet j is the same whatever ``batch_size``, ``num_jets=n`` gives the first n jets of any larger
run, and the cached and the full path give token-for-token the same jets -- up to float noise: the logits
of a row differ in the last bits between batch sizes and between the two paths (other matrix shapes, other
summation orders), so a draw that falls within that noise (~1e-6 relative in float32) of a CDF boundary
can pick the neighbouring token, about one draw in 10^6 for float32 models (never seen with float64 models).
With ``precision="bf16"`` the noise is ~1e-2: bf16 jets are not the fp32 jets, nor exactly the same across
batch sizes or paths (still reproducible for the same seed, batch size and path).

Decoding the codes to constituents (frozen VQ-VAE decoder) is the caller's job.
"""

from __future__ import annotations

import contextlib
import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..constants import MAX_PARTICLES, class_token, pad_token, start_token, stop_token, vocab_size
from .gpt import NextTokenHead

__all__ = [
    "SampledTokens", "sample_tokens", "make_generator", "pick_next", "decode_step", "check_sampling_args",
    "check_precision", "check_guidance", "MIN_TEMPERATURE", "PRECISIONS", "WINDOW_STEP",
]

#: Smallest sampling temperature: the logits are divided by it, and below this they may overflow (use top_k=1
#: for greedy sampling).
MIN_TEMPERATURE = 1e-6

#: Precisions of the backbone and head during sampling (the token choice is always float32 or wider).
PRECISIONS = ("fp32", "bf16")

#: Sampling pads the head's output rows to a multiple of this (:func:`_aligned_head`).
HEAD_ALIGN = 16

#: The attention window of a cached step (the cache positions up to the furthest slot's) is rounded up to a
#: multiple of this, so that a run meets at most ``max_particles / WINDOW_STEP`` shapes.
WINDOW_STEP = 16


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


def _finite(name: str, value, bound: str, hint: str) -> float:
    """``value`` as a finite float (numbers, not bools or strings), else ValueError "``name`` must be a finite
    number ``bound``" with ``hint``; the caller checks the bound."""
    try:
        if isinstance(value, (bool, str, bytes)):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number {bound}, got {number} ({hint})")
    return number


def check_sampling_args(num_jets, batch_size, temperature, top_k, max_particles=MAX_PARTICLES) -> tuple:
    """Check the sampling arguments before any work (a batch size of 0 would loop forever, a NaN temperature
    gives garbage tokens): returns ``(num_jets, batch_size, temperature, top_k, max_particles)`` or raises
    ValueError naming the argument. ``num_jets`` >= 0, ``batch_size`` >= 1, ``temperature`` finite and at least
    :data:`MIN_TEMPERATURE`, ``top_k`` None or >= 1, ``max_particles`` >= 1."""
    num_jets = _whole("num_jets", num_jets, 0)
    batch_size = _whole("batch_size", batch_size, 1)
    max_particles = _whole("max_particles", max_particles, 1)
    if top_k is not None:
        top_k = _whole("top_k", top_k, 1)
    temperature = _finite("temperature", temperature, "> 0", "use top_k=1 for greedy sampling")
    if temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature} (use top_k=1 for greedy "
                         f"sampling)")
    if temperature < MIN_TEMPERATURE:
        raise ValueError(f"temperature must be at least {MIN_TEMPERATURE:g}, got {temperature} (smaller ones overflow "
                         f"the logits; use top_k=1 for greedy sampling)")
    return num_jets, batch_size, temperature, top_k, max_particles


def check_guidance(guidance, start_tokens=()) -> float | None:
    """The classifier-free guidance scale as a float, or None for none (None or 1: plain conditional sampling);
    ValueError unless finite and >= 0, or when given (not 1) without ``start_tokens`` (nothing to guide)."""
    if guidance is None:
        return None
    guidance = _finite("guidance", guidance, ">= 0", "1: plain conditional sampling")
    if guidance < 0:
        raise ValueError(f"guidance must be a finite number >= 0, got {guidance} (1: plain conditional sampling)")
    if guidance == 1.0:
        return None
    if start_tokens is None:
        raise ValueError("guidance needs class start tokens: it mixes conditional and unconditional logits, so it "
                         "applies only to jets generated by class")
    return guidance


def check_precision(precision) -> str:
    """``precision`` if it is one of :data:`PRECISIONS` ("fp32", "bf16"), else ValueError."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


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


def pick_next(logits, u, codebook_size: int, first, temperature: float = 1.0, top_k: int | None = None,
              inplace: bool = False):
    """Choose the next token of each row by inverse CDF (fixed shapes, no host sync: safe to compile).

    Start and pad are never chosen; stop is not chosen for a row at its first step (a jet has >= 1
    constituent).

    Args:
        logits: (B, V) next-token logits (any float dtype; computed on in float32, or float64 for float64
            logits), or (B, V') with V' > V: the logits of an aligned head (:func:`_aligned_head`), whose
            columns from V on are padding and never chosen.
        u: (B,) uniform numbers in [0, 1).
        codebook_size: K.
        first: bool for all rows, or (B,) bool: True for rows at their first step (no constituent yet).
        temperature: logits are divided by it (> 0).
        top_k: keep only the k most likely allowed tokens (ties at the k-th value kept); None or 0 = all.
        inplace: the caller hands ``logits`` over (they are overwritten, when already float32 or wider): no
            copy of the (B, V) logits, which at a vocabulary of 8195 costs as much as the rest of the choice.
    Returns:
        (B,) long token ids.
    """
    dtype = torch.promote_types(logits.dtype, torch.float32)
    logits = logits.to(dtype, copy=not inplace)  # never modify the caller's tensor unless handed over
    if temperature != 1.0:
        logits.div_(temperature)
    start, stop, pad = start_token(codebook_size), stop_token(codebook_size), pad_token(codebook_size)
    logits[:, start] = float("-inf")
    logits[:, pad:] = float("-inf")  # pad, and the padding columns of an aligned head (pad is the last token)
    if isinstance(first, bool):
        if first:
            logits[:, stop] = float("-inf")
    else:
        logits[:, stop] = logits[:, stop].masked_fill(first, float("-inf"))
    if top_k:
        kth = torch.topk(logits, min(int(top_k), logits.shape[-1]), dim=-1).values[:, -1:]
        logits.masked_fill_(logits < kth, float("-inf"))
    # unnormalised CDF: exp(logits - max), summed up (the normalisation is folded into u * total), in place
    cdf = logits.sub_(logits.amax(-1, keepdim=True)).exp_().cumsum_(-1)
    total = cdf[:, -1:]
    # first index with cdf > u * total; the cap keeps x < total, so a zero-probability tail is never reached
    x = torch.minimum(u.to(dtype)[:, None] * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, x, right=True).squeeze(1)


def _autocast(device: torch.device, precision: str):
    """bf16 autocast on ``device``'s type for ``precision="bf16"``, else nothing."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _guide(logits, guidance: float):
    """Classifier-free guidance: logits (2B, V), the conditional rows first and their unconditional twins after
    -> (B, V) ``uncond + guidance * (cond - uncond)``, in float32 or wider."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    cond, uncond = logits.chunk(2)
    return torch.lerp(uncond, cond, guidance) if guidance != 1.0 else cond


def _twin(tokens, positions, codebook_size: int):
    """(2B,) tokens: the slots' newest tokens, then their unconditional twins' (the start token at position 0,
    where a slot has its class start token; the same generated codes after)."""
    plain = torch.where(positions == 0, torch.full_like(tokens, start_token(codebook_size)), tokens)
    return torch.cat([tokens, plain])


def decode_step(backbone, head, tokens, positions, uniforms, caches, codebook_size: int, temperature: float = 1.0,
                top_k: int | None = None, precision: str = "fp32", guidance: float | None = None):
    """One sampling step over preallocated KV caches, at fixed shapes and without host syncs (what
    ``compile=True`` hands to ``torch.compile``).

    Args:
        backbone, head: as for :func:`sample_tokens`.
        tokens: (B,) long, the newest token of each slot (start at position 0).
        positions: (B,) long, its position = the number of constituents of the slot's jet so far.
        uniforms: (B, M) float32, the slot's jet's uniforms, one per step (M = max_particles).
        caches: ``backbone.new_caches(B, M)``, written in place at ``positions``.
        codebook_size, temperature, top_k: as for :func:`sample_tokens`.
        precision: "fp32", or "bf16" (backbone and head under bf16 autocast; the choice in float32).
        guidance: None, or the classifier-free guidance scale: then ``caches`` hold 2B rows, the slots' and
            their unconditional twins' (:func:`sample_tokens`).
    Returns:
        (B,) long, the next token of each slot (stop never at position 0, start and pad never).
    """
    with _autocast(tokens.device, precision):
        if guidance is None:
            hidden = backbone(tokens[:, None], caches=caches, positions=positions)[:, 0]
            logits = head(hidden)  # (B, V)
        else:
            twins = _twin(tokens, positions, codebook_size)
            hidden = backbone(twins[:, None], caches=caches, positions=positions.repeat(2))[:, 0]
            logits = _guide(head(hidden), guidance)
    u = uniforms.gather(1, positions[:, None])[:, 0]
    return pick_next(logits, u, codebook_size, positions == 0, temperature, top_k, inplace=True)


def _full_step(backbone, head, slot_codes, slot_start, positions, uniforms, codebook_size, temperature, top_k,
               precision, guidance=None):
    """The reference step: recompute every slot's whole prefix (its opening token ``slot_start`` (B,), its codes
    so far; with ``guidance``, also its unconditional twin's); returns (B,) long."""
    t = int(positions.max()) + 1  # the longest prefix (causal attention hides the rest of shorter ones)
    prefix = torch.cat([slot_start[:, None], slot_codes[:, : t - 1]], 1)  # (B, t)
    where = positions
    if guidance is not None:
        plain = prefix.clone()
        plain[:, 0] = start_token(codebook_size)
        prefix, where = torch.cat([prefix, plain]), positions.repeat(2)
    b = prefix.shape[0]
    with _autocast(slot_codes.device, precision):
        hidden = backbone(prefix)  # (B, t, E)
        hidden = hidden.gather(1, where.view(b, 1, 1).expand(b, 1, hidden.shape[-1]))[:, 0]
        logits = head(hidden) if guidance is None else _guide(head(hidden), guidance)
    u = uniforms.gather(1, positions[:, None])[:, 0]
    return pick_next(logits, u, codebook_size, positions == 0, temperature, top_k, inplace=True)


def _aligned_head(head):
    """``head`` as the sampler runs it: a :class:`~omnijet_weaver.models.gpt.NextTokenHead` (or a bare Linear)
    with its output rows padded with zeros to a multiple of :data:`HEAD_ALIGN`: (B, V') logits, V' >= V, whose
    padding columns (zero, finite) :func:`pick_next` never chooses (contiguous rows, unlike a cut-back view,
    which ``searchsorted`` would copy); any other head as it is.

    The head is the largest matrix product of a cached step, and a vocabulary of 8195 rows (odd) runs it at
    half the speed of 8208 rows on a CPU (GEMM kernels work on aligned blocks); on a GPU aligned shapes are
    the fast ones too. Both sampling paths use it, so they still give the same jets.
    """
    if type(head) is nn.Linear:
        proj = head
    elif type(head) is NextTokenHead and type(head.proj) is nn.Linear:
        proj = head.proj
    else:  # a head of its own: run as it is
        return head
    vocab = proj.out_features
    rows = -(-vocab // HEAD_ALIGN) * HEAD_ALIGN
    if rows == vocab:
        return head
    weight = torch.cat([proj.weight, proj.weight.new_zeros(rows - vocab, proj.in_features)])
    bias = None if proj.bias is None else torch.cat([proj.bias, proj.bias.new_zeros(rows - vocab)])
    return lambda hidden: F.linear(hidden, weight, bias)


class _WindowCaches:
    """The sampler's KV caches: per block ``k`` and ``v`` (rows, heads, window, head dim), contiguous, as views
    of two flat buffers per tensor allocated once (for ``rows`` x ``length`` positions).

    Attention reads the whole cache every step; on a CPU a contiguous cache of the positions in use is read
    2-4x faster than a strided view of a longer one, so :meth:`move` copies the cache into the other buffer at
    the new window (fresh allocations instead would cost more in page faults than the copy). Positions beyond
    the old window hold stale finite values: masked, like every position after a row's own.
    """

    def __init__(self, backbone, rows: int, length: int, window: int, device, dtype):
        shapes = [{key: (value.shape[1], value.shape[3]) for key, value in cache.items()}  # (heads, head dim)
                  for cache in backbone.new_caches(1, 1, device=device, dtype=dtype)]
        # per block and tensor two zeroed buffers (finite stale values); caches live in buffer ``self.which``
        self.buffers = [{key: [torch.zeros(rows * h * length * d, device=device, dtype=dtype) for _ in range(2)]
                         for key, (h, d) in block.items()} for block in shapes]
        self.which = 0
        self.caches = [{key: self._view(i, key, self.which, (rows, h, window, d)) for key, (h, d) in block.items()}
                       for i, block in enumerate(shapes)]

    def _view(self, i: int, key: str, which: int, shape) -> torch.Tensor:
        """Block ``i``'s tensor ``key`` of ``shape`` (rows, heads, window, head dim) at the front of buffer
        ``which``."""
        return self.buffers[i][key][which][: math.prod(shape)].view(shape)

    def move(self, window: int):
        """Resize every cache to ``window`` positions (the first ``min(old, window)`` kept)."""
        other = 1 - self.which
        for i, cache in enumerate(self.caches):
            for key, value in cache.items():
                rows, heads, old, dim = value.shape
                new = self._view(i, key, other, (rows, heads, window, dim))
                keep = min(old, window)
                new[:, :, :keep].copy_(value[:, :, :keep])
                cache[key] = new
        self.which = other

    def keep_rows(self, rows):
        """Keep only the cache rows ``rows`` (a (R,) long index), in that order."""
        other = 1 - self.which
        for i, cache in enumerate(self.caches):
            for key, value in cache.items():
                new = self._view(i, key, other, (len(rows), *value.shape[1:]))
                cache[key] = torch.index_select(value, 0, rows, out=new)
        self.which = other


def _draw_uniforms(g, n: int, max_particles: int, device) -> torch.Tensor:
    """(n, max_particles) float32: the uniforms of the next n jets, one ``torch.rand(max_particles)`` each, in
    jet order (so that jet j's numbers are the j-th chunk of the stream whatever the batch size: on the CPU
    ``torch.rand(n, M)`` gives the same numbers, on other devices it need not)."""
    if n == 0:
        return torch.zeros(0, max_particles, device=device)
    return torch.stack([torch.rand(max_particles, generator=g, device=device) for _ in range(n)])


def _check_head(backbone, head, codebook_size, device):
    """ValueError unless ``head`` gives ``vocab_size(codebook_size)`` logits (checked on one zero hidden state)."""
    width = getattr(backbone, "embed_dim", None)
    if width is None:
        return
    weight = next(head.parameters(), None)
    dtype = weight.dtype if weight is not None else torch.float32
    v = head(torch.zeros(1, width, device=device, dtype=dtype)).shape[-1]
    if v != vocab_size(codebook_size):
        raise ValueError(f"the head gives {v} logits, but codebook size {codebook_size} means a vocabulary of "
                         f"{vocab_size(codebook_size)}")


def _check_start_tokens(start_tokens, num_jets, backbone, codebook_size, device) -> torch.Tensor:
    """(N,) long opening tokens on ``device``: all the start token for None; else checked to be the start token
    or a class start token the backbone has (ValueError otherwise)."""
    start = start_token(codebook_size)
    if start_tokens is None:
        return torch.full((num_jets,), start, dtype=torch.long, device=device)
    starts = torch.as_tensor(start_tokens, dtype=torch.long).reshape(-1).to(device)
    if starts.numel() != num_jets:
        raise ValueError(f"got {starts.numel()} start tokens for {num_jets} jets")
    classes = getattr(backbone, "num_classes", 0)
    first, end = class_token(codebook_size, 0), class_token(codebook_size, classes)
    ok = (starts == start) | ((starts >= first) & (starts < end))
    if not bool(ok.all()):
        raise ValueError(f"start tokens must be the start token ({start}) or one of the backbone's {classes} class "
                         f"start tokens ({first} .. {end - 1})")
    return starts


@torch.inference_mode()
def _sample(backbone, head, codebook_size, num_jets, batch_size, max_particles, temperature, top_k, g, use_cache,
            device, precision, compile, bar, starts, guidance):
    """Continuous batching over ``min(batch_size, num_jets)`` slots; returns CPU codes (N, M), lengths (N,).
    ``starts``: (N,) long opening token of each jet, on ``device``; ``guidance``: None or the scale (each slot
    then has an unconditional twin: caches of twice the slots, the twins' rows after the slots')."""
    m = max_particles
    stop = stop_token(codebook_size)
    head = _aligned_head(head)
    codes = torch.zeros(num_jets, m, dtype=torch.long)
    lengths = torch.zeros(num_jets, dtype=torch.long)
    b = min(batch_size, num_jets)
    # per slot: its jet, that jet's uniforms, its newest token and position, its codes so far
    jet = torch.arange(b, device=device)
    uniforms = _draw_uniforms(g, b, m, device)  # (B, M)
    tokens = starts[:b].clone()  # each slot's newest token: its jet's opening token at position 0
    slot_start = starts[:b].clone()
    positions = torch.zeros(b, dtype=torch.long, device=device)
    slot_codes = torch.zeros(b, m, dtype=torch.long, device=device)
    alive = torch.ones(b, dtype=torch.bool, device=device)  # False: no jet left for this slot
    admitted, live = b, b
    # the host's copy of each slot's position (kept from the one sync per step): the attention window
    host_positions, host_alive = np.zeros(b, dtype=np.int64), np.ones(b, dtype=bool)
    if use_cache:
        cache_dtype = torch.bfloat16 if precision == "bf16" else next(backbone.parameters()).dtype
        # the cache holds the window's positions only (contiguous, resized as the window moves: 2-4x faster to
        # read than a strided view of the whole cache); compiled, the whole cache at a fixed shape
        caches = _WindowCaches(backbone, b if guidance is None else 2 * b, m, m if compile else min(m, WINDOW_STEP),
                               device, cache_dtype)
        # compiled: fixed shapes to the end (no compaction, the whole cache attended), so the step compiles once
        step = torch.compile(decode_step, dynamic=False) if compile else decode_step
    while live:
        if use_cache:
            # attend to the cache up to the furthest slot only (rounded up to WINDOW_STEP positions, so that
            # few shapes occur): the cache is what a step reads most, and the positions beyond are masked anyway
            window = m if compile else min(m, -(-(int(host_positions.max()) + 1) // WINDOW_STEP) * WINDOW_STEP)
            if caches.caches[0]["k"].shape[2] != window:
                caches.move(window)
            nxt = step(backbone, head, tokens, positions, uniforms, caches.caches, codebook_size, temperature, top_k,
                       precision, guidance)
        else:
            nxt = _full_step(backbone, head, slot_codes, slot_start, positions, uniforms, codebook_size,
                             temperature, top_k, precision, guidance)
        slot_codes.scatter_(1, positions[:, None], nxt[:, None])
        stopped = nxt == stop
        ended = alive & (stopped | (positions == m - 1))
        length = positions + (~stopped).long()  # stop at position p: p constituents; else p + 1
        tokens, positions = nxt, torch.where(alive, positions + 1, 0)  # idle slots stay at position 0
        done = ended.nonzero().squeeze(1)  # the one host sync per step: which jets have ended?
        host_positions[host_alive] += 1
        if done.numel() == 0:
            continue
        host_done = done.cpu().numpy()
        host_positions[host_done] = 0  # refilled slots restart at 0, idle ones stay there
        finished = jet[done].cpu()
        codes[finished] = slot_codes[done].cpu()
        lengths[finished] = length[done].cpu()
        bar.update(done.numel())
        refill = min(done.numel(), num_jets - admitted)
        if refill:  # the next jets, in index order, take the first finished slots
            new = done[:refill]
            jet[new] = torch.arange(admitted, admitted + refill, device=device)
            uniforms[new] = _draw_uniforms(g, refill, m, device)
            slot_start[new] = starts[admitted : admitted + refill]
            admitted += refill
        if refill < done.numel():  # no jet left for the other slots
            alive[done[refill:]] = False
            host_alive[host_done[refill:]] = False
            live -= done.numel() - refill
        tokens[done], positions[done] = slot_start[done], 0  # restart at 0 (idle slots too: harmless, ignored)
        if not compile and admitted == num_jets and 0 < live <= tokens.shape[0] // 2:  # half idle: drop them
            keep, slots = alive.nonzero().squeeze(1), alive.numel()
            jet, uniforms, tokens, positions, slot_codes, alive, slot_start = (
                x[keep] for x in (jet, uniforms, tokens, positions, slot_codes, alive, slot_start))
            host_keep = keep.cpu().numpy()
            host_positions, host_alive = host_positions[host_keep], host_alive[host_keep]
            if use_cache:
                rows = keep if guidance is None else torch.cat([keep, keep + slots])  # and the twins
                caches.keep_rows(rows)
    codes.masked_fill_(torch.arange(m)[None, :] >= lengths[:, None], 0)
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
    precision: str = "fp32",
    compile: bool = False,
    start_tokens=None,
    guidance: float | None = None,
) -> SampledTokens:
    """Sample ``num_jets`` jets as code-id sequences.

    Each sequence starts with the start token; tokens are sampled until stop or until ``max_particles``
    constituents (then the jet is ended). Start and pad are never sampled, stop never as the first token,
    so every jet has 1 .. max_particles constituents. ``batch_size`` slots run together; a slot whose jet
    has ended takes the next jet at once (continuous batching, see the module docstring).

    Args:
        backbone: :class:`~omnijet_weaver.models.gpt.Backbone` (anything with ``forward(tokens, caches=...,
            positions=...)``, ``new_caches(batch_size, length, device, dtype)`` and ``embed_dim``), already on
            ``device``. Used as is (it has no dropout).
        head: next-token head, hidden (B, E) -> logits (B, V), V = ``vocab_size(codebook_size)``.
        codebook_size: K.
        num_jets: N (>= 0).
        batch_size: jets sampled together (>= 1); the KV cache holds batch_size x max_particles positions.
        max_particles: most constituents per jet (>= 1).
        temperature: softmax temperature, finite, at least :data:`MIN_TEMPERATURE`.
        top_k: sample among the k most likely allowed tokens only (k >= 1); None = all. ``top_k=1`` is greedy.
            Bad values raise ValueError before any work (:func:`check_sampling_args`).
        generator: ``torch.Generator`` on the sampling device, an int seed, or None (seeded from torch's
            global RNG). Reproducibility rule: jet j uses the j-th chunk of ``max_particles`` uniforms of the
            stream, so for a seed jet j is the same whatever ``batch_size``, with or without the cache, and
            ``num_jets=n`` gives the first n jets of any larger ``num_jets`` (up to float noise: see the
            module docstring; with ``precision="bf16"`` only for the same batch size and path).
        use_cache: KV cache (one forward of the newest tokens per step); False recomputes every prefix at each
            step (the reference behaviour; much slower).
        device: where to run; default: the device of ``backbone``'s parameters.
        progress: show a tqdm progress bar (in jets).
        precision: "fp32" (default) or "bf16": the backbone and head under ``torch.autocast`` bf16 (cache in
            bf16); the token choice is float32 either way.
        compile: run the decode step (:func:`decode_step`, KV cache only) through ``torch.compile``: the
            first call compiles (seconds to a minute), then each step is one fused graph.
        start_tokens: None (every jet opens with the start token) or (N,) long, the opening token of each jet:
            the start token or a class start token (:func:`~omnijet_weaver.constants.class_token`) of a
            class-conditional backbone. It is an input only: it does not change the reproducibility rule.
        guidance: classifier-free guidance scale w (finite, >= 0; needs ``start_tokens``): the next token is
            drawn from ``uncond + w * (cond - uncond)`` of the logits with the jet's opening token (cond) and
            with the plain start token (uncond, the same generated codes), both from one forward of twice the
            slots. w = 1 (or None) is plain conditional sampling, w = 0 unconditional, w > 1 sharpens the
            class; a jet opened by the plain start token is unchanged by it. Same reproducibility rule.
    Returns:
        :class:`SampledTokens` ``(codes (N, max_particles) long, lengths (N,) long)`` on the CPU.
    """
    num_jets, batch_size, temperature, top_k, max_particles = check_sampling_args(
        num_jets, batch_size, temperature, top_k, max_particles)
    precision = check_precision(precision)
    guidance = check_guidance(guidance, start_tokens)
    if device is None:
        device = next(backbone.parameters()).device
    device = torch.device(device)
    g = make_generator(generator, device)
    with torch.inference_mode():
        _check_head(backbone, head, codebook_size, device)
    if num_jets == 0:
        return SampledTokens(torch.zeros(0, max_particles, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    starts = _check_start_tokens(start_tokens, num_jets, backbone, codebook_size, device)
    with tqdm(total=num_jets, unit="jet", desc="sampling", disable=not progress) as bar:
        codes, lengths = _sample(backbone, head, codebook_size, num_jets, batch_size, max_particles, temperature,
                                 top_k, g, use_cache, device, precision, bool(compile), bar, starts, guidance)
    return SampledTokens(codes, lengths)
