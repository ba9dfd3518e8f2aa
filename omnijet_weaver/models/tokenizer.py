"""Jet-constituent tokenizers behind one encode/decode API.

- :class:`VQVAE` with ``conditional=True``: transformer (NormFormer) encoder and decoder, constituents are
  encoded and decoded in the context of their jet (the OmniJet-alpha default);
- :class:`VQVAE` with ``conditional=False``: per-constituent MLP encoder and decoder;
- :class:`BinnedTokenizer`: a regular N x N x N grid over the features, no training.

Every tokenizer takes weaver's ParT kin inputs through :class:`~omnijet_weaver.models.features.FeatureTransform`:

    ids, mask = tok.encode(points, vectors, mask)      # (B, N) long, (B, N) bool
    pt, eta_rel, phi_rel = tok.decode(ids, mask)        # (B, N) each, GeV and relative angles

and on tokenizer features directly with ``encode_features`` / ``decode_features`` ((B, N, 3) features).
Padding positions of ``ids`` hold 0 and mean nothing: always carry the mask.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..constants import ANGLE_CUT, ETA_PHI_SCALE, MAX_PARTICLES, NUM_FEATURES
from .checkpoint import Configurable, register
from .features import FeatureTransform, from_features, jet_mass_from_features
from .layers import NormFormerBlock, mlp
from .quantizer import VectorQuant, autocast_off, codebook_usage, nearest_code


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """``t`` as float32 when it is a narrower float (bf16, fp16), else unchanged."""
    return t.float() if t.is_floating_point() and torch.finfo(t.dtype).bits < 32 else t


#: Model kinds that are tokenizers (for checkpoint loading).
TOKENIZER_KINDS = ("vqvae", "binned")


class Tokenizer(Configurable):
    """Base class: the shared front end and the encode/decode API."""

    codebook_size: int

    def __init__(self, max_particles: int = MAX_PARTICLES):
        super().__init__()
        self.transform = FeatureTransform(max_particles=max_particles)

    def encode_features(self, x, mask):
        """x: (B, N, 3) features, mask: (B, N) bool -> ids (B, N) long (0 at padding)."""
        raise NotImplementedError

    def decode_features(self, ids, mask):
        """ids: (B, N) long, mask: (B, N) bool -> features (B, N, 3) (0 at padding)."""
        raise NotImplementedError

    @torch.no_grad()
    def encode(self, points, vectors, mask=None):
        """weaver inputs (B, 2, L), (B, 4, L), (B, 1, L) -> (ids (B, N) long, mask (B, N) bool), pT-ordered.

        Always in float32 (or the wider dtype of the inputs), with any outer autocast switched off: the tokens
        do not depend on ``--use-amp`` or bf16, so training sees the tokens tokenize, --predict and ONNX give."""
        with autocast_off(points.device):
            x, keep = self.transform(full_precision(points), full_precision(vectors), mask)
            return self.encode_features(x, keep), keep

    @torch.no_grad()
    def decode(self, ids, mask):
        """ids (B, N), mask (B, N) -> (pT [GeV], eta_rel, phi_rel), each (B, N), float32; 0 at padding.
        Like :meth:`encode`, in full precision whatever autocast is active."""
        with autocast_off(ids.device):
            pt, eta, phi = from_features(self.decode_features(ids, mask))
        m = mask.to(pt.dtype)
        return pt * m, eta * m, phi * m


@register
class VQVAE(Tokenizer):
    """VQ-VAE tokenizer (OmniJet-alpha, paper appendix A1). Defaults are the paper's.

    Args:
        codebook_size: number of codes K (512 ... 8192).
        conditional: transformer encoder/decoder (True) or per-constituent MLPs (False).
        hidden_dim: width of the transformer blocks / MLP hidden layers.
        num_blocks: NormFormer blocks in the encoder and in the decoder (conditional).
        num_heads: attention heads (conditional).
        mlp_layers: hidden layers of the encoder and decoder MLPs (unconditional).
        latent_dim: dimension d of the codes.
        alpha: weight of the VQ loss in the total loss (MSE + alpha * VQ).
        beta, affine_lr, sync_nu, replace_freq: quantizer options (see :class:`VectorQuant`).
        max_particles: constituents per jet after the pT ordering.
        mlp_ratio: hidden size of the NormFormer blocks' MLPs in units of ``hidden_dim`` (conditional; the
            reference OmniJet-alpha code uses 1, see :mod:`omnijet_weaver.models.reference`).
    """

    kind = "vqvae"

    def __init__(self, codebook_size: int = 8192, conditional: bool = True, hidden_dim: int = 128, num_blocks: int = 4,
                 num_heads: int = 8, mlp_layers: int = 3, latent_dim: int = 4, alpha: float = 10.0, beta: float = 0.9,
                 affine_lr: float = 2.0, sync_nu: float = 1.0, replace_freq: int = 10,
                 max_particles: int = MAX_PARTICLES, mlp_ratio: int = 4):
        super().__init__(max_particles)
        # mlp_ratio is stored only when it is not the default 4, so that checkpoints written before it existed
        # (which describe themselves without it) load and compare unchanged
        extra = {} if mlp_ratio == 4 else {"mlp_ratio": mlp_ratio}
        self.save_config(
            codebook_size=codebook_size, conditional=conditional, hidden_dim=hidden_dim, num_blocks=num_blocks,
            num_heads=num_heads, mlp_layers=mlp_layers, latent_dim=latent_dim, alpha=alpha, beta=beta,
            affine_lr=affine_lr, sync_nu=sync_nu, replace_freq=replace_freq, max_particles=max_particles, **extra,
        )
        self.codebook_size = codebook_size
        self.conditional = conditional
        self.alpha = alpha
        if conditional:
            self.enc_in = nn.Linear(NUM_FEATURES, hidden_dim)
            self.enc_blocks = nn.ModuleList(NormFormerBlock(hidden_dim, num_heads, mlp_ratio) for _ in range(num_blocks))
            self.enc_out = nn.Linear(hidden_dim, latent_dim)
            self.dec_in = nn.Linear(latent_dim, hidden_dim)
            self.dec_blocks = nn.ModuleList(NormFormerBlock(hidden_dim, num_heads, mlp_ratio) for _ in range(num_blocks))
            self.dec_out = nn.Linear(hidden_dim, NUM_FEATURES)
        else:
            self.encoder = mlp([NUM_FEATURES] + [hidden_dim] * mlp_layers + [latent_dim])
            self.decoder = mlp([latent_dim] + [hidden_dim] * mlp_layers + [NUM_FEATURES])
        self.quantizer = VectorQuant(
            codebook_size, latent_dim, beta=beta, affine_lr=affine_lr, sync_nu=sync_nu, replace_freq=replace_freq
        )

    # -- the two halves -------------------------------------------------------------------------------------
    def encode_latent(self, x, mask):
        """features (B, N, 3) -> continuous latents (B, N, d)."""
        if not self.conditional:
            return self.encoder(x)
        h = self.enc_in(x) * mask.unsqueeze(-1)
        for block in self.enc_blocks:
            h = block(h, mask)
        return self.enc_out(h)

    def decode_latent(self, z, mask):
        """latents (B, N, d) -> features (B, N, 3), 0 at padding."""
        if not self.conditional:
            return self.decoder(z) * mask.unsqueeze(-1)
        h = self.dec_in(z) * mask.unsqueeze(-1)
        for block in self.dec_blocks:
            h = block(h, mask)
        return self.dec_out(h) * mask.unsqueeze(-1)

    def encode_features(self, x, mask):
        z = self.encode_latent(x, mask)
        ids = nearest_code(z.reshape(-1, z.shape[-1]), self.quantizer.codebook_transformed()).view(z.shape[:-1])
        return ids * mask

    def decode_features(self, ids, mask):
        ids = torch.where(mask, ids, torch.zeros_like(ids))
        if ((ids < 0) | (ids >= self.codebook_size)).any():
            raise ValueError(f"token ids outside the codebook [0, {self.codebook_size})")
        return self.decode_latent(self.quantizer.lookup(ids), mask)

    # -- training -------------------------------------------------------------------------------------------
    def forward(self, points, features, vectors, mask):
        """Training/validation pass on weaver's ParT kin inputs (``features`` is not used).

        Returns a dict: ``loss`` (scalar, MSE + alpha * VQ), ``recon_loss``, ``vq_loss``, ``ids`` (B, N),
        ``mask`` (B, N), ``x`` and ``x_rec`` (B, N, 3) features, ``num_replaced`` (dead codes reset).
        """
        with autocast_off(points.device):  # as encode / decode: the tokenizer trains in full precision too
            x, keep = self.transform(full_precision(points), full_precision(vectors), mask)
            z = self.encode_latent(x, keep)
            q = self.quantizer(z, keep)
            x_rec = self.decode_latent(q.z_q, keep)
            recon = masked_mse(x_rec, x, keep)
        return {
            "loss": recon + self.alpha * q.loss,
            "recon_loss": recon,
            "vq_loss": q.loss,
            "ids": q.indices * keep,
            "mask": keep,
            "x": x,
            "x_rec": x_rec,
            "num_replaced": q.num_replaced,
        }

    # -- figures for the weaver loops (omnijet_weaver.weaver.loops) ------------------------------------------
    def batch_stats(self, out) -> dict:
        """Per-batch sums: losses (per jet), mass differences, the code histogram -- 0-dim tensors and a (K,)
        histogram on the model's device, without host syncs (the training loop reads them once per epoch)."""
        mask = out["mask"]
        nj = mask.shape[0]
        dm = self._mass_difference(out)
        counts = torch.zeros(self.codebook_size, dtype=torch.float64, device=mask.device)
        counts.index_add_(0, out["ids"].reshape(-1), mask.reshape(-1).to(counts.dtype))  # real constituents only
        detached = {k: out[k].detach() for k in ("loss", "recon_loss", "vq_loss")}
        return {
            "loss": (detached["loss"] * nj, nj),
            "recon_loss": (detached["recon_loss"] * nj, nj),
            "vq_loss": (detached["vq_loss"] * nj, nj),
            "mass_diff": (dm.sum(), dm.numel()),
            "mass_diff_sq": ((dm**2).sum(), dm.numel()),
            "replaced_per_step": (out["num_replaced"], 1),
            "code_counts": counts,
        }

    def epoch_summary(self, stats) -> dict:
        """Losses, codebook usage (fraction of codes used, perplexity) and the jet-mass resolution [GeV]."""
        m = stats.means()
        usage, perplexity = (x.item() for x in codebook_usage(stats.arrays["code_counts"].double()))
        return {
            "loss": m["loss"],
            "recon_loss": m["recon_loss"],
            "vq_loss": m["vq_loss"],
            "code_usage": usage,
            "perplexity": perplexity,
            "mass_bias_GeV": m["mass_diff"],
            "mass_resolution_GeV": math.sqrt(max(m["mass_diff_sq"] - m["mass_diff"] ** 2, 0.0)),
            "replaced_per_step": m["replaced_per_step"],
        }

    def jet_scores(self, out):
        """What ``--predict`` writes per jet: [reconstruction MSE, m_reconstructed - m_original (GeV)]."""
        m = out["mask"].unsqueeze(-1).to(out["x"].dtype)
        mse = ((out["x_rec"] - out["x"]) ** 2 * m).sum((1, 2)) / (m.sum((1, 2)) * out["x"].shape[-1]).clamp_min(1)
        return torch.stack([mse, self._mass_difference(out)], dim=1).float().numpy(force=True)

    @staticmethod
    def _mass_difference(out):
        return jet_mass_from_features(out["x_rec"], out["mask"]) - jet_mass_from_features(out["x"], out["mask"])


