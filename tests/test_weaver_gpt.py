"""Generative pre-training through the real ``weaver`` CLI, the tokenize and generate commands."""

import subprocess
import sys

import awkward as ak
import numpy as np
import pytest
import torch
import uproot
from conftest import DATA_CONFIG, NETWORK_CONFIGS, ROOT, run_weaver
from test_weaver_history import check_history

from omnijet_weaver.constants import JETCLASS_LABELS, MAX_PARTICLES
from omnijet_weaver.models.checkpoint import save_model
from omnijet_weaver.models.generative import OmniJetGPT, load_generative
from omnijet_weaver.models.tokenizer import VQVAE
from omnijet_weaver.weaver.dataset import jet_loader
from omnijet_weaver.weaver.history import read_history

TOKENS_CONFIG = ROOT / "data_configs" / "tokens.yaml"
GPT_OPTIONS = ["-o", "embed_dim", "32", "-o", "num_blocks", "2", "-o", "num_heads", "4", "-o", "ff_dim", "64"]


def command(name, *args, check=True):
    """Run one of our console scripts as a user would (via the installed entry point's module)."""
    proc = subprocess.run([sys.executable, "-m", f"omnijet_weaver.cli.{name}", *map(str, args)],
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def tokenizer_file(toy_root_files, tmp_path_factory):
    """A tiny conditional VQ-VAE with its codebook initialised on toy jets (k-means on one batch)."""
    torch.manual_seed(0)
    tok = VQVAE(codebook_size=32, hidden_dim=16, num_blocks=1, num_heads=2).train()
    X, _, _ = next(iter(jet_loader(DATA_CONFIG, [toy_root_files[0]], batch_size=128)))
    tok(X["pf_points"], X["pf_features"], X["pf_vectors"], X["pf_mask"])
    path = tmp_path_factory.mktemp("tok") / "tok.pt"
    save_model(tok.eval(), path)
    return path


@pytest.fixture(scope="module")
def pretrained(toy_root_files, tokenizer_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("gpt")
    train, val = toy_root_files
    proc = run_weaver(
        ["--data-train", train, "--data-val", val, "--data-config", DATA_CONFIG,
         "--network-config", NETWORK_CONFIGS / "omnijet_gpt.py", "-o", "tokenizer", repr(str(tokenizer_file)),
         *GPT_OPTIONS, "--model-prefix", out / "gpt", "--gpus", "", "--num-workers", "0", "--batch-size", "64",
         "--num-epochs", "3", "--steps-per-epoch", "6", "--steps-per-epoch-val", "2", "--in-memory", "--fetch-step", "1",
         "--optimizer", "adam", "--start-lr", "3e-3", "--lr-scheduler", "none"],
        cwd=out,
    )
    return out, proc.stdout + proc.stderr


def test_weaver_pretrains_and_loss_falls(pretrained, toy_root_files):
    out, log = pretrained
    assert "Using custom train/evaluate functions" in log
    history = check_history(out / "gpt", log, epochs=3, classification=False)
    for r in history:
        assert set(r["train"]) == {"loss", "perplexity", "accuracy"} and r["lr"] == 3e-3
        # (math.exp in the loop, np.exp here: they may differ in the last bit)
        assert r["val"]["perplexity"] == pytest.approx(np.exp(r["val"]["loss"]), rel=1e-14)
        assert r["val"]["metric"] == pytest.approx(np.exp(-r["val"]["loss"]), rel=1e-14)
    assert history[-1]["train"]["loss"] < history[0]["train"]["loss"]
    assert history[-1]["val"]["loss"] < history[0]["val"]["loss"]
    # the validation figures are what the epoch's checkpoint computes on the validation jets: weaver's validation
    # (--steps-per-epoch-val 2 batches of 64) reads each of the 128 jets once; loss and accuracy are per token
    X, _, _ = next(iter(jet_loader(DATA_CONFIG, [toy_root_files[1]], batch_size=128)))
    for r in history:
        model = load_generative(out / f"gpt_epoch-{r['epoch']}_state.pt").eval()
        with torch.no_grad():
            stats = model(*[X[k] for k in ("pf_points", "pf_features", "pf_vectors", "pf_mask")])["stats"]
        assert r["val"]["loss"] == pytest.approx(float(stats["loss_sum"]) / float(stats["count"]), rel=1e-5)
        assert r["val"]["accuracy"] == pytest.approx(float(stats["correct"]) / float(stats["count"]), abs=1e-12)


def test_checkpoint_is_self_contained_and_tokenizer_frozen(pretrained, tokenizer_file):
    out, _ = pretrained
    model = load_generative(out / "gpt_best_epoch_state.pt")
    assert model.config["embed_dim"] == 32 and model.codebook_size == 32
    assert not any(p.requires_grad for p in model.tokenizer.parameters())
    original = torch.load(tokenizer_file, weights_only=True)
    for name, value in model.tokenizer.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, original[name]), f"tokenizer weight {name} changed in training"


def test_generate_writes_jets_weaver_reads_back(pretrained, tmp_path):
    out, _ = pretrained
    gen = tmp_path / "gen.root"
    command("generate", "--checkpoint", out / "gpt_best_epoch_state.pt", "--num-jets", 40, "--output", gen,
            "--seed", 3, "--batch-size", 16, "--no-progress")
    tree = uproot.open(gen)["tree"]
    assert "TTree" in type(tree).__name__
    a = tree.arrays()
    assert len(a) == 40
    n = ak.num(a["part_px"]).to_numpy()
    assert np.all((n >= 1) & (n <= MAX_PARTICLES)) and np.array_equal(n, a["jet_nparticles"].to_numpy())
    assert ak.all(a["part_token"] >= 0) and ak.all(a["part_token"] < 32)
    assert all(np.all(a[k].to_numpy() == 0) for k in JETCLASS_LABELS)  # unconditional: no class (labels 0)
    # constituents are massless: E = |p|
    p = np.sqrt(ak.flatten(a["part_px"] ** 2 + a["part_py"] ** 2 + a["part_pz"] ** 2).to_numpy())
    np.testing.assert_allclose(ak.flatten(a["part_energy"]).to_numpy(), p, rtol=1e-5)
    # weaver's dataset reads it with the JetClass inputs (no selection on labels), every jet, every constituent
    seen = 0
    for X, y, Z in jet_loader(ROOT / "data_configs" / "jetclass.yaml", [gen], batch_size=16):
        np.testing.assert_array_equal(X["pf_mask"][:, 0].sum(1).numpy(), Z["jet_nparticles"])
        seen += len(X["pf_mask"])
    assert seen == 40
    # same seed, same jets; the output is refused when it exists
    again = tmp_path / "again.parquet"
    command("generate", "--checkpoint", out / "gpt_best_epoch_state.pt", "--num-jets", 40, "--output", again,
            "--seed", 3, "--batch-size", 16, "--no-progress")
    assert ak.all(ak.from_parquet(again)["part_token"] == a["part_token"])
    proc = command("generate", "--checkpoint", out / "gpt_best_epoch_state.pt", "--num-jets", 4, "--output", gen,
                   "--no-progress", check=False)
    assert proc.returncode != 0 and "exists; pass --overwrite" in proc.stderr


def test_tokenize_then_pretrain_from_token_files(pretrained, toy_root_files, tokenizer_file, tmp_path):
    out, _ = pretrained
    tokens = tmp_path / "tokens.parquet"
    command("tokenize", "--data-config", DATA_CONFIG, "--tokenizer", tokenizer_file, "--output", tokens,
            "--no-progress", toy_root_files[1])
    table = ak.from_parquet(tokens)
    assert len(table) == 128 and set(table.fields) >= {"tokens", "label", "jet_pt"}
    # the token file gives the model exactly the same loss as tokenizing on the fly
    model = load_generative(out / "gpt_best_epoch_state.pt")
    kin = [model(*[X[k] for k in ("pf_points", "pf_features", "pf_vectors", "pf_mask")])["loss"]
           for X, _, _ in jet_loader(DATA_CONFIG, [toy_root_files[1]], batch_size=128)]
    tok = [model(X["tokens"], X["token_mask"])["loss"] for X, _, _ in jet_loader(TOKENS_CONFIG, [tokens], batch_size=128)]
    assert len(kin) == len(tok) == 1 and torch.allclose(kin[0], tok[0], rtol=1e-5)
    # and weaver trains from token files
    run_weaver(
        ["--data-train", tokens, "--data-val", tokens, "--data-config", TOKENS_CONFIG,
         "--network-config", NETWORK_CONFIGS / "omnijet_gpt.py", "-o", "tokenizer", repr(str(tokenizer_file)),
         *GPT_OPTIONS, "--model-prefix", tmp_path / "gpt_tok", "--gpus", "", "--num-workers", "0",
         "--batch-size", "32", "--num-epochs", "1", "--steps-per-epoch", "3", "--in-memory", "--fetch-step", "1"],
        cwd=tmp_path,
    )
    assert [r["epoch"] for r in read_history(tmp_path / "gpt_tok")] == [0]
    assert isinstance(load_generative(tmp_path / "gpt_tok_best_epoch_state.pt"), OmniJetGPT)


def test_token_ids_outside_the_vocabulary_fail_clearly(tokenizer_file):
    from omnijet_weaver.models.tokenizer import load_tokenizer

    model = OmniJetGPT.from_tokenizer(load_tokenizer(tokenizer_file), embed_dim=16, num_blocks=1, num_heads=2,
                                      ff_dim=16)
    tokens = torch.tensor([[[3.0, 40.0, 0.0]]])
    with pytest.raises(ValueError, match=r"outside the tokenizer's vocabulary \[0, 32\)"):
        model(tokens, torch.tensor([[[1.0, 1.0, 0.0]]]))
    # the same id on a padded position is ignored
    assert torch.isfinite(model(tokens, torch.tensor([[[1.0, 0.0, 0.0]]]))["loss"])
