"""The one data path: weaver's ParT kin inputs -> tokenizer features, and back.

Every omnijet-weaver model starts with :class:`FeatureTransform`, so the unmodified ParT data configs
work for the tokenizer, the generator and the tagger alike. All of it runs on the model's device.

Shapes: ``points`` (B, 2, L) = (delta eta, delta phi); ``vectors`` (B, 4, L) = (px, py, pz, E) in GeV;
``mask`` (B, 1, L), nonzero for real constituents. weaver's ``pad_mode: wrap`` fills padding with copies
of real particles, so the mask is always used.
"""

from __future__ import annotations

import torch
from torch import nn

from ..constants import ANGLE_CUT, ETA_PHI_SCALE, LOG_PT_SHIFT, MAX_PARTICLES
from ..kinematics import massless_jet_kinematics


def _exporting() -> bool:
    """True while the model is traced (ONNX export): then only traceable, exportable ops may run."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def to_features(pt, eta_rel, phi_rel):
    """(pT [GeV], eta_rel, phi_rel), each (...,), -> tokenizer features (..., 3)."""
    return torch.stack(
        [ETA_PHI_SCALE * eta_rel, ETA_PHI_SCALE * phi_rel, torch.log(pt) + LOG_PT_SHIFT], dim=-1
    )


def from_features(features):
    """Exact inverse of :func:`to_features`: features (..., 3) -> (pT [GeV], eta_rel, phi_rel), each (...,)."""
    eta_rel = features[..., 0] / ETA_PHI_SCALE
    phi_rel = features[..., 1] / ETA_PHI_SCALE
    pt = torch.exp(features[..., 2] - LOG_PT_SHIFT)
    return pt, eta_rel, phi_rel


@torch.compiler.disable
def _trimmed_length(keep, cap: int, round_to: int) -> int:
    """The longest multiplicity of ``keep`` (B, L), at least 1, rounded up to a multiple of ``round_to``, at most
    ``cap``: read on the host, outside any compiled graph, so that a compiled model's guards see only the
    rounded length (with ``round_to=32`` at most four values), not each batch's multiplicity."""
    longest = max(1, int(keep.sum(1).max()))
    return min(cap, -(-longest // round_to) * round_to)


class FeatureTransform(nn.Module):
    """(points, vectors, mask) -> (features (B, N, 3), mask (B, N) bool), N = min(L, max_particles).

    Constituents are kept when the mask is set, the values are finite, pT > 0 and
    |eta_rel|, |phi_rel| < ``angle_cut``; they are sorted by pT, descending, and the ``max_particles``
    leading ones are kept. Dropped constituents are padding (mask False, features 0) at the end.

    With ``trim_padding`` (the default) N is cut further to the largest multiplicity in the batch, which
    saves most of the attention cost on real jets (JetClass averages ~40 of 128); that length is read on
    the host (one sync per forward, as weaver's ParT ``SequenceTrimmer``). ``round_to`` (default 1) rounds
    it up to a multiple, at most ``max_particles``: the network configs set 32 under weaver's ``--compile``
    (``compile_model``, ParT's ``round_to_32``), so a compiled model sees at most four sequence lengths
    instead of one per batch. Tracing (ONNX export) keeps N = min(L, max_particles), since a data-dependent
    length cannot be exported. ``round_to`` is a run-time setting, not part of a checkpoint.
    """

    def __init__(self, max_particles: int = MAX_PARTICLES, angle_cut: float = ANGLE_CUT, trim_padding: bool = True,
                 round_to: int = 1):
        super().__init__()
        self.max_particles = max_particles
        self.angle_cut = angle_cut
        self.trim_padding = trim_padding
        self.round_to = round_to

    def forward(self, points, vectors, mask=None):
        eta, phi = points[:, 0], points[:, 1]
        px, py = vectors[:, 0], vectors[:, 1]
        pt = torch.sqrt(px * px + py * py) if _exporting() else torch.hypot(px, py)  # ONNX has no hypot
        keep = (
            torch.isfinite(eta) & torch.isfinite(phi) & torch.isfinite(pt) & (pt > 0)
            & (eta.abs() < self.angle_cut) & (phi.abs() < self.angle_cut)
        )
        if mask is not None:
            keep = keep & (mask[:, 0] != 0)
        # pT-descending order, dropped constituents last (stable sort keeps ties reproducible)
        key = torch.where(keep, pt, torch.full_like(pt, -1.0))
        n = self.max_particles
        if self.trim_padding and not _exporting():
            n = _trimmed_length(keep, n, self.round_to)
        if _exporting():  # ONNX's TopK breaks ties by the lower index, like a stable sort, but has no flag
            order = torch.sort(key, dim=1, descending=True).indices[:, :n]
        else:
            order = torch.sort(key, dim=1, descending=True, stable=True).indices[:, :n]
        keep = torch.gather(keep, 1, order)
        safe = lambda x: torch.where(keep, torch.gather(x, 1, order), torch.ones_like(keep, dtype=x.dtype))
        features = to_features(safe(pt), safe(eta), safe(phi)) * keep.unsqueeze(-1)
        return features, keep

    def extra_repr(self):
        return f"max_particles={self.max_particles}, angle_cut={self.angle_cut}, round_to={self.round_to}"


def jet_mass_from_features(features, mask):
    """Invariant mass (B,) in GeV of massless constituents given as tokenizer features (B, N, 3) and their
    mask (B, N) bool; computed in float64, returned in the features' dtype."""
    pt, eta, phi = from_features(features.double())
    return massless_jet_kinematics(pt, eta, phi, mask)[3].to(features.dtype)
