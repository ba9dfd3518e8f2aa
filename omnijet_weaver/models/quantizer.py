"""Vector quantizer of the OmniJet-alpha tokenizer, with vqtorch's training rule (SPEC "Models", "Quantizer").

The paper used ``vqtorch.nn.VectorQuant(feature_size=4, num_codes=K, beta=0.9, affine_lr=2, sync_nu=1,
replace_freq=10, kmeans_init=True)``. vqtorch is not installable, so this module re-implements what that
layer does in training, and fixes two things the reference gets wrong for jets and for DDP:

- **codebook and affine transform**: a raw codebook C (K, d) and learnable s, b (d,), both zero at start;
  the codes in use are ``C' = (1 + a*s) * C + a*b`` with a = ``affine_lr``.
- **nearest code** under C' in squared Euclidean distance (chunked, always in float32 or wider).
- **straight-through with synchronized update**: ``z_out = z + sg(z_q - z) + nu*z_q - sg(nu*z_q)``; the value
  is z_q, the gradient reaches z (identity) and the selected codes (times nu).
- **loss** ``(1 - beta) * mse(z, sg(z_q)) + beta * mse(sg(z), z_q)``, a mean over latent components like
  ``F.mse_loss`` (so the tokenizer's weight alpha keeps its meaning).
- **k-means init** of C' on the first training batch; **dead-code replacement**: a code unused for
  ``replace_freq`` consecutive training steps is reset to a random latent of the current batch plus noise
  of relative size ``replace_noise`` (vqtorch: ``rho * |v| * N(0, 1)`` with rho = 0.01), checked every step.

Unlike vqtorch, padded positions (``mask`` False) take no part in the loss, the k-means init, the usage
counts or the replacement pool; replaced codes are put where they are wanted in C' (vqtorch writes the raw
C and so ignores the affine transform); and under ``torch.distributed`` the k-means init is computed once,
on rank 0 over the latents gathered from all ranks, the replacement latents are drawn from rank 0's batch and
broadcast, and the usage counts are all-reduced every step, so all ranks keep identical codebooks and buffers.

After the k-means init, a training forward has fixed shapes and no host synchronisation (usage counts by
``index_add_``, masked sums, the replacement applied with ``torch.where`` wherever a code is dead), so it
neither stalls a GPU nor breaks a ``torch.compile`` graph.

Shapes: ``z`` is (B, L, d) (any leading shape works), ``mask`` is (B, L) bool, True for real constituents.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

#: Distance matrices are computed in chunks of at most this many entries (64 MB in float32).
CHUNK_ELEMENTS = 2**24
#: Under DDP at most this many latents per rank are gathered for the k-means init and the replacements.
MAX_GATHER_PER_RANK = 65536


@dataclass
class QuantizerOutput:
    """What :meth:`VectorQuant.forward` returns.

    Attributes:
        z_q: (B, L, d) the quantized latents with the straight-through / synchronized gradient.
        indices: (B, L) long, the nearest code of every position (padding included; ignore it there).
        loss: scalar, the commitment + codebook loss over real positions (0, still in the graph, if none).
        num_replaced: 0-dim long tensor, dead codes reset in this step (0 in eval mode).
        usage: scalar tensor, fraction of the K codes used by the real positions of this batch (this rank).
        perplexity: scalar tensor, exp(entropy) of the code usage of this batch (this rank).
    """

    z_q: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor
    num_replaced: torch.Tensor
    usage: torch.Tensor
    perplexity: torch.Tensor


# --- plain tensor functions ----------------------------------------------------------------------------------


@torch.no_grad()
def autocast_off(device: torch.device):
    """A context in which autocast is off for ``device``'s type (cuda, cpu, ...; a no-op for a type autocast
    does not know), so that what runs inside computes in the dtype of its tensors, whatever autocast (weaver's
    ``--use-amp``, a user's ``torch.autocast``) is active outside."""
    try:
        return torch.autocast(device_type=torch.device(device).type, enabled=False)
    except RuntimeError:  # a device type without autocast
        return contextlib.nullcontext()


def nearest_code(x: torch.Tensor, codebook: torch.Tensor, chunk_elements: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """Index of the nearest row of ``codebook`` for every row of ``x`` (squared Euclidean distance).

    Args:
        x: (N, d).
        codebook: (K, d).
    Returns:
        (N,) long. Computed in float32 (or float64 if either input is) with autocast off, chunked over N so
        that at most ``chunk_elements`` distances exist at a time.
    """
    dtype = torch.promote_types(torch.promote_types(x.dtype, codebook.dtype), torch.float32)
    x, codebook = x.to(dtype), codebook.to(dtype)
    rows = max(1, chunk_elements // max(1, codebook.shape[0]))
    c_sq = codebook.pow(2).sum(1)  # |x|^2 is the same for all codes of a row, so it is left out
    out = []
    with autocast_off(x.device):
        # a traced graph (ONNX export) cannot hold a data-dependent number of chunks: one chunk there
        traced = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
        for chunk in ([x] if traced else x.split(rows)):
            out.append(torch.addmm(c_sq, chunk, codebook.t(), alpha=-2).argmin(1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=x.device)


def usage_stats(indices: torch.Tensor, num_codes: int, mask: torch.Tensor | None = None):
    """How well the codebook is used by the real positions.

    Args:
        indices: (...) long code indices.
        num_codes: K.
        mask: (...) bool, True for real positions, or None (all real).
    Returns:
        (fraction of the K codes used, perplexity = exp(entropy of the usage distribution)), two 0-dim float
        tensors; both are 0 if there is no real position.
    """
    if mask is not None:
        indices = indices[mask]
    return codebook_usage(torch.bincount(indices.reshape(-1), minlength=num_codes).float())


def codebook_usage(counts):
    """How well a codebook is used, from its code counts (K,) (how often each code was chosen).

    Returns (fraction of the K codes used, perplexity = exp(entropy of the code frequencies)), both 0 when
    no code was chosen. The one definition of both figures (the quantizer, the tokenizer's epoch summary, the
    evaluation reports).

    A torch tensor gives two 0-dim tensors on its device in its float dtype (float32 for integer counts),
    without a host synchronisation; anything else (numpy array, list) gives two Python floats, computed in
    float64.
    """
    if not isinstance(counts, torch.Tensor):
        usage, perplexity = codebook_usage(torch.as_tensor(np.asarray(counts), dtype=torch.float64))
        return usage.item(), perplexity.item()
    counts = counts if counts.is_floating_point() else counts.float()
    total = counts.sum()
    p = counts / total.clamp(min=1)
    entropy = -(p * torch.log(p.clamp(min=1e-30))).sum()
    perplexity = torch.where(total > 0, entropy.exp(), torch.zeros_like(entropy))
    return (counts > 0).to(counts.dtype).mean(), perplexity


def _shuffled_rows(x: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` rows of ``x`` (M, d) in random order; each row once before any repeats (needs M > 0)."""
    repeats = -(-n // x.shape[0])
    order = torch.rand(repeats, x.shape[0], device=x.device).argsort(dim=1)  # `repeats` permutations
    return x[order.reshape(-1)[:n]]


def _jitter(x: torch.Tensor, noise: float) -> torch.Tensor:
    """``x + noise * |x| * N(0, 1)`` per row, as vqtorch's replacement noise."""
    return x + noise * x.norm(dim=-1, keepdim=True) * torch.randn_like(x)


@torch.no_grad()
def kmeans_plus_plus(x: torch.Tensor, k: int) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): each next seed is a data point drawn with probability
    proportional to its squared distance to the nearest seed so far. x: (N, d), N >= k > 0. Returns (k, d)."""
    n = x.shape[0]
    seeds = torch.empty(k, dtype=torch.long, device=x.device)
    seeds[0] = torch.randint(n, (), device=x.device)
    d2 = (x - x[seeds[0]]).pow(2).sum(1)
    for i in range(1, k):
        # inverse-CDF draw (no host synchronization); points on a seed have weight 0 and are never drawn
        cdf = d2.double().cumsum(0)
        u = torch.rand(1, dtype=cdf.dtype, device=x.device) * cdf[-1]
        seeds[i] = torch.searchsorted(cdf, u, right=True).clamp(max=n - 1)[0]
        d2 = torch.minimum(d2, (x - x[seeds[i]]).pow(2).sum(1))
    return x[seeds].clone()


@torch.no_grad()
def kmeans(x: torch.Tensor, k: int, iters: int = 10, noise: float = 1e-2) -> torch.Tensor:
    """Lloyd's k-means.

    Args:
        x: (N, d) data, N > 0.
        k: number of centroids.
        iters: Lloyd iterations.
        noise: relative jitter of the duplicated points when N < k.
    Returns:
        (k, d) centroids. With N >= k they start from k-means++ seeds (as vqtorch's torchpq k-means) and
        empty clusters keep their previous centroid; with N < k every point is taken at least once (shuffled, repeated) and jittered,
        without iterations (as vqtorch warns and does).
    """
    if x.shape[0] < k:
        return _jitter(_shuffled_rows(x, k), noise)
    centroids = kmeans_plus_plus(x, k)
    for _ in range(iters):
        assign = nearest_code(x, centroids)
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        centroids = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None].to(x.dtype), centroids)
    return centroids


# --- torch.distributed helpers (all are no-ops in a single process) ---------------------------------------------


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _gather_rows(x: torch.Tensor, max_rows: int) -> torch.Tensor:
    """Rows (N_r, d) of every rank, concatenated in rank order on every rank; at most ``max_rows`` random rows
    per rank. Ranks may hold different N_r (also 0): the sizes travel first, then rows padded to the largest.
    """
    if x.shape[0] > max_rows:
        x = x[torch.randperm(x.shape[0], device=x.device)[:max_rows]]
    if not _distributed():
        return x
    world = dist.get_world_size()
    size = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes = [int(s.item()) for s in sizes]
    padded = x.new_zeros(max(max(sizes), 1), x.shape[1])
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:n] for p, n in zip(parts, sizes)])


def _from_rank0(make, shape, like: torch.Tensor) -> torch.Tensor:
    """``make()`` evaluated on rank 0 (or in the single process) and broadcast to all ranks."""
    if not _distributed():
        return make()
    out = make().contiguous() if dist.get_rank() == 0 else like.new_empty(shape)
    dist.broadcast(out, src=0)
    return out


# --- the module ------------------------------------------------------------------------------------------------


class VectorQuant(nn.Module):
    """Vector quantizer with affine codebook, synchronized straight-through update, k-means init and
    dead-code replacement (vqtorch semantics, mask- and DDP-aware; see the module docstring).

    Args:
        num_codes: codebook size K.
        dim: latent size d.
        beta: weight of the codebook term; (1 - beta) weighs the commitment term.
        affine_lr: a, the learning-rate multiplier of the affine parameters.
        sync_nu: nu of the synchronized update (0 = plain straight-through).
        replace_freq: a code unused for this many consecutive training steps is replaced (0 = never).
        kmeans_init: set the codebook by k-means on the first training batch.
        kmeans_iters: Lloyd iterations of that k-means.
        replace_noise: relative noise added to a replacement (and to duplicated k-means seeds).

    Parameters: ``codebook`` (K, d), ``affine_scale`` s (d,), ``affine_bias`` b (d,).
    Buffers (in the state dict): ``initialized`` (bool, k-means init done), ``unused_steps`` (K,) long,
    training steps since each code was last used by a real position.
    """

    def __init__(self, num_codes: int, dim: int = 4, beta: float = 0.9, affine_lr: float = 2.0, sync_nu: float = 1.0,
                 replace_freq: int = 10, kmeans_init: bool = True, kmeans_iters: int = 10, replace_noise: float = 1e-2):
        super().__init__()
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        if num_codes < 1 or dim < 1:
            raise ValueError(f"need num_codes >= 1 and dim >= 1, got {num_codes} and {dim}")
        self.num_codes, self.dim = num_codes, dim
        self.beta, self.affine_lr, self.sync_nu = beta, affine_lr, sync_nu
        self.replace_freq, self.replace_noise = replace_freq, replace_noise
        self.kmeans_init, self.kmeans_iters = kmeans_init, kmeans_iters
        self.codebook = nn.Parameter(torch.randn(num_codes, dim))  # vqtorch: nn.Embedding, N(0, 1)
        self.affine_scale = nn.Parameter(torch.zeros(dim))
        self.affine_bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("unused_steps", torch.zeros(num_codes, dtype=torch.long))
        #: Number of codes replaced by the last training forward (a 0-dim tensor once it has trained).
        self.last_num_replaced = 0
        self._initialized_seen = False  # host copy of `initialized` once it is True (saves a sync per step)

    def _known_initialized(self) -> bool:
        """Whether the k-means init is done; the buffer is read on the host only until it is True."""
        if not self._initialized_seen:
            self._initialized_seen = bool(self.initialized)
        return self._initialized_seen

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._initialized_seen = False  # the loaded buffer decides again

    def extra_repr(self):
        return (
            f"num_codes={self.num_codes}, dim={self.dim}, beta={self.beta}, affine_lr={self.affine_lr}, "
            f"sync_nu={self.sync_nu}, replace_freq={self.replace_freq}, kmeans_init={self.kmeans_init}"
        )

    # --- the codebook in use ---

    def codebook_transformed(self) -> torch.Tensor:
        """C' = (1 + a*s) * C + a*b, (K, d), differentiable in C, s and b."""
        a = self.affine_lr
        return (1 + a * self.affine_scale) * self.codebook + a * self.affine_bias

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors C'[indices]: (...) long -> (..., d). For decoders given tokens."""
        return F.embedding(indices, self.codebook_transformed())

    def usage_stats(self, indices: torch.Tensor, mask: torch.Tensor | None = None):
        """(fraction of codes used, perplexity) over the real positions; see :func:`usage_stats`."""
        return usage_stats(indices, self.num_codes, mask)

    @torch.no_grad()
    def _set_codes(self, rows, target: torch.Tensor):
        """Make C'[rows] equal ``target`` by writing C[rows] = (target - a*b) / (1 + a*s). ``rows``: an index or
        slice with ``target`` of the selected shape, or a (K,) bool mask with ``target`` (K, d) (then written
        in place with ``torch.where``, without a host synchronisation)."""
        a = self.affine_lr
        raw = ((target - a * self.affine_bias) / (1 + a * self.affine_scale)).to(self.codebook.dtype)
        if isinstance(rows, torch.Tensor) and rows.dtype == torch.bool:
            self.codebook.copy_(torch.where(rows[:, None], raw, self.codebook))
        else:
            self.codebook[rows] = raw

    # --- training-time codebook maintenance ---

    @torch.no_grad()
    def _init_kmeans(self, real: torch.Tensor):
        """Set C' to the k-means centroids of the real latents (N, d) of all ranks; no-op if there are none."""
        pool = _gather_rows(real, MAX_GATHER_PER_RANK)
        if pool.shape[0] == 0:  # the same on all ranks: try again with the next batch
            return
        shape = (self.num_codes, self.dim)
        centroids = _from_rank0(lambda: kmeans(pool, self.num_codes, self.kmeans_iters, self.replace_noise),
                                shape, pool)
        self._set_codes(slice(None), centroids)
        self.initialized.fill_(True)
        self._initialized_seen = True

    @torch.no_grad()
    def _update_usage_and_replace(self, counts: torch.Tensor, latents: torch.Tensor, real: torch.Tensor):
        """Count a training step: codes with ``counts`` > 0 (K,) (summed over ranks) were used; codes unused for
        ``replace_freq`` steps get C' = a random real latent of this step (``latents`` (N, d) where ``real``
        (N,) bool) plus noise, each real latent once before any repeats. Fixed shapes and no host
        synchronisation: a K-row draw is made every step and applied where a code is dead (under DDP rank 0's
        draw, broadcast); with no real latent (rank 0's under DDP) nothing is replaced until the next step.
        Returns the number replaced, a 0-dim long tensor."""
        if _distributed():
            counts = counts.clone()
            dist.all_reduce(counts)
        self.unused_steps += 1
        self.unused_steps.masked_fill_(counts > 0, 0)
        if self.replace_freq <= 0:
            return torch.zeros((), dtype=torch.long, device=counts.device)
        n_real = real.sum()
        # real rows first, in random order (padding keys 2 > any uniform); dead code number i takes row i mod n_real
        order = torch.where(real, torch.rand(real.shape, device=real.device), 2.0).argsort()
        row = torch.arange(self.num_codes, device=real.device) % n_real.clamp(min=1)
        targets = _jitter(latents[order[row]].to(self.codebook.dtype), self.replace_noise)  # (K, d)
        go = (n_real > 0).reshape(1)
        if _distributed():  # rank 0's draw and its "any real latent?" for all ranks
            targets = targets.contiguous()
            dist.broadcast(targets, src=0)
            go = go.to(torch.uint8)
            dist.broadcast(go, src=0)
            go = go.bool()
        dead = (self.unused_steps >= self.replace_freq) & go
        # the i-th dead code (in code order) takes the i-th target, so a few dead codes get distinct latents
        targets = targets[(dead.cumsum(0) - 1).clamp(min=0)]
        self._set_codes(dead, targets)
        self.unused_steps.masked_fill_(dead, 0)
        return dead.sum()

    # --- forward ---

    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> QuantizerOutput:
        """Quantize.

        Args:
            z: (B, L, d) encoder latents.
            mask: (B, L) bool, True for real constituents; None = all real.
        Returns:
            :class:`QuantizerOutput` (z_q (B, L, d), indices (B, L), loss, num_replaced, usage, perplexity).

        In training mode this also maintains the codebook (k-means init on the first batch with real latents,
        usage counts, dead-code replacement), before the codes are used, so the returned z_q and loss belong
        to the updated codebook; replaced codes are never among this step's indices.
        """
        if z.shape[-1] != self.dim:
            raise ValueError(f"expected latents of size {self.dim} in the last dimension, got {tuple(z.shape)}")
        if mask is None:
            mask = torch.ones(z.shape[:-1], dtype=torch.bool, device=z.device)
        mask = mask.to(torch.bool)
        z_det = z.detach()
        if self.training and self.kmeans_init and not self._known_initialized():
            # padding never enters init, usage or replacement (one host sync, until the init is done)
            self._init_kmeans(z_det[mask].to(self.codebook.dtype))

        # from here on fixed shapes and no host synchronisation (the training step of a compiled model)
        with torch.no_grad():
            indices = nearest_code(z_det.reshape(-1, self.dim), self.codebook_transformed())
        indices = indices.view(z.shape[:-1])
        flat_mask = mask.reshape(-1)
        counts = torch.zeros(self.num_codes, dtype=torch.long, device=z.device)
        counts.index_add_(0, indices.reshape(-1), flat_mask.long())

        num_replaced = torch.zeros((), dtype=torch.long, device=z.device)
        if self.training:
            num_replaced = self._update_usage_and_replace(counts, z_det.reshape(-1, self.dim), flat_mask)
            self.last_num_replaced = num_replaced

        z_q = F.embedding(indices, self.codebook_transformed())  # (B, L, d); the graph starts here
        real = mask.unsqueeze(-1)
        # padded positions are zeroed by torch.where (not multiplied: a NaN there must not reach the loss)
        z_r, zq_r = torch.where(real, z, 0.0), torch.where(real, z_q, 0.0)
        denom = (flat_mask.sum() * self.dim).clamp(min=1)
        commitment = (z_r - zq_r.detach()).pow(2).sum() / denom
        codebook = (z_r.detach() - zq_r).pow(2).sum() / denom
        loss = (1 - self.beta) * commitment + self.beta * codebook

        nu = self.sync_nu
        z_out = z + (z_q - z).detach()
        if nu > 0:
            z_out = z_out + nu * z_q - (nu * z_q).detach()
        usage, perplexity = codebook_usage(counts.float())
        return QuantizerOutput(z_out, indices, loss, num_replaced, usage, perplexity)
