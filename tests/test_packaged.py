"""The checkpoints shipped inside the package load and generate with no option."""

import os

import awkward as ak
import numpy as np
import torch
import uproot
from test_weaver_gpt import command

from omnijet_weaver.models.generative import OmniJetGPT, load_generative
from omnijet_weaver.models.packaged import DATA_DIR, PACKAGED, packaged_path
from omnijet_weaver.models.tokenizer import VQVAE, load_tokenizer


def test_packaged_files_are_small_and_load():
    total = sum(os.path.getsize(os.path.join(DATA_DIR, f)) for f in PACKAGED.values())
    assert total <= 20 * 2**20
    tok = load_tokenizer(packaged_path("tokenizer"))
    gpt = load_generative(packaged_path("gpt"))
    assert isinstance(tok, VQVAE) and isinstance(gpt, OmniJetGPT)
    # the generative model carries the same tokenizer as the stand-alone file
    inner = gpt.tokenizer.state_dict()
    for name, value in tok.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, inner[name]), name

    # the conditional generator: the five classes of scripts/train_conditional.sh, its measured guidance scale
    cond = load_generative(packaged_path("gpt_conditional"))
    assert cond.classes == ("QCD", "Hbb", "Zqq", "Wqq", "Tbqq") and cond.guidance == 1.4
    assert cond.tokenizer.config == gpt.tokenizer.config


def test_generate_with_the_packaged_model(tmp_path):
    out = tmp_path / "gen.root"
    command("generate", "--num-jets", 64, "--output", out, "--seed", 1, "--no-progress")
    a = uproot.open(out)["tree"].arrays()
    n = ak.num(a["part_px"]).to_numpy()
    assert len(a) == 64 and np.all((n >= 1) & (n <= 128))
    # trained on Pythia jets of 500-1000 GeV: generated jets are in that ballpark, not noise
    assert 300 < np.median(a["jet_pt"].to_numpy()) < 1300
    assert 10 < np.median(n) < 128


def test_generate_in_bf16_gives_valid_reproducible_jets(tmp_path):
    runs = []
    for i in range(2):
        out = tmp_path / f"bf16_{i}.root"
        command("generate", "--num-jets", 16, "--output", out, "--seed", 3, "--precision", "bf16", "--no-progress")
        runs.append(uproot.open(out)["tree"].arrays())
    a = runs[0]
    n = ak.num(a["part_token"]).to_numpy()
    assert len(a) == 16 and np.all((n >= 1) & (n <= 128))
    codes = ak.flatten(a["part_token"]).to_numpy()
    assert codes.min() >= 0 and codes.max() < load_generative(packaged_path("gpt")).codebook_size  # codes only
    assert 300 < np.median(a["jet_pt"].to_numpy()) < 1300
    assert ak.all(runs[0]["part_token"] == runs[1]["part_token"])  # same seed, same jets
