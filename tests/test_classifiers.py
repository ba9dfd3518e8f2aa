"""Classifier-based measures: AUC, splits, DeepSets / ParT classifiers, training and the classifier test."""

from __future__ import annotations

import itertools
import json
from fractions import Fraction

import numpy as np
import pytest
import torch

from omnijet_weaver.evaluation.classifiers import (
    MODELS,
    ParticleTransformerClassifier,
    build_model,
    classifier_test,
    roc_auc,
    split_indices,
    train_classifier,
)

N_MAX = 16


def make_jets(n, shift=(0.0, 0.0, 0.0), seed=0, n_max=N_MAX):
    """Toy jets: 3..n_max constituents with Gaussian features around ``shift``; padding zero.
    -> x (n, n_max, 3) float32, mask (n, n_max) bool."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(3, n_max + 1, n)
    mask = np.arange(n_max)[None, :] < counts[:, None]
    x = (rng.normal(size=(n, n_max, 3)) + np.asarray(shift)).astype(np.float32)
    x[~mask] = 0
    return x, mask


def brute_force_auc(labels, score):
    pos, neg = score[labels == 1], score[labels == 0]
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p, q in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


# --- AUC -------------------------------------------------------------------------------------------------


def test_auc_hand_computed_cases():
    labels = np.array([0, 0, 1, 1])
    assert roc_auc(labels, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert roc_auc(labels, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert roc_auc(labels, np.full(4, 0.3)) == 0.5
    # pairs (pos, neg): 0.35>0.1, 0.35<0.4, 0.8>0.1, 0.8>0.4 -> 3/4
    assert roc_auc(labels, np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    # a tie between a positive and a negative counts 1/2: (0.5 + 1 + 1 + 1) / 4
    assert roc_auc(np.array([0, 1, 0, 1]), np.array([0.2, 0.2, 0.1, 0.3])) == pytest.approx(0.875)
    # (n, 2) scores: column 1 is the class-1 score
    two = np.array([[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]])
    assert roc_auc(labels, two) == pytest.approx(0.75)
    assert np.isnan(roc_auc(np.zeros(3, int), np.array([0.1, 0.2, 0.3])))  # one class: undefined


def test_auc_matches_pair_counting_with_many_ties():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 200)
    score = rng.integers(0, 7, 200).astype(float) + 0.5 * labels  # heavy ties
    assert roc_auc(labels, score) == pytest.approx(brute_force_auc(labels, score), abs=1e-12)


def exact_auc(labels, score) -> Fraction:
    """The AUC as an exact fraction: (2 wins + ties) / (2 n_pos n_neg)."""
    pos, neg = score[labels == 1], score[labels == 0]
    twice = sum(2 if p > q else 1 if p == q else 0 for p, q in itertools.product(pos, neg))
    return Fraction(twice, 2 * len(pos) * len(neg))


def test_auc_is_the_correctly_rounded_exact_value():
    """scikit-learn's trapezoid sum, snapped to the multiples of 1 / (2 n_pos n_neg): the float nearest to the
    exact AUC, bit for bit (as the rank formula gave), so a printed AUC cannot flip in its last digit."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    for trial in range(30):
        n = int(rng.integers(4, 120))
        labels = np.r_[0, 1, rng.integers(0, 2, n - 2)]
        score = rng.random(n).astype(np.float32) if trial % 2 else np.round(rng.random(n), 1)  # ties in half
        exact = exact_auc(labels, score)
        assert roc_auc(labels, score) == float(exact), trial
        assert roc_auc(labels, score) == pytest.approx(roc_auc_score(labels, score), abs=1e-15)
    # 20 + 20 jets with AUC exactly 13/16 = 0.8125: printed with 3 decimals as 0.812 (half to even), every time
    labels = np.r_[np.zeros(20, int), np.ones(20, int)]
    score = np.r_[np.linspace(0, 1, 20), np.linspace(0, 1, 20) + 0.5]
    while exact_auc(labels, score) != Fraction(13, 16):
        score[20 + int(np.argmax(score[20:]))] -= 0.037  # lower the best positive until 325 of 400 pairs win
    assert roc_auc(labels, score) == 0.8125 and f"{roc_auc(labels, score):.3f}" == "0.812"


def test_auc_macro_one_vs_rest():
    labels = np.array([0, 1, 2, 0, 1, 2])
    scores = np.array([
        [1, 0.5, 0], [0, 0.5, 0], [0, 0.5, 0],
        [1, 0.5, 0], [0, 0.5, 0], [0, 0.5, 1],
    ])
    # class 0: perfect (1); class 1: constant (0.5); class 2: positives 0 and 1 vs four 0s -> (2 + 4) / 8
    assert roc_auc(labels, scores) == pytest.approx((1 + 0.5 + 0.75) / 3)
    # a class absent from the labels is left out of the average
    present = labels != 1
    assert roc_auc(labels[present], scores[present]) == pytest.approx((1 + 0.75) / 2)
    with pytest.raises(ValueError, match="labels must lie"):
        roc_auc(np.array([0, 3]), np.ones((2, 3)))


