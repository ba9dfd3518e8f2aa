"""Transformer building blocks shared by the tokenizer and the GPT backbone.

Shapes: ``x`` is (B, T, D) (batch, constituents or tokens, embedding); ``mask`` is (B, T) bool, True for
real entries. Padding never takes part in attention as a key; a padded query attends to itself only, so no
row is ever empty (no NaN for jets without constituents) and its output is discarded by the caller.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def attention_mask(mask, t_query: int, t_key: int, causal: bool, device):
    """Boolean (B|1, 1, Tq, Tk) mask, True where a query may attend to a key, or None when all may.

    Queries are the last ``t_query`` of the ``t_key`` positions (incremental decoding has t_query < t_key).
    """
    if mask is None and not causal:
        return None
    offset = t_key - t_query
    q_pos = torch.arange(t_query, device=device)[:, None] + offset
    k_pos = torch.arange(t_key, device=device)[None, :]
    allowed = (k_pos <= q_pos) if causal else torch.ones(t_query, t_key, dtype=torch.bool, device=device)
    allowed = allowed[None, None]
    if mask is not None:
        allowed = allowed & mask[:, None, None, :]
        allowed = allowed | (k_pos == q_pos)[None, None]  # a query always sees itself
    return allowed


def cache_attention_mask(positions, size: int):
    """Boolean (B, 1, 1, S) mask for one new query per row over a preallocated cache of ``size`` slots:
    row b sees the keys at cache positions ``0 .. positions[b]`` (its own included), not the stale ones after.

    Args:
        positions: (B,) long, the position of each row's new token in the cache.
        size: S, the cache length.
    """
    k_pos = torch.arange(size, device=positions.device)
    return (k_pos[None, :] <= positions[:, None])[:, None, None, :]


class SelfAttention(nn.Module):
    """Multi-head self-attention (``torch.nn.functional.scaled_dot_product_attention``) with an optional
    key/value cache for autoregressive decoding.

    Args:
        dim: embedding size D.
        num_heads: heads; D must be divisible by it.
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding size {dim} is not divisible by the number of heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, mask=None, causal: bool = False, cache: dict | None = None, positions=None):
        """
        Args:
            x: (B, T, D).
            mask: (B, T_total) bool, True for real keys, or None. With a growing cache, T_total counts cached
                keys.
            causal: hide future positions.
            cache: a dict for incremental decoding, updated in place. Two kinds:

                - growing (``positions`` None): holds ``k`` and ``v`` of earlier positions (B, H, S, D/H), or
                  nothing yet; the new keys and values are appended (``torch.cat``), T >= 1 new tokens.
                - preallocated (``positions`` given): ``k`` and ``v`` of fixed shape (B, H, S, D/H) (see
                  :func:`new_kv_cache`); T = 1 new token per row, written in place at ``positions[b]``, and
                  row b attends to cache positions ``0 .. positions[b]`` only (stale entries after are masked),
                  so a row can restart from position 0 by simply being overwritten. ``mask`` must be None.
            positions: (B,) long, the cache position of each row's new token (preallocated cache only).
        Returns:
            (B, T, D).
        """
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        if positions is not None:
            if cache is None or t != 1 or mask is not None:
                raise ValueError("positions need a preallocated cache, one new token per row and no mask")
            rows = torch.arange(b, device=positions.device)
            cache["k"][rows, :, positions] = k[:, :, 0].to(cache["k"].dtype)  # (index_put: ~3x a scatter_)
            cache["v"][rows, :, positions] = v[:, :, 0].to(cache["v"].dtype)
            k, v = cache["k"].to(q.dtype), cache["v"].to(q.dtype)
            # one query per row: the plain matmul-softmax-matmul (twice as fast as the fused kernels on CPU for
            # a single query, the same on GPU); stale cache entries after a row's position get no weight
            scores = (q @ k.transpose(-1, -2)).mul_(k.shape[-1] ** -0.5)  # (B, H, 1, S)
            scores.masked_fill_(~cache_attention_mask(positions, k.shape[2]), float("-inf"))
            y = scores.softmax(-1) @ v
            return self.proj(y.transpose(1, 2).reshape(b, t, d))
        if cache is not None:
            if "k" in cache:
                k = torch.cat([cache["k"], k], dim=2)
                v = torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        t_key = k.shape[2]
        if mask is None and causal and t == t_key:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            attn = attention_mask(mask, t, t_key, causal and t > 1, x.device)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


def new_kv_cache(batch_size: int, num_heads: int, length: int, head_dim: int, device=None, dtype=None) -> dict:
    """A preallocated key/value cache for :class:`SelfAttention` (``positions`` mode): ``k`` and ``v`` zeros of
    shape (batch_size, num_heads, length, head_dim) (zeros, not empty: masked stale entries must be finite)."""
    shape = (batch_size, num_heads, length, head_dim)
    return {"k": torch.zeros(shape, device=device, dtype=dtype), "v": torch.zeros(shape, device=device, dtype=dtype)}


class NormFormerBlock(nn.Module):
    """NormFormer block (Shleifer et al. 2021) as in the OmniJet-alpha tokenizer:
    ``x + LN(MHA(LN(x)))`` then ``x + MLP(x)`` with MLP = LN -> Linear -> SiLU -> Linear.

    Args:
        dim: embedding size.
        num_heads: attention heads.
        mlp_ratio: hidden size of the MLP in units of ``dim``.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm_in = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads)
        self.norm_attn = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, mlp_ratio * dim), nn.SiLU(), nn.Linear(mlp_ratio * dim, dim)
        )

    def forward(self, x, mask):
        """x: (B, T, D); mask: (B, T) bool. Padded positions are zeroed on output."""
        x = x + self.norm_attn(self.attn(self.norm_in(x), mask=mask))
        x = x + self.mlp(x)
        return x * mask.unsqueeze(-1)


def mlp(sizes, activation=nn.ReLU) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them (none after the last)."""
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)
