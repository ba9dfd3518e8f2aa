"""Import of the published OmniJet-alpha checkpoints (omnijet_weaver.models.reference), against the reference itself.

The fixtures in tests/data/reference/ were made by scripts/make_reference_fixtures.py with the reference code
(uhh-pd-ml/omnijet_alpha 1c8d4429, vqtorch 02e60a19; see PROVENANCE.json): real Lightning checkpoints of the
reference's LightningModules at small sizes with random weights, and the reference's outputs on 32 real
JetClass jets. These tests need none of that code: they import the checkpoints and compare.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from omnijet_weaver.errors import CheckpointError, ConfigError
from omnijet_weaver.models import reference
from omnijet_weaver.models.checkpoint import load_model

FIXTURES = Path(__file__).parent / "data" / "reference"
TOKENIZERS = ("tokenizer_normformer", "tokenizer_transformer", "tokenizer_mlp")
#: decoded features and logits agree to this (float32 arithmetic in another order); pT in GeV relatively
TOL = 1e-5


@functools.lru_cache(maxsize=None)
def jets():
    j = np.load(FIXTURES / "jets.npz")
    return tuple(torch.from_numpy(j[k]) for k in ("points", "vectors", "mask"))


def read_config(name):
    with open(FIXTURES / name / "config.yaml") as f:
        return yaml.safe_load(f)


@functools.lru_cache(maxsize=None)
def ckpt(path):
    return reference.read_reference_checkpoint(FIXTURES / path)


def fresh(path):
    """A modifiable copy of a fixture checkpoint (plain values, tensors shared)."""
    c = ckpt(path)
    return {**c, "hyper_parameters": json.loads(json.dumps(c["hyper_parameters"]))}


@functools.lru_cache(maxsize=None)
def tokenizer(name="tokenizer_normformer"):
    return reference.import_tokenizer(ckpt(f"{name}/model_ckpt.ckpt"), read_config(name))[0]


def test_fixtures_document_the_reference_commit():
    prov = json.loads((FIXTURES / "PROVENANCE.json").read_text())
    assert prov["omnijet_alpha_commit"] == reference.REFERENCE_COMMIT
    assert prov["vqtorch_commit"] == reference.VQTORCH_COMMIT
    assert sum(f.stat().st_size for f in FIXTURES.rglob("*") if f.is_file()) < 3_000_000


# --- exactness ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TOKENIZERS)
def test_tokenizer_matches_reference(name):
    """Identical token ids on the same real jets; decoded constituents and decoded features within 1e-5."""
    tok = tokenizer(name)
    exp = np.load(FIXTURES / name / "expected.npz")
    ids, keep = tok.encode(*jets())
    n = keep.shape[1]
    k = keep.numpy()
    assert (k == exp["token_mask"][:, :n]).all() and not exp["token_mask"][:, n:].any()  # same cuts, same order
    assert k.sum() > 1000
    np.testing.assert_array_equal(ids.numpy()[k], exp["tokens"][:, :n][k])
    pt, eta, phi = tok.decode(ids, keep)
    np.testing.assert_allclose(pt.numpy()[k], exp["decoded_pt"][:, :n][k], rtol=TOL, atol=0)
    np.testing.assert_allclose(eta.numpy()[k], exp["decoded_eta_rel"][:, :n][k], rtol=0, atol=TOL)
    np.testing.assert_allclose(phi.numpy()[k], exp["decoded_phi_rel"][:, :n][k], rtol=0, atol=TOL)
    # the reference's full forward pass (its features in its order: pT, eta, phi) vs our decoder on its tokens
    order = [reference.OUR_FEATURE_INDEX[str(f)] for f in exp["feature_order"]]
    with torch.no_grad():
        ours = tok.decode_features(torch.from_numpy(exp["tokens"][:, :n]), keep).numpy()
    np.testing.assert_allclose(ours[k][:, order], exp["forward_reco"][:, :n][k], rtol=0, atol=TOL)


def test_tokenizer_options_mapped():
    tok = tokenizer("tokenizer_transformer")
    assert tok.config["latent_dim"] == 16 and tok.config["affine_lr"] == 0.0 and tok.config["sync_nu"] == 2.0
    assert tok.config["replace_freq"] == 20 and tok.config["mlp_ratio"] == 1 and tok.config["num_heads"] == 4
    mlp = tokenizer("tokenizer_mlp")
    assert not mlp.conditional and mlp.config["mlp_layers"] == 3 and mlp.config["hidden_dim"] == 16
    nf = tokenizer("tokenizer_normformer")
    assert nf.config["affine_lr"] == 2.0 and nf.config["alpha"] == 10.0 and bool(nf.quantizer.initialized)


def reference_to_ours(ids, codes):
    """Reference token ids (start 0, code c as c + 1, stop K + 1) -> ours (codes, start K, stop K + 1)."""
    return torch.where(ids == 0, codes, torch.where(ids == codes + 1, codes + 1, ids - 1))


def test_generative_matches_reference():
    """Next-token logits (and their log-softmax) on the reference's inputs within 1e-5; the same from raw jets."""
    tok = tokenizer()
    gen, _ = reference.import_generative(ckpt("generative/generative.ckpt"), tok)
    exp = np.load(FIXTURES / "generative" / "expected.npz")
    k = tok.codebook_size
    cols = torch.tensor([k, *range(k), k + 1])  # our columns in the reference's vocabulary order
    x, m = torch.from_numpy(exp["inputs"]), torch.from_numpy(exp["input_mask"])
    want = torch.from_numpy(exp["logits"])
    with torch.no_grad():
        logits = gen.head(gen.backbone(reference_to_ours(x, k)))
    torch.testing.assert_close(logits[..., cols][m], want[m], rtol=0, atol=TOL)
    torch.testing.assert_close(torch.log_softmax(logits, -1)[..., cols][m], torch.log_softmax(want, -1)[m],
                               rtol=0, atol=TOL)
    # end to end: raw jets -> our tokenizer -> our sequences (start, codes, stop) -> logits at start..last code
    from omnijet_weaver.models.gpt import make_sequences

    ids, keep = tok.encode(*jets())
    seq, _, seq_mask = make_sequences(ids, keep, k)
    with torch.no_grad():
        logits = gen.head(gen.backbone(seq))
    t = seq.shape[1] - 1
    real = seq_mask[:, 1:] & m[:, :t]  # every position whose next token is a real one (start .. last code)
    assert (real == m[:, :t]).all()
    torch.testing.assert_close(logits[:, :t][..., cols][real], want[:, :t][real], rtol=0, atol=TOL)


