"""The generative OmniJet-alpha model: frozen tokenizer + GPT backbone + next-token head.

One checkpoint holds all three (``tokenizer.*``, ``backbone.*``, ``head.*``), so it generates jets on its own;
the tagger uses the same attribute paths, so weaver's ``--load-model-weights gpt.pt`` fine-tunes from it.

``forward`` takes either weaver's ParT kin inputs (points (B,2,L), features, vectors (B,4,L), mask (B,1,L)),
tokenized on the fly by the frozen tokenizer, or the inputs of ``data_configs/tokens.yaml`` (tokens (B,1,L)
and token_mask (B,1,L), from ``omnijet-weaver-tokenize``), and returns the next-token loss.
"""

from __future__ import annotations

import math

import torch

from .checkpoint import Configurable, description, from_description, register
from .gpt import Backbone, NextTokenHead, make_sequences, next_token_loss
from .sampling import sample_tokens
from .tokenizer import TOKENIZER_KINDS


@register
class OmniJetGPT(Configurable):
    """Generative model. Paper defaults: embedding 256, 3 blocks, 8 heads, feed-forward 1024.

    Args:
        tokenizer: description ``{"kind", "config"}`` of the tokenizer (see ``checkpoint.description``);
            its weights come from the checkpoint or from :meth:`from_tokenizer`.
        embed_dim, num_blocks, num_heads, ff_dim: backbone sizes.
    """

    kind = "omnijet_gpt"

    def __init__(self, tokenizer: dict, embed_dim: int = 256, num_blocks: int = 3, num_heads: int = 8,
                 ff_dim: int = 1024):
        super().__init__()
        self.save_config(tokenizer=tokenizer, embed_dim=embed_dim, num_blocks=num_blocks, num_heads=num_heads,
                         ff_dim=ff_dim)
        self.tokenizer = from_description(tokenizer, kinds=TOKENIZER_KINDS, where="omnijet_gpt tokenizer")
        self.tokenizer.requires_grad_(False)  # frozen (also keeps DDP happy: no parameter without gradient)
        self.codebook_size = self.tokenizer.codebook_size
        self.backbone = Backbone(self.codebook_size, embed_dim=embed_dim, num_blocks=num_blocks,
                                 num_heads=num_heads, ff_dim=ff_dim)
        self.head = NextTokenHead(embed_dim, self.backbone.vocab_size)

    @classmethod
    def from_tokenizer(cls, tokenizer, **sizes) -> "OmniJetGPT":
        """A new model around a trained tokenizer (its weights are copied)."""
        model = cls(description(tokenizer), **sizes)
        model.tokenizer.load_state_dict(tokenizer.state_dict())
        return model

    def train(self, mode: bool = True):
        super().train(mode)
        self.tokenizer.eval()  # the frozen tokenizer never trains (no k-means, no code replacement)
        return self

    def tokens_from_inputs(self, *inputs):
        """(ids (B, N) long, mask (B, N) bool) from ParT kin inputs or from token-file inputs."""
        if len(inputs) >= 4:
            points, _, vectors, mask = inputs[:4]
            return self.tokenizer.encode(points, vectors, mask)
        if len(inputs) == 2:
            tokens, token_mask = inputs
            mask = token_mask[:, 0] > 0
            ids = tokens[:, 0].round().long()
            bad = mask & ((ids < 0) | (ids >= self.codebook_size))
            if bad.any():
                raise ValueError(
                    f"token ids outside the tokenizer's vocabulary [0, {self.codebook_size}) in the input, "
                    f"e.g. {int(ids[bad][0])}: were the tokens made with this model's tokenizer?"
                )
            return torch.where(mask, ids, torch.zeros_like(ids)), mask
        raise ValueError(f"omnijet_gpt takes 4 ParT kin inputs or 2 token inputs, got {len(inputs)}")

    def forward(self, *inputs):
        """Next-token loss. Returns a dict: ``loss`` (mean per predicted token), ``stats`` (summed
        ``loss_sum``, ``correct``, ``count``), and per jet ``jet_nll`` (summed) and ``jet_tokens``."""
        with torch.no_grad():
            ids, mask = self.tokens_from_inputs(*inputs)
            seq, _, seq_mask = make_sequences(ids, mask, self.codebook_size)
        logits = self.head(self.backbone(seq))  # right-padded + causal: no padding mask needed
        loss, stats = next_token_loss(logits, seq, seq_mask, return_stats=True)
        with torch.no_grad():
            logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, seq[:, 1:, None])[..., 0]
            valid = seq_mask[:, 1:]
            jet_nll = -(logp * valid).sum(1)
        return {"loss": loss, "stats": stats, "jet_nll": jet_nll, "jet_tokens": valid.sum(1)}

    # -- figures for the weaver loops ------------------------------------------------------------------------
    def batch_stats(self, out) -> dict:
        """Per-batch sums as 0-dim tensors on the model's device (read by the training loop once per epoch)."""
        s = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in out["stats"].items()}
        return {"loss": (s["loss_sum"], s["count"]), "accuracy": (s["correct"], s["count"])}

    def epoch_summary(self, stats) -> dict:
        m = stats.means()
        return {"loss": m["loss"], "perplexity": math.exp(min(m["loss"], 700.0)), "accuracy": m["accuracy"]}

    def jet_scores(self, out):
        """What ``--predict`` writes per jet: [negative log-likelihood per token, number of predicted tokens]."""
        n = out["jet_tokens"].clamp_min(1)
        return torch.stack([out["jet_nll"] / n, out["jet_tokens"].float()], 1).float().numpy(force=True)

    # -- generation ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, num_jets: int, batch_size: int = 256, temperature: float = 1.0, top_k=None, seed=None,
                 device=None, progress=False, use_cache=True, precision="fp32", compile=False):
        """Sample ``num_jets`` jets and decode them.

        ``precision`` ("fp32" or "bf16") and ``compile`` are those of
        :func:`~omnijet_weaver.models.sampling.sample_tokens`; the decoder runs in float32 either way.

        Returns a dict of CPU tensors: ``tokens`` (N, M) long, ``mask`` (N, M) bool, and ``pt`` [GeV],
        ``eta_rel``, ``phi_rel`` (N, M); M = the longest generated jet.
        """
        device = torch.device(device) if device is not None else next(self.parameters()).device
        self.to(device).eval()
        sampled = sample_tokens(self.backbone, self.head, self.codebook_size, num_jets, batch_size=batch_size,
                                max_particles=self.tokenizer.transform.max_particles, temperature=temperature,
                                top_k=top_k, generator=seed, use_cache=use_cache, device=device,
                                progress=progress, precision=precision, compile=compile)
        m = int(sampled.lengths.max()) if num_jets else 1
        tokens, mask = sampled.codes[:, :m], sampled.mask[:, :m]
        parts = {"pt": [], "eta_rel": [], "phi_rel": []}
        for start in range(0, num_jets, batch_size):  # decode in batches (the conditional decoder attends)
            sl = slice(start, start + batch_size)
            for k, v in zip(parts, self.tokenizer.decode(tokens[sl].to(device), mask[sl].to(device))):
                parts[k].append(v.cpu())
        decoded = {k: torch.cat(v) if v else torch.zeros(0, m) for k, v in parts.items()}
        return {"tokens": tokens, "mask": mask, **decoded}


def load_generative(path, map_location="cpu") -> OmniJetGPT:
    """Load a generative checkpoint (``weaver ... --network-config omnijet_gpt.py``'s ``*_state.pt``)."""
    from .checkpoint import load_model

    return load_model(path, kinds={OmniJetGPT.kind}, map_location=map_location)


__all__ = ["OmniJetGPT", "load_generative"]
