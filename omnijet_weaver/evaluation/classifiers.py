"""Classifier-based measures of the OmniJet-alpha paper (arXiv 2403.05618).

Two uses, one training routine (:func:`train_classifier`):

1. **Information loss of the tokenizer**: a multi-class jet classifier is trained once on the original
   constituents and once on the tokenized-and-reconstructed ones, on the *same* train/val/test split
   (:func:`split_indices`, then ``indices=`` of :func:`train_classifier`); the two test accuracies are
   compared.
2. **Generation fidelity ("classifier test")**: a binary classifier learns to separate generated from
   real (reconstructed) jets (:func:`classifier_test`); the test AUC is 0.5 when the two samples are
   indistinguishable. The paper uses :class:`DeepSets` with a per-particle MLP of width 10 and a
   0.6 / 0.2 / 0.2 train / val / test split.

Inputs everywhere: constituent features ``x`` (B, N, F), numpy or torch, normally F = 3, the tokenizer
features (3 eta_rel, 3 phi_rel, ln(pT/GeV) - 1.8) of :func:`omnijet_weaver.models.features.to_features`, and
``mask`` (B, N) bool, True for real constituents. Padded slots are ignored whatever they hold; jets
without any constituent are allowed (their logits are finite).
"""

from __future__ import annotations

import copy
import math
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from ..kinematics import massless_p4
from ..models.features import from_features
from ..models.layers import NormFormerBlock, mlp

MODELS = ("deepsets", "transformer", "part")


# --- models ----------------------------------------------------------------------------------------------


class DeepSets(nn.Module):
    """Permutation-invariant jet classifier: rho(aggregate_i phi(x_i)) (the paper's appendix A 2 and A 5).

    phi is a per-particle MLP with hidden layers ``phi_dims`` (default three of ``width``: the paper's
    classifier test uses width 10, its information-loss test (100, 100, 256)); the aggregate is the sum (or
    the mean) over the real constituents; rho is an MLP with hidden layers ``rho_dims`` (paper: three of
    100) and ``num_classes`` outputs. ReLU activations. Padded slots are excluded with ``masked_fill`` (not
    a multiplication), so they are ignored even when they hold NaN.
    """

    def __init__(self, num_features: int = 3, num_classes: int = 2, width: int = 10, aggregation: str = "sum",
                 phi_dims=None, rho_dims=(100, 100, 100)):
        super().__init__()
        if aggregation not in ("sum", "mean"):
            raise ValueError(f"aggregation must be 'sum' or 'mean', got {aggregation!r}")
        self.aggregation = aggregation
        phi_dims = tuple(phi_dims) if phi_dims is not None else (width,) * 3
        self.phi = nn.Sequential(mlp([num_features, *phi_dims]), nn.ReLU())
        self.rho = mlp([phi_dims[-1], *rho_dims, num_classes])

    def forward(self, x, mask):
        """x (B, N, F) float, mask (B, N) bool -> logits (B, num_classes)."""
        pad = ~mask.unsqueeze(-1)
        h = self.phi(x.masked_fill(pad, 0.0)).masked_fill(pad, 0.0)  # (B, N, width); no NaN even in gradients
        h = h.sum(1)  # (B, width)
        if self.aggregation == "mean":
            h = h / mask.sum(1, keepdim=True).clamp_min(1)
        return self.rho(h)


def _pack(x, mask):
    """Move the real constituents of each jet to the front (their order kept) and cut N to the largest
    multiplicity in the batch (at least 1). x (B, N, F), mask (B, N) bool -> same, with N' <= N."""
    order = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices
    mask = torch.gather(mask, 1, order)
    x = torch.gather(x, 1, order.unsqueeze(-1).expand_as(x))
    n = max(1, int(mask.sum(1).max())) if mask.numel() else 1
    return x[:, :n], mask[:, :n]