def test_classifier_matches_reference():
    """Class logits from raw jets (our tokenizer + tagger, weaver's ParT inputs) within 1e-5 of the reference's."""
    tok = tokenizer()
    tag, _ = reference.import_classifier(ckpt("classifier/classifier.ckpt"), tok)
    exp = np.load(FIXTURES / "classifier" / "expected.npz")
    points, vectors, mask = jets()
    with torch.no_grad():
        logits = tag(points, None, vectors, mask)
    assert logits.shape == (32, 3)
    torch.testing.assert_close(logits, torch.from_numpy(exp["logits"]), rtol=0, atol=TOL)


def test_cli_writes_loadable_checkpoints(tmp_path, capsys):
    """The command writes self-describing checkpoints that load with our loaders and give the same outputs."""
    from omnijet_weaver.cli.import_reference import main
    from omnijet_weaver.models.generative import load_generative
    from omnijet_weaver.models.tokenizer import load_tokenizer

    tok_ckpt = str(FIXTURES / "tokenizer_normformer" / "model_ckpt.ckpt")
    main(["--tokenizer", tok_ckpt, "--output", str(tmp_path / "tok.pt")])
    main(["--tokenizer", tok_ckpt, "--generative", str(FIXTURES / "generative" / "generative.ckpt"),
          "--output", str(tmp_path / "gpt.pt")])
    main(["--tokenizer", tok_ckpt, "--classifier", str(FIXTURES / "classifier" / "classifier.ckpt"),
          "--output", str(tmp_path / "tagger.pt")])
    err = capsys.readouterr().err
    assert "wrote the generative model (omnijet_gpt" in err and reference.REFERENCE_COMMIT[:10] in err
    points, vectors, mask = jets()
    tok = load_tokenizer(tmp_path / "tok.pt")
    ids, keep = tok.encode(points, vectors, mask)
    assert torch.equal(ids, tokenizer().encode(points, vectors, mask)[0])
    gen = load_generative(tmp_path / "gpt.pt")
    assert torch.equal(gen.tokenizer.encode(points, vectors, mask)[0], ids)
    out = gen(points, None, vectors, mask)  # the next-token loss runs on the imported model
    assert torch.isfinite(out["loss"])
    tag = load_model(tmp_path / "tagger.pt", kinds={"omnijet_tagger"})
    with torch.no_grad():
        got = tag(points, None, vectors, mask)
    exp = np.load(FIXTURES / "classifier" / "expected.npz")
    torch.testing.assert_close(got, torch.from_numpy(exp["logits"]), rtol=0, atol=TOL)
    jets_out = gen.generate(4, batch_size=4, seed=1)  # generation never samples the padding token
    assert jets_out["tokens"][jets_out["mask"]].max() < tok.codebook_size
    # an existing output is kept without --overwrite
    with pytest.raises(SystemExit) as exc:
        main(["--tokenizer", tok_ckpt, "--output", str(tmp_path / "tok.pt")])
    assert exc.value.code == 2 and "exists" in capsys.readouterr().err


