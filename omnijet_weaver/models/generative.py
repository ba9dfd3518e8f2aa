"""The generative OmniJet-alpha model: frozen tokenizer + GPT backbone + next-token head.

One checkpoint holds all three (``tokenizer.*``, ``backbone.*``, ``head.*``), so it generates jets on its own;
the tagger uses the same attribute paths, so weaver's ``--load-model-weights gpt.pt`` fine-tunes from it.

``forward`` takes either weaver's ParT kin inputs (points (B,2,L), features, vectors (B,4,L), mask (B,1,L)),
tokenized on the fly by the frozen tokenizer, or the inputs of ``data_configs/tokens.yaml`` (tokens (B,1,L)
and token_mask (B,1,L), from ``omnijet-weaver-tokenize``), and returns the next-token loss.

**Class-conditional models** (``classes`` given; weaver: ``-o conditional True``): a sequence opens with the
start token of its jet's class (:func:`~omnijet_weaver.constants.class_token`) instead of the start token;
in training the class is replaced by the unconditional start token with probability ``class_dropout``
(classifier-free style), so the same model also generates without a class. The class names travel in the
checkpoint's description.
"""

from __future__ import annotations

import math

import torch

from ..constants import LABEL_PREFIX, class_token, start_token
from .checkpoint import Configurable, description, from_description, register
from .gpt import BACKBONE_OPTIONS, Backbone, NextTokenHead, make_sequences, next_token_loss
from .sampling import check_guidance, check_sampling_args, sample_tokens
from .tokenizer import TOKENIZER_KINDS


