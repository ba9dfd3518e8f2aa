"""The GPT backbone of OmniJet-alpha, its next-token head, and the next-token objective.

Pieces (SPEC "Models": "GPT backbone", "Heads"):

- :class:`GPTBlock` -- one post-norm transformer block (causal self-attention, feed-forward), no dropout.
- :class:`Backbone` -- token embedding (vocabulary = codes + start + stop + pad, plus one start token per
  class for a class-conditional model), **no positional encoding**, ``num_blocks`` blocks. Registered as
  checkpoint kind ``"gpt_backbone"``.
- :class:`NextTokenHead` -- one Linear from the hidden state to logits over the vocabulary.
- :func:`make_sequences` -- per-constituent code ids + mask -> ``(start, x1 .. xn, stop, pad ...)``.
- :func:`next_token_loss` -- masked cross-entropy (the reference trained on padding; we don't), with
  token accuracy and perplexity on request (:func:`summarize_stats`).

The whole generative model (which also holds the frozen tokenizer as submodule ``tokenizer``) is assembled
by the lead elsewhere: it holds a :class:`Backbone` as ``self.backbone`` and a :class:`NextTokenHead` as
``self.head``; the tagger holds the same ``Backbone`` as ``self.backbone``, so ``backbone.*`` keys of a
generative checkpoint load into the tagger. Sampling lives in :mod:`omnijet_weaver.models.sampling`.

Shapes: B = batch, L = max constituents of the batch, T = sequence length (L + 2 for a full sequence),
E = embedding size, V = vocabulary size = ``vocab_size(codebook_size)`` = codebook_size + 3.

Token ids (:mod:`omnijet_weaver.constants`): codes ``0 .. K-1``, start ``K``, stop ``K+1``, pad ``K+2``; a
class-conditional model adds the class start tokens ``K+3 .. K+2+C`` (inputs only).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..constants import MAX_PARTICLES, pad_token, start_token, stop_token, vocab_size
from .checkpoint import Configurable, register
from .layers import SelfAttention, new_kv_cache

#: The size options of :class:`Backbone` (shared by the generative model and the tagger, whose backbones must
#: match to load each other's weights).
BACKBONE_OPTIONS = ("embed_dim", "num_blocks", "num_heads", "ff_dim")

__all__ = [
    "BACKBONE_OPTIONS",
    "GPTBlock",
    "Backbone",
    "NextTokenHead",
    "make_sequences",
    "next_token_loss",
    "summarize_stats",
]


class GPTBlock(nn.Module):
    """Post-norm transformer block, exactly as in OmniJet-alpha::

        x = LN1(x + Attn(x))                     # causal multi-head self-attention
        x = LN2(x + Linear2(ReLU(Linear1(x))))  # feed-forward

    No dropout. Attention is always causal.

    Args:
        dim: embedding size E.
        num_heads: attention heads (E must be divisible by it).
        ff_dim: hidden size of the feed-forward network.
    """

    def __init__(self, dim: int, num_heads: int, ff_dim: int):
        super().__init__()
        self.attn = SelfAttention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_dim), nn.ReLU(), nn.Linear(ff_dim, dim))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x, mask=None, cache: dict | None = None, positions=None):
        """
        Args:
            x: (B, T, E).
            mask: (B, T_total) bool, True for real tokens, or None (all real). With a growing cache, T_total
                counts the cached positions too.
            cache: a dict with this block's cached keys/values (see :class:`~omnijet_weaver.models.layers.SelfAttention`),
                updated in place; None for a full forward.
            positions: (B,) long cache positions of the new tokens (T = 1), for a preallocated cache.
        Returns:
            (B, T, E).
        """
        x = self.norm1(x + self.attn(x, mask=mask, causal=True, cache=cache, positions=positions))
        return self.norm2(x + self.ff(x))


@register
class Backbone(Configurable):
    """GPT backbone: token embedding, no positional encoding, ``num_blocks`` post-norm causal blocks.

    Without positional encoding, a position's output depends on the *set* of earlier tokens and on its own
    token only (causal attention is the only thing that tells positions apart); this is the paper's choice.

    Args:
        codebook_size: K, the tokenizer's number of codes; the vocabulary is K + 3 (start, stop, pad).
        embed_dim: embedding size E (paper: 256).
        num_blocks: number of blocks (paper: 3).
        num_heads: attention heads (paper: 8).
        ff_dim: feed-forward hidden size (paper: 1024).
        max_len: the largest number of constituents per jet the model is meant for (informational: without
            positional encoding nothing in the weights depends on it; sampling callers may use it as limit).
        num_classes: C, class start tokens of a class-conditional model (0: unconditional, the paper's). They
            are embedding rows after pad (:func:`~omnijet_weaver.constants.class_token`). Stored in the
            configuration only when > 0, so unconditional checkpoints keep their description.
    """

    kind = "gpt_backbone"

    def __init__(self, codebook_size: int, embed_dim: int = 256, num_blocks: int = 3, num_heads: int = 8,
                 ff_dim: int = 1024, max_len: int = MAX_PARTICLES, num_classes: int = 0):
        super().__init__()
        extra = {"num_classes": int(num_classes)} if num_classes else {}
        self.save_config(codebook_size=int(codebook_size), embed_dim=int(embed_dim), num_blocks=int(num_blocks),
                         num_heads=int(num_heads), ff_dim=int(ff_dim), max_len=int(max_len), **extra)
        self.codebook_size = int(codebook_size)
        self.embed_dim = int(embed_dim)
        self.max_len = int(max_len)
        self.num_classes = int(num_classes)
        self.embed = nn.Embedding(vocab_size(codebook_size) + self.num_classes, embed_dim)
        self.blocks = nn.ModuleList(GPTBlock(embed_dim, num_heads, ff_dim) for _ in range(num_blocks))

    # token ids of this vocabulary, for convenience (defined in omnijet_weaver.constants)
    vocab_size = property(lambda self: vocab_size(self.codebook_size), doc="codes + start + stop + pad")
    start_token = property(lambda self: start_token(self.codebook_size), doc="id of the start token")
    stop_token = property(lambda self: stop_token(self.codebook_size), doc="id of the stop token")
    pad_token = property(lambda self: pad_token(self.codebook_size), doc="id of the padding token")

    def set_extra_state(self, state):
        # an unconditional backbone (the tagger's) takes a conditional one's weights: the same but for num_classes
        config = state.get("config") if isinstance(state, dict) else None
        if self.num_classes == 0 and isinstance(config, dict) and config.get("num_classes"):
            state = {**state, "config": {k: v for k, v in config.items() if k != "num_classes"}}
        super().set_extra_state(state)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the weights of a class-conditional backbone load into an unconditional one (the tagger's): its class
        # start tokens are embedding rows after the shared vocabulary, which an unconditional model never reads
        key = prefix + "embed.weight"
        weight = state_dict.get(key)
        rows = self.embed.num_embeddings
        if self.num_classes == 0 and isinstance(weight, torch.Tensor) and weight.dim() == 2 and weight.shape[0] > rows:
            state_dict[key] = weight[:rows]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def new_caches(self, batch_size: int | None = None, length: int | None = None, device=None,
                   dtype=None) -> list[dict]:
        """KV caches for incremental decoding, one dict per block, to pass as ``caches``.

        Without arguments: empty growing caches (each forward appends its keys/values). With ``batch_size``
        and ``length``: preallocated caches, per block ``k`` and ``v`` zeros (batch_size, H, length, E/H) of
        ``dtype`` (default: the parameters' dtype) on ``device`` (default: the parameters' device), written in
        place by ``forward(tokens, caches=..., positions=...)``: the fixed shapes a compiled decode step needs.
        """
        if batch_size is None and length is None:
            return [{} for _ in self.blocks]
        if batch_size is None or length is None:
            raise ValueError("a preallocated cache needs both batch_size and length")
        weight = self.embed.weight
        device = weight.device if device is None else device
        dtype = weight.dtype if dtype is None else dtype
        caches = []
        for block in self.blocks:
            heads = block.attn.num_heads
            caches.append(new_kv_cache(batch_size, heads, length, self.embed_dim // heads, device, dtype))
        return caches

    def forward(self, tokens, mask=None, caches: list[dict] | None = None, positions=None):
        """
        Args:
            tokens: (B, T) long token ids.
            mask: (B, T) bool, True for real tokens (start, constituents, stop), False for padding; or None
                (all real). With growing ``caches``, (B, T_cached + T). For right-padded sequences (as built by
                :func:`make_sequences`) the causal mask already hides the padding from every real position,
                so ``mask=None`` gives the same outputs at real positions, faster (fused causal attention).
            caches: None for a full forward, or ``self.new_caches()`` (then filled) for incremental decoding:
                each call appends the keys/values of ``tokens`` and attends to all earlier ones; or
                ``self.new_caches(B, S)`` (preallocated) together with ``positions``.
            positions: (B,) long, with preallocated caches: the position of each row's one new token (T = 1);
                its keys/values are written there and it attends to positions ``0 .. positions[b]`` of its row.
                (No positional encoding: a position only matters through this mask.)
        Returns:
            hidden states (B, T, E). Values at padded positions are meaningless: mask them downstream.
        """
        if caches is not None and len(caches) != len(self.blocks):
            raise ValueError(f"got {len(caches)} caches for {len(self.blocks)} blocks")
        if positions is not None and caches is None:
            raise ValueError("positions need preallocated caches (new_caches(batch_size, length))")
        x = self.embed(tokens)
        for i, block in enumerate(self.blocks):
            x = block(x, mask=mask, cache=None if caches is None else caches[i], positions=positions)
        return x


class NextTokenHead(nn.Module):
    """Next-token head: one Linear, hidden (..., E) -> logits (..., V).

    Args:
        embed_dim: E.
        vocab: V, the full vocabulary size (``vocab_size(codebook_size)``).
    """

    def __init__(self, embed_dim: int, vocab: int):
        super().__init__()
        self.proj = nn.Linear(embed_dim, vocab)

    def forward(self, hidden):
        """hidden: (..., E) -> logits (..., V)."""
        return self.proj(hidden)


def make_sequences(tokens, mask, codebook_size: int, start=None):
    """Build GPT sequences ``(start, x1 .. xn, stop, pad ...)`` from per-constituent code ids.

    Real constituents keep their order; they need not be left-aligned (they are moved to the front).

    Args:
        tokens: (B, L) long code ids in ``0 .. K-1`` (values at masked entries are ignored).
        mask: (B, L) or (B, 1, L) (weaver's ``pf_mask``), bool or 0/1, True for real constituents.
        codebook_size: K.
        start: None (every sequence opens with the start token) or (B,) long, the opening token of each
            sequence (a class start token of a conditional model, or the start token).
    Returns:
        ``(sequences, targets, seq_mask)``, all (B, L + 2):

        - ``sequences`` long: start, the n codes, stop, then pad;
        - ``targets`` long: ``sequences`` shifted left by one (``targets[:, t] = sequences[:, t + 1]``), pad
          at the end -- the token each position must predict;
        - ``seq_mask`` bool: True for the n + 2 real tokens (start, codes, stop).

        The positions whose target counts in the loss are ``seq_mask[:, 1:]`` (shifted): every real position
        except the stop token.
    """
    b, length = tokens.shape
    mask = mask.reshape(b, length).bool()
    if length > 0:
        # stable sort puts real constituents first, in their original order (a no-op when left-aligned)
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            # ONNX export knows no stable sort (nor int8 TopK): sort unique keys, which gives the same order
            pos = torch.arange(length, device=tokens.device)
            order = torch.sort((~mask).long() * length + pos, dim=1).indices
        else:
            order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices
        tokens = tokens.gather(1, order)
        mask = mask.gather(1, order)
    n = mask.sum(1)  # (B,)
    pad = pad_token(codebook_size)
    pos = torch.arange(length + 2, device=tokens.device)[None, :]  # (1, L+2)
    seq = torch.full((b, length + 2), pad, dtype=torch.long, device=tokens.device)
    seq[:, 0] = start_token(codebook_size) if start is None else start
    seq[:, 1 : length + 1] = torch.where(mask, tokens.long(), pad)
    seq = torch.where(pos == (n + 1)[:, None], stop_token(codebook_size), seq)
    seq_mask = pos <= (n + 1)[:, None]
    targets = torch.cat([seq[:, 1:], torch.full((b, 1), pad, dtype=torch.long, device=tokens.device)], dim=1)
    return seq, targets, seq_mask


def next_token_loss(logits, sequences, seq_mask, return_stats: bool = False):
    """Cross-entropy of predicting token t+1 from the prefix up to t, averaged over real targets.

    Targets are ``sequences[:, 1:]`` where ``seq_mask[:, 1:]`` is True: every constituent and the stop
    token. Padding (anything after stop) is never a target, so tokens after stop don't change the loss.

    Args:
        logits: (B, T, V) (the model run on the whole ``sequences``; the last position is dropped) or
            (B, T-1, V) (run on ``sequences[:, :-1]``).
        sequences: (B, T) long, from :func:`make_sequences`.
        seq_mask: (B, T) bool, from :func:`make_sequences`.
        return_stats: also return a dict of detached 0-dim tensors ``loss_sum`` (sum of per-token
            cross-entropies), ``correct`` (argmax hits) and ``count`` (real targets); sum these over batches
            and pass them to :func:`summarize_stats` for loss, accuracy and perplexity.
    Returns:
        the scalar loss (float32 or wider), or ``(loss, stats)`` with ``return_stats``.
    """
    t = sequences.shape[1]
    if logits.shape[1] == t:
        logits = logits[:, :-1]
    elif logits.shape[1] != t - 1:
        raise ValueError(f"logits have {logits.shape[1]} positions for sequences of length {t}")
    targets = sequences[:, 1:]
    valid = seq_mask[:, 1:].bool()
    b, tm1, v = logits.shape
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    ce = F.cross_entropy(logits.reshape(-1, v), targets.reshape(-1), reduction="none").view(b, tm1)
    ce = torch.where(valid, ce, torch.zeros((), dtype=ce.dtype, device=ce.device))
    count = valid.sum()
    loss_sum = ce.sum()
    loss = loss_sum / count.clamp(min=1)
    if not return_stats:
        return loss
    with torch.no_grad():
        correct = ((logits.argmax(-1) == targets) & valid).sum()
    return loss, {"loss_sum": loss_sum.detach(), "correct": correct, "count": count}


def summarize_stats(stats: dict) -> dict:
    """Turn (summed) stats of :func:`next_token_loss` into floats ``loss`` (mean per token),
    ``accuracy`` (token-level argmax accuracy), ``perplexity`` (= exp(loss)) and ``count``."""
    count = int(stats["count"])
    loss = float(stats["loss_sum"]) / max(count, 1)
    return {
        "loss": loss,
        "accuracy": float(stats["correct"]) / max(count, 1),
        "perplexity": math.exp(min(loss, 700.0)),
        "count": count,
    }