# --- safe loading ------------------------------------------------------------------------------------------


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def one_line_error(capsys, argv):
    from omnijet_weaver.cli.import_reference import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err.count("\n") == 1 and err.startswith("omnijet-weaver-import-reference: error: ")
    return err


def test_unsafe_pickle_refused_naming_the_global(tmp_path, capsys, monkeypatch):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": Evil()}}, path)
    ran = []
    monkeypatch.setattr(os, "system", lambda *a: ran.append(a))
    with pytest.raises(CheckpointError, match=r"refused: it needs (posix|nt|os)\.system"):
        reference.read_reference_checkpoint(path)
    err = one_line_error(capsys, ["--tokenizer", str(path), "--config",
                                  str(FIXTURES / "tokenizer_normformer" / "config.yaml"),
                                  "--output", str(tmp_path / "t.pt")])
    assert "system" in err and "allow-list" in err and not ran
    assert not (tmp_path / "t.pt").exists()


def test_pickled_class_of_the_reference_code_refused(tmp_path):
    """A checkpoint that pickles a whole object of some package (here a torch module) is refused, naming it."""
    path = tmp_path / "module.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "model": torch.nn.Linear(2, 2)}, path)
    with pytest.raises(CheckpointError, match=r"torch\.nn\.modules\.linear\.Linear"):
        reference.read_reference_checkpoint(path)


def test_partial_and_plain_hyper_parameters_read(tmp_path):
    """functools.partial of an optimizer (hydra 1.3.2's _partial_) is read as plain values, nothing called."""
    path = tmp_path / "partial.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "hyper_parameters": {
        "optimizer": functools.partial(torch.optim.AdamW, lr=1e-3), "model_kwargs": {"a": [1, 2]}}}, path)
    c = reference.read_reference_checkpoint(path)
    assert c["hyper_parameters"] == {"optimizer": {"_partial_": "torch.optim.adamw.AdamW", "lr": 1e-3},
                                     "model_kwargs": {"a": [1, 2]}}
    assert torch.equal(c["state_dict"]["w"], torch.ones(2))


def test_unreadable_and_foreign_files_refused(tmp_path, capsys):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        reference.read_reference_checkpoint(junk)
    plain = tmp_path / "plain.ckpt"
    torch.save({"w": torch.ones(1)}, plain)
    with pytest.raises(CheckpointError, match="not a PyTorch Lightning checkpoint"):
        reference.read_reference_checkpoint(plain)
    bad_zip = tmp_path / "bad.ckpt"
    with zipfile.ZipFile(bad_zip, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"state_dict": {}}, protocol=2)[:-3])
    with pytest.raises(CheckpointError):
        reference.read_reference_checkpoint(bad_zip)
    one_line_error(capsys, ["--tokenizer", str(junk), "--config", str(FIXTURES / "tokenizer_mlp" / "config.yaml"),
                            "--output", str(tmp_path / "t.pt")])
    # no config.yaml beside the checkpoint: said so, with the option to give it
    err = one_line_error(capsys, ["--tokenizer", str(plain), "--output", str(tmp_path / "t.pt")])
    assert "--config" in err


# --- options ours cannot represent -------------------------------------------------------------------------


@pytest.mark.parametrize("edit, named", [
    (lambda hp: hp["model_kwargs"]["vq_kwargs"].update(norm="l2"), "model_kwargs.vq_kwargs.norm"),
    (lambda hp: hp["model_kwargs"]["vq_kwargs"].update(dim=1), "model_kwargs.vq_kwargs.dim"),
    (lambda hp: hp["model_kwargs"]["vq_kwargs"].update(affine_groups=2), "model_kwargs.vq_kwargs.affine_groups"),
    (lambda hp: hp.update(model_type="VQVAEConv"), "model_type"),
    (lambda hp: hp["model_kwargs"].update(input_dim=4), "model_kwargs.input_dim"),
])
def test_unrepresentable_tokenizer_option_refused(edit, named):
    c = fresh("tokenizer_normformer/model_ckpt.ckpt")
    edit(c["hyper_parameters"])
    with pytest.raises(ConfigError, match=named.replace(".", r"\.") + " = .* cannot be represented"):
        reference.import_tokenizer(c, read_config("tokenizer_normformer"))