class ParticleTransformerClassifier(nn.Module):
    """A small weaver :class:`~weaver.nn.model.ParticleTransformer.ParticleTransformer` on tokenizer features.

    ParT gets the features (B, F, N), the massless four-vectors (B, 4, N) = (px, py, pz, E) [GeV] rebuilt
    from the first three features (:func:`~omnijet_weaver.models.features.from_features` and
    :func:`~omnijet_weaver.kinematics.massless_p4`, jet axis at eta = phi = 0) for its pair embedding, and the
    mask (B, 1, N) as float.

    - Padded slots are zeroed (features and four-vectors) and the real constituents are moved to the front,
      since ParT's trimming assumes left-packed jets; ParT's own (randomising) trimmer is switched off and
      N is cut to the batch's largest multiplicity here instead.
    - A jet without constituents gets one all-zero "particle", so that no attention row is fully masked
      (which gives NaN on some attention backends); its logits are finite and input-independent.

    ``use_pair_features=False`` drops the pair embedding (then any F works); with it, F must be 3.
    """

    def __init__(
        self,
        num_features: int = 3,
        num_classes: int = 2,
        embed_dims=(64, 64),
        pair_embed_dims=(32, 32),
        num_heads: int = 4,
        num_layers: int = 2,
        num_cls_layers: int = 1,
        fc_params=(),
        use_pair_features: bool = True,
        **part_kwargs,
    ):
        super().__init__()
        from weaver.nn.model.ParticleTransformer import ParticleTransformer

        if use_pair_features and num_features != 3:
            raise ValueError(
                f"the transformer's pair features need the 3 tokenizer features (eta, phi, log pT), got "
                f"num_features={num_features}; pass use_pair_features=False for other inputs"
            )
        self.use_pair_features = use_pair_features
        self.part = ParticleTransformer(
            input_dim=num_features,
            num_classes=num_classes,
            embed_dims=list(embed_dims),
            pair_embed_dims=list(pair_embed_dims) if use_pair_features else None,
            num_heads=num_heads,
            num_layers=num_layers,
            num_cls_layers=num_cls_layers,
            fc_params=list(fc_params),
            trim=False,
            **part_kwargs,
        )

    def forward(self, x, mask):
        """x (B, N, F) float, mask (B, N) bool -> logits (B, num_classes)."""
        x, mask = _pack(x, mask)
        x = torch.where(mask.unsqueeze(-1), x, torch.zeros_like(x))
        empty = ~mask.any(1)
        mask = mask.clone()
        mask[:, 0] |= empty  # the all-zero stand-in particle of empty jets
        vectors = None
        if self.use_pair_features:
            pt, eta, phi = from_features(x[..., :3])
            vectors = torch.stack(massless_p4(pt, eta, phi), dim=1)  # (B, 4, N)
            vectors = vectors.masked_fill(~mask.unsqueeze(1) | empty[:, None, None], 0.0)
        return self.part(x.transpose(1, 2), v=vectors, mask=mask.unsqueeze(1).to(x.dtype))


