"""Mixed precision: the tokenizer computes in float32 whatever autocast is active (the tokens of a bf16 training
step are those of tokenize, --predict and ONNX), while the GPT and the tagger train under bf16 autocast.

Runs on the CPU (bf16 autocast exists there too); on a GPU the same code runs under weaver's ``--use-amp``.
"""

import pytest
import torch
from conftest import DATA_CONFIG, shared_file
from test_tokenizer import TOKENIZERS, weaver_batch

from omnijet_weaver.models.generative import OmniJetGPT
from omnijet_weaver.models.tagger import OmniJetTagger
from omnijet_weaver.models.tokenizer import VQVAE

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def _tokens(tok, points, vectors, mask, autocast: bool):
    with torch.autocast(**BF16, enabled=autocast):
        ids, keep = tok.encode(points, vectors, mask)
        decoded = tok.decode(ids, keep)
    return ids, keep, decoded


@pytest.mark.parametrize("make", TOKENIZERS)
def test_tokens_under_bf16_autocast_are_the_fp32_tokens(make):
    torch.manual_seed(0)
    tok = make().eval()
    points, vectors, mask = weaver_batch(batch=32, length=60, seed=1)
    ids, keep, decoded = _tokens(tok, points, vectors, mask, autocast=False)
    ids16, keep16, decoded16 = _tokens(tok, points, vectors, mask, autocast=True)
    assert torch.equal(keep16, keep) and torch.equal(ids16, ids)
    for a, b in zip(decoded, decoded16):
        assert b.dtype == torch.float32 and torch.equal(a, b)


def test_bf16_inputs_are_encoded_in_float32():
    """Inputs that arrive in bf16 (a loader or user casting) are widened before the feature transform."""
    torch.manual_seed(0)
    tok = VQVAE(codebook_size=32, hidden_dim=16, num_blocks=1, num_heads=2).eval()
    points, vectors, mask = weaver_batch(batch=8, length=30, seed=2)
    p16, v16 = points.bfloat16(), vectors.bfloat16()
    ids, keep = tok.encode(p16.float(), v16.float(), mask)
    assert torch.equal(tok.encode(p16, v16, mask)[0], ids)


def test_packaged_tokenizer_bf16_tokens_on_real_jets():
    """All constituents of 1000 real Pythia jets (top and QCD) get the same token under bf16 autocast as in
    float32 (before the fix: 4.2 % did not)."""
    from omnijet_weaver.models.packaged import packaged_path
    from omnijet_weaver.models.tokenizer import load_tokenizer
    from omnijet_weaver.weaver.dataset import sampled_batches

    files = [shared_file("pythia", "pythia_top_20k.root"), shared_file("pythia", "pythia_qcd_20k.root")]
    tok = load_tokenizer(packaged_path("tokenizer"))
    _, batches = sampled_batches(str(DATA_CONFIG), [str(f) for f in files], max_jets=1000, batch_size=500)
    same = total = 0
    for X, _, _ in batches:
        ids, keep, _ = _tokens(tok, X["pf_points"], X["pf_vectors"], X["pf_mask"], autocast=False)
        ids16, keep16, _ = _tokens(tok, X["pf_points"], X["pf_vectors"], X["pf_mask"], autocast=True)
        assert torch.equal(keep16, keep)
        same, total = same + int(((ids16 == ids) & keep).sum()), total + int(keep.sum())
    assert total > 20_000 and same == total


def _tiny_models():
    torch.manual_seed(0)
    tok = VQVAE(codebook_size=32, hidden_dim=16, num_blocks=1, num_heads=2).eval()
    gpt = OmniJetGPT.from_tokenizer(tok, embed_dim=32, num_blocks=2, num_heads=2, ff_dim=32)
    tagger = OmniJetTagger(tokenizer=gpt.config["tokenizer"], num_classes=3, embed_dim=32, num_blocks=2,
                           num_heads=2, ff_dim=32)
    tagger.tokenizer.load_state_dict(tok.state_dict())
    return tok, gpt, tagger


def test_gpt_and_tagger_train_under_bf16_autocast():
    """Under bf16 autocast the backbone computes in bf16 (its loss differs from fp32 only by rounding), the
    tokens are unchanged, and a step gives finite gradients."""
    tok, gpt, tagger = _tiny_models()
    points, vectors, mask = weaver_batch(batch=16, length=40, seed=3)
    inputs = (points, torch.zeros(16, 1, 40), vectors, mask)
    fp32 = gpt(*inputs)["loss"]
    with torch.autocast(**BF16):
        out = gpt(*inputs)
        logits = tagger(*inputs)
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    assert out["loss"].item() == pytest.approx(fp32.item(), rel=0.02) and out["loss"].item() != fp32.item()
    assert logits.dtype == torch.bfloat16 and logits.shape == (16, 3)
    assert torch.allclose(logits.float(), tagger(*inputs), atol=0.05)
    (out["loss"] + torch.nn.functional.cross_entropy(logits.float(), torch.arange(16) % 3)).backward()
    grads = [p.grad for m in (gpt, tagger) for p in m.backbone.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(p.grad is None for m in (gpt, tagger) for p in m.tokenizer.parameters())  # frozen tokenizer