def test_unequal_mlp_layers_refused():
    c = fresh("tokenizer_mlp/model_ckpt.ckpt")
    c["hyper_parameters"]["model_kwargs"]["encoder_layers"] = [16, 32, 16]
    with pytest.raises(ConfigError, match=r"model_kwargs\.encoder_layers"):
        reference.import_tokenizer(c, read_config("tokenizer_mlp"))


@pytest.mark.parametrize("feature, key, value", [
    ("part_pt", "subtract_by", 2.7), ("part_etarel", "multiply_by", 4), ("part_phirel", "smaller_than", 1.0),
    ("part_pt", "clip_max", 5.0),
])
def test_other_feature_scaling_or_cut_refused(feature, key, value, tmp_path, capsys):
    config = read_config("tokenizer_normformer")
    config["data"]["dataset_kwargs_common"]["feature_dict"][feature][key] = value
    named = f"data.dataset_kwargs_common.feature_dict.{feature}.{key}"
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        reference.import_tokenizer(ckpt("tokenizer_normformer/model_ckpt.ckpt"), config)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    err = one_line_error(capsys, ["--tokenizer", str(FIXTURES / "tokenizer_normformer" / "model_ckpt.ckpt"),
                                  "--config", str(path), "--output", str(tmp_path / "t.pt")])
    assert named in err and "cannot be represented" in err and not (tmp_path / "t.pt").exists()


def test_other_features_refused():
    config = read_config("tokenizer_normformer")
    config["data"]["dataset_kwargs_common"]["feature_dict"]["part_d0val"] = {"func": "np.tanh"}
    with pytest.raises(ConfigError, match="part_d0val"):
        reference.import_tokenizer(ckpt("tokenizer_normformer/model_ckpt.ckpt"), config)


def test_generative_and_classifier_options_refused():
    tok = tokenizer()
    c = fresh("generative/generative.ckpt")
    c["hyper_parameters"]["model_kwargs"]["vocab_size"] = 8194
    with pytest.raises(ConfigError, match=r"model_kwargs\.vocab_size = 8194"):
        reference.import_generative(c, tok)
    c = fresh("generative/generative.ckpt")
    c["hyper_parameters"]["model_kwargs"]["return_embeddings"] = False
    with pytest.raises(ConfigError, match=r"model_kwargs\.return_embeddings"):
        reference.import_generative(c, tok)
    c = fresh("classifier/classifier.ckpt")
    c["hyper_parameters"]["class_head_type"] = "class_attention"
    with pytest.raises(ConfigError, match="class_head_type = 'class_attention'"):
        reference.import_classifier(c, tok)
    # a tokenizer checkpoint given as generative: its tensors are not a GPT's
    with pytest.raises((CheckpointError, ConfigError)):
        reference.import_generative(fresh("tokenizer_mlp/model_ckpt.ckpt"), tok)


def test_unknown_tensors_refused():
    c = fresh("classifier/classifier.ckpt")
    c["state_dict"] = {**c["state_dict"], "head.extra.weight": torch.zeros(2)}
    with pytest.raises(CheckpointError, match=r"unexpected tensors head\.extra\.weight"):
        reference.import_classifier(c, tokenizer())


def test_mlp_ratio_option_keeps_old_checkpoints():
    """The tokenizer option added for the reference (mlp_ratio) is stored only when it is not the default 4, so
    that checkpoints written before it existed describe themselves exactly as before."""
    from omnijet_weaver.models.tokenizer import VQVAE

    old = VQVAE(codebook_size=8, hidden_dim=8, num_blocks=1, num_heads=2)
    assert "mlp_ratio" not in old.config and old.enc_blocks[0].mlp[1].out_features == 32
    new = VQVAE(codebook_size=8, hidden_dim=8, num_blocks=1, num_heads=2, mlp_ratio=1)
    assert new.config["mlp_ratio"] == 1 and new.dec_blocks[0].mlp[1].out_features == 8