class ClassAttentionBlock(nn.Module):
    """A class token attends to the particles (CaiT / ParT class attention): ``c + MHA(LN(c), LN(x))`` then
    ``c + MLP(LN(c))``. c (B, 1, D), x (B, N, D), mask (B, N) bool -> (B, 1, D)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm_c, self.norm_x = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, mlp_ratio * dim), nn.GELU(),
                                 nn.Linear(mlp_ratio * dim, dim))

    def forward(self, c, x, mask):
        kv = self.norm_x(x)
        c = c + self.attn(self.norm_c(c), kv, kv, key_padding_mask=~mask, need_weights=False)[0]
        return c + self.mlp(c)


class TransformerClassifier(nn.Module):
    """The paper's transformer classifier (appendix A 2), CPU-sized by default: a per-particle embedding,
    ``num_blocks`` NormFormer blocks over the particles (:class:`~omnijet_weaver.models.layers.NormFormerBlock`, no
    positional information), ``num_cls_blocks`` class-attention blocks with a learned class token as query
    (:class:`ClassAttentionBlock`) and an MLP head (hidden ``head_dims``). Paper: 5 + 2 blocks, head 128, 128.

    x (B, N, F), mask (B, N) bool -> logits (B, num_classes). Padded slots are ignored whatever they hold;
    a jet without constituents gets one all-zero stand-in particle, so no attention row is empty.
    """

    def __init__(self, num_features: int = 3, num_classes: int = 2, dim: int = 64, num_heads: int = 4,
                 num_blocks: int = 3, num_cls_blocks: int = 2, head_dims=(128, 128)):
        super().__init__()
        self.embed = mlp([num_features, dim, dim])
        self.blocks = nn.ModuleList(NormFormerBlock(dim, num_heads) for _ in range(num_blocks))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.cls_blocks = nn.ModuleList(ClassAttentionBlock(dim, num_heads) for _ in range(num_cls_blocks))
        self.head = nn.Sequential(nn.LayerNorm(dim), mlp([dim, *head_dims, num_classes]))
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x, mask):
        """x (B, N, F) float, mask (B, N) bool -> logits (B, num_classes)."""
        x, mask = _pack(x, mask)
        x = x.masked_fill(~mask.unsqueeze(-1), 0.0)
        mask = mask.clone()
        mask[:, 0] |= ~mask.any(1)  # the stand-in particle of empty jets
        h = self.embed(x) * mask.unsqueeze(-1)
        for block in self.blocks:
            h = block(h, mask)
        c = self.cls_token.expand(len(h), -1, -1)
        for block in self.cls_blocks:
            c = block(c, h, mask)
        return self.head(c[:, 0])


def build_model(model: str, num_features: int, num_classes: int, width: int = 10, **model_kwargs) -> nn.Module:
    """``"deepsets"`` -> :class:`DeepSets` (per-particle width ``width``); ``"transformer"`` ->
    :class:`TransformerClassifier`; ``"part"`` -> :class:`ParticleTransformerClassifier` (weaver's ParT, with
    pair features: slow on a CPU). ``model_kwargs`` go to the constructor."""
    if model == "deepsets":
        return DeepSets(num_features, num_classes, width=width, **model_kwargs)
    if model == "transformer":
        return TransformerClassifier(num_features, num_classes, **model_kwargs)
    if model == "part":
        return ParticleTransformerClassifier(num_features, num_classes, **model_kwargs)
    raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")


# --- metrics ---------------------------------------------------------------------------------------------


def _binary_auc(is_positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC (scikit-learn) of ``score`` for the positives ``is_positive`` (bool): P(score of a random
    positive > score of a random negative), ties counting 1/2. NaN without positives or without negatives.

    The exact AUC is a multiple of 1 / (2 n_pos n_neg); scikit-learn's trapezoid sum is rounded to the nearest
    one, which removes its float rounding (1e-16) and so gives the correctly rounded value (the one of the rank
    formula), independent of summation order: a printed AUC never flips in its last digit."""
    n_pos = int(is_positive.sum())
    n_neg = len(is_positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    pairs = 2.0 * n_pos * n_neg
    return float(np.round(roc_auc_score(is_positive, score) * pairs) / pairs)


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve (``sklearn.metrics.roc_auc_score``).

    Args:
        labels: (n,) integer class indices.
        scores: (n,) score of class 1 (then labels must be 0 / 1), or (n, C) per-class scores. With C = 2
            column 1 is the class-1 score; with C > 2 the result is the macro average of the one-vs-rest
            AUCs of the classes that occur in ``labels`` together with some other class.
    Returns:
        The AUC in [0, 1]; NaN when it is undefined (only one class present).
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.ndim != 1 or scores.ndim not in (1, 2) or len(scores) != len(labels):
        raise ValueError(f"labels must be (n,) and scores (n,) or (n, C); got {labels.shape} and {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf")
    if scores.ndim == 2 and scores.shape[1] == 2:
        scores = scores[:, 1]
    if scores.ndim == 1:
        if not np.isin(labels, (0, 1)).all():
            raise ValueError("a binary AUC needs labels 0 / 1")
        return _binary_auc(labels == 1, scores)
    num_classes = scores.shape[1]
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}) for scores with {num_classes} columns")
    aucs = [_binary_auc(labels == c, scores[:, c]) for c in range(num_classes)]
    aucs = [a for a in aucs if not math.isnan(a)]
    return float(np.mean(aucs)) if aucs else float("nan")


# --- data ------------------------------------------------------------------------------------------------


def _part_sizes(n: int, split) -> tuple[int, int, int]:
    split = tuple(float(s) for s in split)
    if len(split) != 3 or min(split) < 0 or not math.isclose(sum(split), 1.0, abs_tol=1e-6):
        raise ValueError(f"split must be three non-negative fractions (train, val, test) summing to 1, got {split}")
    n_train, n_val = round(split[0] * n), round(split[1] * n)
    n_test = n - n_train - n_val
    if min(n_train, n_val, n_test) <= 0:
        raise ValueError(
            f"not enough jets ({n}) for the split {split}: the parts would hold "
            f"train={n_train}, val={n_val}, test={n_test} jets; each needs at least one"
        )
    return n_train, n_val, n_test


