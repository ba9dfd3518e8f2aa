"""The real ``weaver`` command line trains the VQ-VAE tokenizer, and its checkpoint works on its own."""

import json
import math
import re
import shutil

import awkward as ak
import numpy as np
import pytest
import torch
from conftest import DATA_CONFIG, NETWORK_CONFIGS, run_weaver
from test_weaver_history import check_history

from omnijet_weaver.models.tokenizer import VQVAE, load_tokenizer
from omnijet_weaver.weaver.dataset import jet_loader
from omnijet_weaver.weaver.history import read_history

TINY_OPTIONS = ["-o", "codebook_size", "32", "-o", "hidden_dim", "32", "-o", "num_blocks", "1", "-o", "num_heads", "4"]
#: Figures of the VQ-VAE's epoch summary (history and log).
FIGURES = {"loss", "recon_loss", "vq_loss", "code_usage", "perplexity", "mass_bias_GeV", "mass_resolution_GeV",
           "replaced_per_step"}


def training_args(toy_root_files, prefix, epochs=4):
    train, val = toy_root_files
    return ["--data-train", train, "--data-val", val, "--data-config", DATA_CONFIG,
            "--network-config", NETWORK_CONFIGS / "omnijet_vqvae.py", *TINY_OPTIONS,
            "--model-prefix", prefix, "--gpus", "", "--num-workers", "0", "--batch-size", "64",
            "--num-epochs", str(epochs), "--steps-per-epoch", "6", "--in-memory", "--fetch-step", "1",
            "--optimizer", "adamw", "--start-lr", "3e-3", "--lr-scheduler", "none"]


def printed_figures(log: str, kind: str) -> list[str]:
    """Our loops' per-epoch summary lines for humans ('Validation epoch 0: loss: 1.2, ...'), as printed."""
    return re.findall(rf"{kind} epoch \d+: (.*)", log)


@pytest.fixture(scope="module")
def trained(toy_root_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("vqvae")
    proc = run_weaver(training_args(toy_root_files, out / "vqvae"), cwd=out)
    return out, proc.stdout + proc.stderr


def test_weaver_trains_with_our_hooks_and_loss_falls(trained):
    out, log = trained
    assert "Using custom train/evaluate functions" in log  # weaver silently falls back otherwise
    history = check_history(out / "vqvae", log, epochs=4, classification=False)
    for r in history:
        assert set(r["train"]) == FIGURES and set(r["val"]) == FIGURES | {"metric"}
        assert r["lr"] == 3e-3 and not r["skipped"]
        for figures in (r["train"], r["val"]):
            assert 0 < figures["code_usage"] <= 1 and 1 <= figures["perplexity"] <= 32
        # weaver's metric is exp(-validation loss): its best epoch is the lowest validation loss
        assert r["val"]["metric"] == math.exp(-r["val"]["loss"])
    assert history[-1]["train"]["recon_loss"] < history[0]["train"]["recon_loss"]
    assert history[-1]["val"]["recon_loss"] < history[0]["val"]["recon_loss"]
    val_losses = [r["val"]["loss"] for r in history]
    assert history[-1]["best_epoch"] == val_losses.index(min(val_losses))
    # the log lines for humans show the same figures (5 significant digits)
    for kind, part in (("Train", "train"), ("Validation", "val")):
        assert printed_figures(log, kind) == [", ".join(f"{k}: {v:.5g}" for k, v in r[part].items() if k != "metric")
                                              for r in history]


def test_resumed_training_appends_to_the_history(trained, toy_root_files, tmp_path):
    """--load-epoch 1 in a copy of the run: epochs 0 and 1 stay as they were, epochs 2 and 3 are the new run's;
    weaver counts the best epoch afresh (its best metric starts from 0 again) and keeps epoch 2's checkpoint."""
    out, _ = trained
    first = [json.loads(line) for line in (out / "vqvae_history.jsonl").read_text().splitlines()]
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    proc = run_weaver([*training_args(toy_root_files, copy / "vqvae"), "--load-epoch", "1"], cwd=copy)
    log = proc.stdout + proc.stderr
    assert "Resume training from epoch 1" in log
    history = read_history(copy / "vqvae")
    assert [r["epoch"] for r in history] == [0, 1, 2, 3] and history[:2] == first[:2]
    assert history[2]["best_epoch"] == 2
    assert re.findall(r"Current validation metric: (\S+)", log) == ["%.5f" % r["val"]["metric"] for r in history[2:]]
    kept = torch.load(copy / "vqvae_best_epoch_state.pt", weights_only=True)
    best = torch.load(copy / f"vqvae_epoch-{history[-1]['best_epoch']}_state.pt", weights_only=True)
    assert all(torch.equal(kept[k], best[k]) for k in kept if isinstance(kept[k], torch.Tensor))


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