@register
class OmniJetGPT(Configurable):
    """Generative model. Paper defaults: embedding 256, 3 blocks, 8 heads, feed-forward 1024.

    Args:
        tokenizer: description ``{"kind", "config"}`` of the tokenizer (see ``checkpoint.description``);
            its weights come from the checkpoint or from :meth:`from_tokenizer`.
        embed_dim, num_blocks, num_heads, ff_dim: backbone sizes.
        classes: names of the classes of a class-conditional model (e.g. ``["QCD", "Tbqq"]``, the data
            config's labels without ``label_``), in the order of the data config's labels; None (default):
            unconditional, the paper's model.
        class_dropout: conditional models: probability in [0, 1) that a training jet's class is replaced by
            the unconditional start token.
    """

    kind = "omnijet_gpt"

    def __init__(self, tokenizer: dict, embed_dim: int = 256, num_blocks: int = 3, num_heads: int = 8,
                 ff_dim: int = 1024, classes=None, class_dropout: float = 0.1):
        super().__init__()
        classes = check_classes(classes)
        if not 0.0 <= float(class_dropout) < 1.0:
            raise ValueError(f"class_dropout must be in [0, 1), got {class_dropout!r}")
        extra = {"classes": list(classes), "class_dropout": float(class_dropout)} if classes else {}
        self.save_config(tokenizer=tokenizer, embed_dim=embed_dim, num_blocks=num_blocks, num_heads=num_heads,
                         ff_dim=ff_dim, **extra)
        self.classes = classes
        self.class_dropout = float(class_dropout)
        self.tokenizer = from_description(tokenizer, kinds=TOKENIZER_KINDS, where="omnijet_gpt tokenizer")
        self.tokenizer.requires_grad_(False)  # frozen (also keeps DDP happy: no parameter without gradient)
        self.codebook_size = self.tokenizer.codebook_size
        self.backbone = Backbone(self.codebook_size, embed_dim=embed_dim, num_blocks=num_blocks,
                                 num_heads=num_heads, ff_dim=ff_dim, num_classes=len(classes))
        self.head = NextTokenHead(embed_dim, self.backbone.vocab_size)

    @property
    def conditional(self) -> bool:
        """Whether the model generates by class (has class start tokens)."""
        return bool(self.classes)

    def class_index(self, name: str) -> int:
        """Index of class ``name`` (``"Tbqq"`` or the label branch ``"label_Tbqq"``, any case); ValueError if the
        model has no such class (or no classes)."""
        if not self.classes:
            raise ValueError("the generative model is unconditional (trained without classes), so it cannot "
                             "generate by class: train one with -o conditional True")
        wanted = str(name).lower()
        wanted = wanted[len(LABEL_PREFIX):] if wanted.startswith(LABEL_PREFIX) else wanted
        for i, c in enumerate(self.classes):
            if c.lower() == wanted:
                return i
        raise ValueError(f"the generative model has no class {name!r}; its classes are {', '.join(self.classes)}")

    def start_tokens(self, labels, drop: bool = False):
        """(B,) long opening tokens for class indices ``labels`` (B,) (-1: unconditional start token); with
        ``drop``, each replaced by the start token with probability ``class_dropout``. No host sync: an index
        outside ``-1 .. C-1`` fails by ``torch._assert_async``."""
        labels = labels.reshape(-1).long()
        k = self.codebook_size
        torch._assert_async(((labels >= -1) & (labels < len(self.classes))).all(),
                            f"class labels must be in 0 .. {len(self.classes) - 1} (or -1 for none)")
        starts = torch.where(labels >= 0, class_token(k, 0) + labels, start_token(k))
        if drop and self.class_dropout > 0:
            dropped = torch.rand(labels.shape, device=labels.device) < self.class_dropout
            starts = torch.where(dropped, start_token(k), starts)
        return starts

    @classmethod
    def from_tokenizer(cls, tokenizer, **sizes) -> "OmniJetGPT":
        """A new model around a trained tokenizer (its weights are copied)."""
        model = cls(description(tokenizer), **sizes)
        model.tokenizer.load_state_dict(tokenizer.state_dict())
        return model

    @torch.no_grad()
    def start_from(self, other: "OmniJetGPT") -> "OmniJetGPT":
        """Copy the backbone and head of another generative model of the same sizes and tokenizer (to fine-tune
        a conditional model from an unconditional one, or continue with other classes). The embeddings of the
        shared vocabulary (codes, start, stop, pad) are copied; each class start token of this model takes the
        embedding of the other model's class of the same name, or else of its start token (so a new class
        starts out as unconditional generation). Returns self."""
        clash = [k for k in BACKBONE_OPTIONS if self.config[k] != other.config[k]]
        if clash or other.codebook_size != self.codebook_size:
            raise ValueError("can only start from a generative model of the same sizes and codebook; it differs in "
                             + ", ".join(clash or ["codebook size"]))
        state = {k: v for k, v in other.backbone.state_dict().items() if isinstance(v, torch.Tensor)}
        theirs = state["embed.weight"]
        rows = self.backbone.vocab_size
        embed = torch.cat([theirs[:rows], theirs[start_token(self.codebook_size)].expand(len(self.classes), -1)])
        for i, name in enumerate(self.classes):
            for j, known in enumerate(other.classes):
                if known.lower() == name.lower():
                    embed[rows + i] = theirs[rows + j]
        state["embed.weight"] = embed
        self.backbone.load_state_dict(state, strict=False)
        self.head.load_state_dict(other.head.state_dict())
        return self

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

    def forward(self, *inputs, labels=None):
        """Next-token loss. Returns a dict: ``loss`` (mean per predicted token), ``stats`` (summed
        ``loss_sum``, ``correct``, ``count``), and per jet ``jet_nll`` (summed) and ``jet_tokens``.

        ``labels``: (B,) class indices (a conditional model; the training loop passes the data config's label),
        or None (every jet unconditional)."""
        with torch.no_grad():
            ids, mask = self.tokens_from_inputs(*inputs)
            starts = None
            if self.classes and labels is not None:
                starts = self.start_tokens(labels.to(ids.device), drop=self.training)
            seq, _, seq_mask = make_sequences(ids, mask, self.codebook_size, start=starts)
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
                 device=None, progress=False, use_cache=True, precision="fp32", compile=False, classes=None,
                 guidance=None):
        """Sample ``num_jets`` jets and decode them.

        ``precision`` ("fp32" or "bf16") and ``compile`` are those of
        :func:`~omnijet_weaver.models.sampling.sample_tokens`; the decoder runs in float32 either way.
        ``classes``: None (unconditional), or per jet (N,) class indices (-1: unconditional) of a conditional
        model (see :meth:`class_index`); ``guidance``: the classifier-free guidance scale of
        :func:`~omnijet_weaver.models.sampling.sample_tokens` (None or 1: none; needs ``classes``).

        Returns a dict of CPU tensors: ``tokens`` (N, M) long, ``mask`` (N, M) bool, ``pt`` [GeV],
        ``eta_rel``, ``phi_rel`` (N, M), M = the longest generated jet, and ``classes`` (N,) long (-1 for jets
        generated without a class).
        """
        num_jets = check_sampling_args(num_jets, batch_size, temperature, top_k)[0]  # before any work
        guidance = check_guidance(guidance, classes)
        device = torch.device(device) if device is not None else next(self.parameters()).device
        self.to(device).eval()
        starts = None
        if classes is None:
            classes = torch.full((num_jets,), -1, dtype=torch.long)
        else:
            classes = torch.as_tensor(classes, dtype=torch.long).reshape(-1)
            if classes.numel() != num_jets:
                raise ValueError(f"got {classes.numel()} classes for {num_jets} jets")
            if bool((classes >= 0).any()) and not self.classes:
                self.class_index("")  # raises: unconditional model
            if num_jets and (int(classes.min()) < -1 or int(classes.max()) >= len(self.classes)):
                raise ValueError(f"class indices must be in -1 .. {len(self.classes) - 1}")
            starts = self.start_tokens(classes) if self.classes else None
        sampled = sample_tokens(self.backbone, self.head, self.codebook_size, num_jets, batch_size=batch_size,
                                max_particles=self.tokenizer.transform.max_particles, temperature=temperature,
                                top_k=top_k, generator=seed, use_cache=use_cache, device=device,
                                progress=progress, precision=precision, compile=compile, start_tokens=starts,
                                guidance=guidance)
        m = int(sampled.lengths.max()) if num_jets else 1
        tokens, mask = sampled.codes[:, :m], sampled.mask[:, :m]
        parts = {"pt": [], "eta_rel": [], "phi_rel": []}
        for start in range(0, num_jets, batch_size):  # decode in batches (the conditional decoder attends)
            sl = slice(start, start + batch_size)
            for k, v in zip(parts, self.tokenizer.decode(tokens[sl].to(device), mask[sl].to(device))):
                parts[k].append(v.cpu())
        decoded = {k: torch.cat(v) if v else torch.zeros(0, m) for k, v in parts.items()}
        return {"tokens": tokens, "mask": mask, **decoded, "classes": classes}


def check_classes(classes) -> tuple:
    """The class names of a conditional model as a tuple of distinct non-empty strings (() for None)."""
    if classes is None:
        return ()
    if isinstance(classes, str) or not all(isinstance(c, str) and c.strip() for c in classes):
        raise ValueError(f"classes must be a list of class names, got {classes!r}")
    classes = tuple(c.strip() for c in classes)
    if len(set(c.lower() for c in classes)) != len(classes):
        raise ValueError(f"class names must be distinct, got {', '.join(classes)}")
    if not classes:
        raise ValueError("a conditional model needs at least one class")
    return classes


def load_generative(path, map_location="cpu") -> OmniJetGPT:
    """Load a generative checkpoint (``weaver ... --network-config omnijet_gpt.py``'s ``*_state.pt``)."""
    from .checkpoint import load_model

    return load_model(path, kinds={OmniJetGPT.kind}, map_location=map_location)


__all__ = ["OmniJetGPT", "load_generative", "check_classes"]