def split_indices(n: int, split=(0.6, 0.2, 0.2), seed: int = 0):
    """A seeded random split of ``range(n)`` into (train, val, test) index arrays (int64, each sorted).

    Sizes: round(split[0] * n), round(split[1] * n), and the rest. The same (n, split, seed) always gives
    the same split, which lets two trainings (e.g. original vs reconstructed jets) share it.
    """
    n_train, n_val, _ = _part_sizes(int(n), split)
    perm = np.random.default_rng(seed).permutation(int(n))
    parts = perm[:n_train], perm[n_train:n_train + n_val], perm[n_train + n_val:]
    return tuple(np.sort(p).astype(np.int64) for p in parts)


def _as_tensor(a, dtype=None):
    t = a.detach().cpu() if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a))
    return t if dtype is None else t.to(dtype)


def _prepare(x, mask, labels, num_classes):
    """Validate and convert: -> x (B, N, F) float32 with padded slots zeroed, mask (B, N) bool, labels (B,)
    int64, num_classes."""
    x = _as_tensor(x)
    mask = _as_tensor(mask)
    labels_np = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
    if x.ndim != 3:
        raise ValueError(f"x must have shape (B, N, F), got {tuple(x.shape)}")
    if mask.ndim != 2 or tuple(mask.shape) != tuple(x.shape[:2]):
        raise ValueError(f"mask must have shape (B, N) = {tuple(x.shape[:2])} matching x, got {tuple(mask.shape)}")
    if x.shape[2] < 1:
        raise ValueError("x has no features (F = 0)")
    if labels_np.shape != (x.shape[0],):
        raise ValueError(f"labels must have shape (B,) = ({x.shape[0]},), got {labels_np.shape}")
    if not (np.issubdtype(labels_np.dtype, np.integer) or np.issubdtype(labels_np.dtype, np.bool_)):
        if not (np.isfinite(labels_np).all() and (labels_np == np.round(labels_np)).all()):
            raise ValueError("labels must be integer class indices")
    labels = torch.from_numpy(labels_np.astype(np.int64))
    if not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"x must be a float array, got dtype {x.dtype}")
    x = x.to(torch.float32)
    mask = mask != 0 if mask.dtype != torch.bool else mask
    real = mask.unsqueeze(-1).expand_as(x)
    if torch.isnan(x[real]).any():
        raise ValueError("x contains NaN at real constituents (where mask is True)")
    if torch.isinf(x[real]).any():
        raise ValueError("x contains inf at real constituents (where mask is True)")
    x = torch.where(real, x, torch.zeros_like(x))  # padded slots may hold anything, NaN included
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if len(labels) else 0
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got {int(labels.min())}..{int(labels.max())}")
    if len(torch.unique(labels)) < 2:
        raise ValueError(f"need at least 2 classes in labels, found {torch.unique(labels).tolist()}")
    return x, mask, labels, int(num_classes)


def _check_indices(indices, n: int):
    if len(indices) != 3:
        raise ValueError("indices must be (train, val, test) index arrays")
    parts = []
    for name, idx in zip(("train", "val", "test"), indices):
        idx = np.asarray(idx, dtype=np.int64).ravel()
        if len(idx) == 0:
            raise ValueError(f"the {name} part of indices is empty")
        if idx.min() < 0 or idx.max() >= n:
            raise ValueError(f"the {name} indices must lie in [0, {n})")
        parts.append(idx)
    if len(np.unique(np.concatenate(parts))) != sum(len(p) for p in parts):
        raise ValueError("the train, val and test indices overlap (or repeat)")
    return tuple(parts)


# --- training --------------------------------------------------------------------------------------------


@dataclass
class ClassifierResult:
    """Outcome of :func:`train_classifier`, evaluated on the test part with the best-epoch weights.

    ``auc``: binary, ROC AUC of the class-1 score; multi-class, macro one-vs-rest AUC (:func:`roc_auc`).
    ``test_scores`` (n_test, C) softmax probabilities, ``test_labels`` (n_test,). Epochs count from 1;
    ``val_loss_per_epoch`` / ``train_loss_per_epoch`` are mean cross-entropies (nats).
    """

    model: str
    num_classes: int
    accuracy: float
    auc: float
    best_epoch: int
    epochs_run: int
    best_val_loss: float
    val_loss_per_epoch: list
    train_loss_per_epoch: list
    n_train: int
    n_val: int
    n_test: int
    test_scores: np.ndarray = field(repr=False)
    test_labels: np.ndarray = field(repr=False)

    def as_dict(self) -> dict:
        """JSON-ready summary: every field except the per-jet arrays."""
        return {k: v for k, v in self.__dict__.items() if k not in ("test_scores", "test_labels")}


