"""The real ``weaver`` command line trains the VQ-VAE tokenizer, and its checkpoint works on its own."""

import re

import awkward as ak
import numpy as np
import pytest
import torch

from omnijet_weaver.weaver.dataset import jet_loader
from omnijet_weaver.models.tokenizer import VQVAE, load_tokenizer

from conftest import DATA_CONFIG, NETWORK_CONFIGS, run_weaver

TINY_OPTIONS = ["-o", "codebook_size", "32", "-o", "hidden_dim", "32", "-o", "num_blocks", "1", "-o", "num_heads", "4"]


def epoch_figures(log: str, kind: str) -> list[dict]:
    """Parse our per-epoch summary lines ('Train epoch 0: loss: 1.2, ...') from weaver's log."""
    rows = []
    for line in re.findall(rf"{kind} epoch \d+: (.*)", log):
        rows.append({k: float(v) for k, v in re.findall(r"(\w+): ([-+0-9.eE]+|nan|inf)", line)})
    return rows


@pytest.fixture(scope="module")
def trained(toy_root_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("vqvae")
    train, val = toy_root_files
    proc = run_weaver(
        ["--data-train", train, "--data-val", val, "--data-config", DATA_CONFIG,
         "--network-config", NETWORK_CONFIGS / "omnijet_vqvae.py", *TINY_OPTIONS,
         "--model-prefix", out / "vqvae", "--gpus", "", "--num-workers", "0", "--batch-size", "64",
         "--num-epochs", "4", "--steps-per-epoch", "6", "--in-memory", "--fetch-step", "1",
         "--optimizer", "adamw", "--start-lr", "3e-3", "--lr-scheduler", "none"],
        cwd=out,
    )
    return out, proc.stdout + proc.stderr


def test_weaver_trains_with_our_hooks_and_loss_falls(trained):
    _, log = trained
    assert "Using custom train/evaluate functions" in log  # weaver silently falls back otherwise
    train_rows, val_rows = epoch_figures(log, "Train"), epoch_figures(log, "Validation")
    assert len(train_rows) == len(val_rows) == 4
    for row in train_rows + val_rows:
        assert {"loss", "recon_loss", "vq_loss", "code_usage", "perplexity", "mass_resolution_GeV"} <= row.keys()
        assert 0 < row["code_usage"] <= 1 and 1 <= row["perplexity"] <= 32
    assert train_rows[-1]["recon_loss"] < train_rows[0]["recon_loss"]
    assert val_rows[-1]["recon_loss"] < val_rows[0]["recon_loss"]
    # weaver's best epoch is the one with the lowest validation loss
    best = int(np.argmin([r["loss"] for r in val_rows]))
    metrics = [float(m) for m in re.findall(r"Current validation metric: ([-0-9.eE]+)", log)]
    assert int(np.argmax(metrics)) == best
    # weaver logs the metric with 5 decimals, our losses with 5 significant digits
    assert np.allclose(metrics, np.exp(-np.array([r["loss"] for r in val_rows])), rtol=1e-4, atol=1e-5)


def test_checkpoint_reloads_without_options_and_encodes_a_file(trained, toy_root_files):
    out, _ = trained
    best = out / "vqvae_best_epoch_state.pt"
    tok = load_tokenizer(best)
    assert isinstance(tok, VQVAE) and tok.codebook_size == 32 and tok.config["hidden_dim"] == 32
    assert bool(tok.quantizer.initialized)
    state = torch.load(best, weights_only=True)
    for name, value in tok.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, state[name]), name
    n_jets, n_real = 0, 0
    for X, _, _ in jet_loader(DATA_CONFIG, [toy_root_files[1]], batch_size=50):
        ids, mask = tok.encode(X["pf_points"], X["pf_vectors"], X["pf_mask"])
        pt, eta, phi = tok.decode(ids, mask)
        assert ids.max() < 32 and torch.isfinite(pt).all()
        assert torch.all(pt[mask] > 0) and torch.all(eta[mask].abs() < 3) and torch.all(phi[mask].abs() < 3)
        n_jets, n_real = n_jets + len(ids), n_real + int(mask.sum())
    assert n_jets == 128 and n_real > 128


def test_weaver_predict_with_the_checkpoint(trained, toy_root_files):
    out, _ = trained
    run_weaver(
        ["--predict", "--data-test", toy_root_files[1], "--data-config", DATA_CONFIG,
         "--network-config", NETWORK_CONFIGS / "omnijet_vqvae.py", *TINY_OPTIONS,
         "--model-prefix", out / "vqvae_best_epoch_state.pt", "--gpus", "", "--num-workers", "0",
         "--batch-size", "64", "--predict-output", out / "pred.parquet"],
        cwd=out,
    )
    pred = ak.from_parquet(out / "pred.parquet")
    scores = ak.to_numpy(pred["scores"])
    assert scores.shape == (128, 2)  # per jet: reconstruction MSE, mass difference in GeV
    assert np.all(scores[:, 0] >= 0) and np.isfinite(scores).all()
    assert set(pred.fields) == {"scores", "_label_", "jet_pt", "jet_eta", "jet_phi", "jet_energy", "jet_nparticles"}


def test_wrong_options_for_a_checkpoint_fail_clearly(trained, toy_root_files):
    out, _ = trained
    with pytest.raises(AssertionError, match="codebook_size: checkpoint 32 vs model 64"):
        run_weaver(
            ["--predict", "--data-test", toy_root_files[1], "--data-config", DATA_CONFIG,
             "--network-config", NETWORK_CONFIGS / "omnijet_vqvae.py",
             "-o", "codebook_size", "64", "-o", "hidden_dim", "32", "-o", "num_blocks", "1", "-o", "num_heads", "4",
             "--model-prefix", out / "vqvae_best_epoch_state.pt", "--gpus", "", "--num-workers", "0",
             "--predict-output", out / "bad.parquet"],
            cwd=out,
        )