def masked_mse(a, b, mask):
    """Mean over real constituents and features of (a - b)^2; a, b (B, N, F), mask (B, N)."""
    m = mask.unsqueeze(-1).to(a.dtype)
    return ((a - b) ** 2 * m).sum() / (m.sum() * a.shape[-1]).clamp_min(1.0)


#: Default feature ranges of the binned tokenizer: angles up to the 0.8 cut, ln(pT/GeV) - 1.8 in [-4.5, 5.5]
#: (pT from 0.18 GeV to 1.5 TeV).
BINNED_RANGES = ((-ETA_PHI_SCALE * ANGLE_CUT, ETA_PHI_SCALE * ANGLE_CUT),) * 2 + ((-4.5, 5.5),)


@register
class BinnedTokenizer(Tokenizer):
    """Regular grid tokenizer: each feature is cut into ``bins`` equal bins over ``ranges``; the token is
    the cell index (``bins**3`` tokens; 21 gives the paper's 9261). Decoding returns the cell centre.
    Values outside a range fall into its first or last bin.
    """

    kind = "binned"

    def __init__(self, bins: int = 21, ranges=BINNED_RANGES, max_particles: int = MAX_PARTICLES):
        super().__init__(max_particles)
        ranges = [list(map(float, r)) for r in ranges]
        if len(ranges) != NUM_FEATURES or any(lo >= hi for lo, hi in ranges):
            raise ValueError(f"ranges must be {NUM_FEATURES} (low, high) pairs with low < high, got {ranges}")
        self.save_config(bins=bins, ranges=ranges, max_particles=max_particles)
        self.bins = bins
        self.codebook_size = bins**NUM_FEATURES
        self.register_buffer("low", torch.tensor([r[0] for r in ranges]), persistent=False)
        self.register_buffer("width", torch.tensor([(r[1] - r[0]) / bins for r in ranges]), persistent=False)

    def encode_features(self, x, mask):
        cell = ((x - self.low) / self.width).floor().long().clamp(0, self.bins - 1)
        ids = (cell[..., 0] * self.bins + cell[..., 1]) * self.bins + cell[..., 2]
        return ids * mask

    def decode_features(self, ids, mask):
        ids = torch.where(mask, ids, torch.zeros_like(ids))
        if ((ids < 0) | (ids >= self.codebook_size)).any():
            raise ValueError(f"token ids outside the grid [0, {self.codebook_size})")
        cell = torch.stack([ids // self.bins**2, (ids // self.bins) % self.bins, ids % self.bins], dim=-1)
        return (self.low + (cell + 0.5) * self.width) * mask.unsqueeze(-1)


def grid_size_for(num_tokens: int) -> int:
    """The smallest N with N**3 >= num_tokens (e.g. 8192 -> 21, the paper's comparison grid)."""
    n = max(1, round(num_tokens ** (1 / 3)))
    return n if n**3 >= num_tokens else n + 1


def load_tokenizer(path, map_location="cpu") -> Tokenizer:
    """Load a tokenizer checkpoint (written by weaver with ``omnijet_vqvae.py``, or by ``save_model``)."""
    from .checkpoint import load_model

    return load_model(path, kinds=TOKENIZER_KINDS, map_location=map_location)


__all__ = ["Tokenizer", "VQVAE", "BinnedTokenizer", "load_tokenizer", "masked_mse", "grid_size_for"]