def _batches(idx: torch.Tensor, batch_size: int):
    """Split ``idx`` into ceil(n / batch_size) nearly equal chunks, never one of a single jet when n >= 2
    (ParT's input BatchNorm cannot train on one value per channel)."""
    n = len(idx)
    num = max(1, min(math.ceil(n / batch_size), n // 2))
    return torch.tensor_split(idx, num)


def _trim(x, mask):
    """Cut left-packed jets to the batch's largest multiplicity (at least 1)."""
    n = max(1, int(mask.sum(1).max()))
    return x[:, :n], mask[:, :n]


@torch.no_grad()
def _predict(net, x, mask, labels, idx, batch_size, device):
    """-> (mean cross-entropy, logits (n, C) on the CPU) of the jets ``idx``, in eval mode."""
    net.eval()
    logits = []
    for b in torch.split(idx, batch_size):
        xb, mb = _trim(x[b], mask[b])
        logits.append(net(xb.to(device), mb.to(device)).float().cpu())
    logits = torch.cat(logits)
    return F.cross_entropy(logits, labels[idx]).item(), logits


def train_classifier(
    x,
    mask,
    labels,
    model: str = "deepsets",
    num_classes: int | None = None,
    split=(0.6, 0.2, 0.2),
    seed: int = 0,
    max_epochs: int = 50,
    patience: int = 5,
    batch_size: int = 256,
    lr: float = 1e-3,
    width: int = 10,
    device="cpu",
    indices=None,
    progress: bool = False,
    model_kwargs: dict | None = None,
) -> ClassifierResult:
    """Train a jet classifier with early stopping and evaluate it on a held-out test part.

    Args:
        x: (B, N, F) constituent features (numpy or torch), padded slots arbitrary.
        mask: (B, N) bool, True for real constituents.
        labels: (B,) integer classes in [0, num_classes).
        model: ``"deepsets"`` or ``"transformer"`` (:func:`build_model`; ``model_kwargs`` go to it).
        num_classes: default labels.max() + 1.
        split: (train, val, test) fractions for :func:`split_indices` with ``seed``; ignored when
            ``indices`` = (train, val, test) index arrays are given.
        seed: seeds the split, the model initialisation, dropout and the batch shuffling. The global torch
            RNG state is saved and restored around the training.
        max_epochs, patience: training stops after ``patience`` epochs without a lower validation loss;
            the weights of the best epoch are restored before the test evaluation.
        batch_size, lr: AdamW with cross-entropy loss.
        width: per-particle width of the DeepSets MLPs.
        device: where the model runs; the data stay on the CPU and are moved batch by batch.
        progress: print one line per epoch to stderr.
    Returns:
        :class:`ClassifierResult`.
    Raises:
        ValueError for inconsistent shapes, NaN / inf at real constituents, labels out of range, fewer than
        2 classes, a split leaving a part empty, bad ``indices`` or an unknown ``model``.
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    if max_epochs < 1 or patience < 1 or batch_size < 1:
        raise ValueError("max_epochs, patience and batch_size must be >= 1")
    x, mask, labels, num_classes = _prepare(x, mask, labels, num_classes)
    n = len(labels)
    if indices is None:
        indices = split_indices(n, split, seed)
    train_idx, val_idx, test_idx = (torch.from_numpy(i) for i in _check_indices(indices, n))
    if len(torch.unique(labels[train_idx])) < 2:
        raise ValueError("the training part holds a single class; need at least 2")
    x, mask = _pack(x, mask)  # left-packed once, so each batch can be cut to its own multiplicity
    device = torch.device(device)
    cuda_devices = [device.index or 0] if device.type == "cuda" else []

    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        net = build_model(model, x.shape[2], num_classes, width=width, **(model_kwargs or {})).to(device)
        optimizer = torch.optim.AdamW(net.parameters(), lr=lr)
        shuffle = torch.Generator().manual_seed(seed)
        best_loss, best_epoch, best_state = math.inf, 0, None
        train_losses, val_losses = [], []
        for epoch in range(1, max_epochs + 1):
            net.train()
            total, count = 0.0, 0
            for b in _batches(train_idx[torch.randperm(len(train_idx), generator=shuffle)], batch_size):
                xb, mb = _trim(x[b], mask[b])
                loss = F.cross_entropy(net(xb.to(device), mb.to(device)), labels[b].to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total, count = total + loss.item() * len(b), count + len(b)
            train_losses.append(total / count)
            val_loss, _ = _predict(net, x, mask, labels, val_idx, 4 * batch_size, device)
            val_losses.append(val_loss)
            if val_loss < best_loss:
                best_loss, best_epoch = val_loss, epoch
                best_state = copy.deepcopy(net.state_dict())
            if progress:
                print(f"[{model}] epoch {epoch}: train loss {train_losses[-1]:.4f}, val loss {val_loss:.4f}"
                      f"{' *' if best_epoch == epoch else ''}", file=sys.stderr, flush=True)
            if epoch - best_epoch >= patience:
                break
        if best_state is not None:  # None only if every validation loss was NaN
            net.load_state_dict(best_state)
        _, logits = _predict(net, x, mask, labels, test_idx, 4 * batch_size, device)

    scores = torch.softmax(logits.double(), dim=1).numpy()
    test_labels = labels[test_idx].numpy()
    return ClassifierResult(
        model=model,
        num_classes=num_classes,
        accuracy=float((scores.argmax(1) == test_labels).mean()),
        auc=roc_auc(test_labels, scores),
        best_epoch=best_epoch,
        epochs_run=len(val_losses),
        best_val_loss=best_loss,
        val_loss_per_epoch=val_losses,
        train_loss_per_epoch=train_losses,
        n_train=len(train_idx),
        n_val=len(val_idx),
        n_test=len(test_idx),
        test_scores=scores,
        test_labels=test_labels,
    )


def classifier_test(x_a, mask_a, x_b, mask_b, model: str = "deepsets", **kwargs) -> ClassifierResult:
    """Binary classifier test: can a classifier tell sample a (label 0) from sample b (label 1)?

    x_a (B_a, N_a, F), mask_a (B_a, N_a); x_b (B_b, N_b, F), mask_b (B_b, N_b); the shorter of N_a, N_b is
    zero-padded. The samples are balanced by keeping a random subset (seeded with ``seed``) of the larger one
    of the size of the smaller one, in its original order. ``kwargs`` go to :func:`train_classifier`
    (``indices``, if given, index the concatenation a-then-b after balancing).

    Returns the :class:`ClassifierResult`; its ``auc`` is 0.5 for indistinguishable samples.
    In the paper a = real (reconstructed) jets, b = generated jets, DeepSets of width 10.
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    xs, masks = [], []
    for name, x, mask in (("a", x_a, mask_a), ("b", x_b, mask_b)):
        x, mask = _as_tensor(x), _as_tensor(mask)
        if x.ndim != 3 or mask.ndim != 2 or tuple(mask.shape) != tuple(x.shape[:2]):
            raise ValueError(
                f"sample {name}: x must be (B, N, F) and mask (B, N) matching it, got {tuple(x.shape)} and "
                f"{tuple(mask.shape)}"
            )
        xs.append(x.to(torch.float32))
        masks.append(mask != 0)
    if xs[0].shape[2] != xs[1].shape[2]:
        raise ValueError(f"samples a and b have different numbers of features: {xs[0].shape[2]} vs {xs[1].shape[2]}")
    n = min(len(xs[0]), len(xs[1]))
    rng = np.random.default_rng(kwargs.get("seed", 0))
    num_particles = max(xs[0].shape[1], xs[1].shape[1])
    for i in range(2):
        if len(xs[i]) > n:
            keep = torch.from_numpy(np.sort(rng.choice(len(xs[i]), n, replace=False)))
            xs[i], masks[i] = xs[i][keep], masks[i][keep]
        pad = num_particles - xs[i].shape[1]
        xs[i] = F.pad(xs[i], (0, 0, 0, pad))
        masks[i] = F.pad(masks[i], (0, pad), value=False)
    labels = np.r_[np.zeros(n, np.int64), np.ones(n, np.int64)]
    return train_classifier(torch.cat(xs), torch.cat(masks), labels, model=model, num_classes=2, **kwargs)