# --- split -----------------------------------------------------------------------------------------------


def test_split_indices():
    train, val, test = split_indices(103, (0.6, 0.2, 0.2), seed=3)
    assert (len(train), len(val), len(test)) == (62, 21, 20)
    everything = np.concatenate([train, val, test])
    assert len(np.unique(everything)) == 103 and set(everything) == set(range(103))
    again = split_indices(103, (0.6, 0.2, 0.2), seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))
    other = split_indices(103, (0.6, 0.2, 0.2), seed=4)
    assert not np.array_equal(train, other[0])
    assert [len(p) for p in split_indices(1000, (0.5, 0.3, 0.2))] == [500, 300, 200]
    with pytest.raises(ValueError, match="not enough jets"):
        split_indices(2)
    with pytest.raises(ValueError, match="sum"):
        split_indices(100, (0.6, 0.3, 0.3))


# --- models ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", MODELS)
def test_models_are_permutation_invariant_and_ignore_padding(kind):
    torch.manual_seed(0)
    net = build_model(kind, 3, 3)
    net.eval()
    x, mask = (torch.from_numpy(a) for a in make_jets(8, seed=1))
    with torch.no_grad():
        ref = net(x, mask)
        perm = torch.randperm(N_MAX)
        assert torch.allclose(net(x[:, perm], mask[:, perm]), ref, atol=1e-5)
        garbage = x.clone()
        garbage[~mask] = torch.randn(int((~mask).sum()), 3) * 100
        garbage[~mask][:5] = float("nan")
        assert torch.equal(net(garbage, mask), ref)
        # the padding really was there: changing a real constituent does change the output
        changed = x.clone()
        changed[0, 0] += 1.0
        assert not torch.allclose(net(changed, mask)[0], ref[0])


@pytest.mark.parametrize("kind", MODELS)
def test_fully_masked_jets_give_finite_logits_and_gradients(kind):
    torch.manual_seed(0)
    net = build_model(kind, 3, 2)
    x, mask = (torch.from_numpy(a) for a in make_jets(6, seed=2))
    mask[:2] = False
    x[0] = float("nan")  # an empty jet whose padding holds NaN
    for train in (True, False):
        net.train(train)
        out = net(x, mask)
        assert out.shape == (6, 2) and torch.isfinite(out).all()
        out.sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
        net.zero_grad()
    with torch.no_grad():  # all-empty batch
        assert torch.isfinite(net.eval()(x, torch.zeros_like(mask))).all()


def test_transformer_needs_three_features_for_pair_embedding():
    with pytest.raises(ValueError, match="use_pair_features"):
        ParticleTransformerClassifier(num_features=4)
    net = ParticleTransformerClassifier(num_features=4, use_pair_features=False).eval()
    assert net(torch.randn(3, 5, 4), torch.ones(3, 5, dtype=torch.bool)).shape == (3, 2)


# --- training --------------------------------------------------------------------------------------------


def test_multiclass_training_beats_chance():
    shifts = [(0, 0, 0), (1.2, 0, 0), (0, 0, 1.2)]
    parts = [make_jets(200, s, seed=10 + c) for c, s in enumerate(shifts)]
    x = np.concatenate([p[0] for p in parts])
    mask = np.concatenate([p[1] for p in parts])
    labels = np.repeat(np.arange(3), 200)
    res = train_classifier(x, mask, labels, max_epochs=40, patience=5, batch_size=64, lr=3e-3, seed=0)
    assert res.num_classes == 3 and res.test_scores.shape == (res.n_test, 3)
    assert (res.n_train, res.n_val, res.n_test) == (360, 120, 120)
    assert res.accuracy > 0.8 and res.auc > 0.9
    # the reported figures are those of the test scores: accuracy = share of argmax hits, macro one-vs-rest AUC
    hits = int((res.test_scores.argmax(1) == res.test_labels).sum())
    assert res.accuracy == hits / 120
    assert res.auc == np.mean([roc_auc((res.test_labels == c).astype(int), res.test_scores[:, c]) for c in range(3)])
    np.testing.assert_allclose(res.test_scores.sum(1), 1.0, rtol=1e-9)
    assert res.val_loss_per_epoch[res.best_epoch - 1] == min(res.val_loss_per_epoch) == res.best_val_loss
    json.dumps(res.as_dict())  # JSON-ready, without the per-jet arrays
    assert "test_scores" not in res.as_dict()


def test_same_seed_same_result_and_global_rng_untouched():
    x, mask = make_jets(300, seed=5)
    labels = (x[:, 0, 0] > 0).astype(int)
    kwargs = dict(max_epochs=3, batch_size=64)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = train_classifier(x, mask, labels, seed=7, **kwargs)
    assert torch.equal(torch.rand(3), expected)  # the training did not consume the global RNG
    b = train_classifier(torch.from_numpy(x), torch.from_numpy(mask), torch.from_numpy(labels), seed=7, **kwargs)
    assert a.val_loss_per_epoch == b.val_loss_per_epoch
    np.testing.assert_array_equal(a.test_scores, b.test_scores)
    c = train_classifier(x, mask, labels, seed=8, **kwargs)
    assert c.val_loss_per_epoch != a.val_loss_per_epoch
    # explicit indices from split_indices reproduce the seeded split exactly
    d = train_classifier(x, mask, labels, seed=7, indices=split_indices(300, seed=7), **kwargs)
    np.testing.assert_array_equal(a.test_scores, d.test_scores)


def test_early_stopping_on_noise_labels():
    x, mask = make_jets(400, seed=6)
    labels = np.random.default_rng(0).integers(0, 2, 400)
    res = train_classifier(x, mask, labels, max_epochs=50, patience=1, batch_size=32, lr=1e-2)
    assert res.epochs_run < 50
    assert res.best_epoch < res.epochs_run == res.best_epoch + 1
    assert len(res.val_loss_per_epoch) == len(res.train_loss_per_epoch) == res.epochs_run
    assert abs(res.auc - 0.5) < 0.15


# --- classifier test -------------------------------------------------------------------------------------


def test_classifier_test_deepsets():
    real = make_jets(1000, seed=20)
    same = make_jets(1100, seed=21)  # larger: truncated to 1000 at random
    res = classifier_test(*real, *same, max_epochs=20, batch_size=128)
    assert res.n_train + res.n_val + res.n_test == 2000
    assert np.bincount(res.test_labels).min() > 160
    assert abs(res.auc - 0.5) < 0.1
    shifted = make_jets(600, shift=(0.5, 0.5, 0.5), seed=22)
    res = classifier_test(*real, *shifted, max_epochs=20, batch_size=128, lr=3e-3)
    assert res.auc > 0.9


def test_classifier_test_transformer():
    real = make_jets(500, seed=30)
    same = make_jets(500, seed=31, n_max=12)  # different N: zero-padded to 16
    res = classifier_test(*real, *same, model="transformer", max_epochs=2, batch_size=64)
    assert res.model == "transformer" and abs(res.auc - 0.5) < 0.1
    real = (real[0][:300], real[1][:300])
    # one feature shifted: ParT's per-particle LayerNorm on the input would remove a common shift of all three
    shifted = make_jets(300, shift=(1.2, 0, 0), seed=32)
    res = classifier_test(*real, *shifted, model="transformer", max_epochs=4, batch_size=64)
    assert res.auc > 0.9


# --- input validation ------------------------------------------------------------------------------------


def test_errors_name_the_problem():
    x, mask = make_jets(60, seed=40)
    labels = np.arange(60) % 2
    with pytest.raises(ValueError, match=r"x must have shape \(B, N, F\)"):
        train_classifier(x[..., 0], mask, labels)
    with pytest.raises(ValueError, match="mask must have shape"):
        train_classifier(x, mask[:, :5], labels)
    with pytest.raises(ValueError, match="labels must have shape"):
        train_classifier(x, mask, labels[:10])
    with pytest.raises(ValueError, match="at least 2 classes"):
        train_classifier(x, mask, np.zeros(60, int))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        train_classifier(x, mask, labels * 2, num_classes=2)
    bad = x.copy()
    bad[3, 0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        train_classifier(bad, mask, labels)
    with pytest.raises(ValueError, match="deepsets, transformer, part"):
        train_classifier(x, mask, labels, model="bdt")
    with pytest.raises(ValueError, match="deepsets, transformer, part"):
        classifier_test(x, mask, x, mask, model="bdt")
    with pytest.raises(ValueError, match="not enough jets"):
        train_classifier(x[:2], mask[:2], labels[:2])
    with pytest.raises(ValueError, match="overlap"):
        train_classifier(x, mask, labels, indices=(np.arange(40), np.arange(30, 50), np.arange(50, 60)))
    with pytest.raises(ValueError, match="different numbers of features"):
        classifier_test(x, mask, x[..., :2], mask)
    # NaN only in padded slots is fine
    padded_nan = x.copy()
    padded_nan[~mask] = np.nan
    res = train_classifier(padded_nan, mask, labels, max_epochs=1)
    assert np.isfinite(res.test_scores).all()
