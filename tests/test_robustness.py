"""Bad input: every case gets a one-line cause and a non-zero exit, and nothing half-written is left."""

import os
import subprocess
import sys

import awkward as ak
import numpy as np
import pytest
import torch
import uproot
from conftest import DATA_CONFIG, toy_jets

from omnijet_weaver.io.files import atomic_output, write_parquet, write_root
from omnijet_weaver.models.checkpoint import save_model
from omnijet_weaver.models.generative import OmniJetGPT
from omnijet_weaver.models.tokenizer import VQVAE


def cli(name, *args):
    return subprocess.run([sys.executable, "-m", f"omnijet_weaver.cli.{name}", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def assert_fails(proc, *phrases):
    """Exit 2 and exactly one stderr line, ``omnijet-weaver-<command>: error: ...``, holding every phrase."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("omnijet-weaver-") and ": error: " in lines[0], proc.stderr[-2000:]
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    good = d / "good.root"
    write_root(good, toy_jets(30, seed=5))
    torch.manual_seed(0)
    tok = VQVAE(codebook_size=16, hidden_dim=16, num_blocks=1, num_heads=2)
    save_model(tok, d / "tok.pt")
    save_model(OmniJetGPT.from_tokenizer(tok, embed_dim=16, num_blocks=1, num_heads=2, ff_dim=16), d / "gpt.pt")
    return d, good


def tokenize(d, *inputs, tokenizer=None, output=None, extra=()):
    return cli("tokenize", "--data-config", DATA_CONFIG, "--tokenizer", tokenizer or d / "tok.pt",
               "--output", output or d / "out.parquet", "--no-progress", *extra, *inputs)


def test_missing_file(files):
    d, _ = files
    assert_fails(tokenize(d, d / "nope.root"), "nope.root", "does not exist")


def test_truncated_root_file(files):
    d, good = files
    bad = d / "truncated.root"
    bad.write_bytes(good.read_bytes()[:2000])
    assert_fails(tokenize(d, bad), "truncated.root", "not a readable ROOT file")


def test_truncated_parquet_file(files):
    d, _ = files
    pq = d / "jets.parquet"
    write_parquet(pq, toy_jets(10))
    bad = d / "truncated.parquet"
    bad.write_bytes(pq.read_bytes()[:500])
    assert_fails(tokenize(d, bad), "truncated.parquet", "not a readable parquet file")


def test_rntuple_file(files):
    d, _ = files
    path = d / "rntuple.root"
    with uproot.recreate(path) as f:
        f["tree"] = {"jet_pt": np.ones(3)}  # uproot writes an RNTuple here
    assert_fails(tokenize(d, path), "rntuple.root", "holds no TTree", "omnijet-weaver-convert")
    converted = d / "converted.root"
    assert cli("convert", path, "--output", converted).returncode == 0
    assert type(uproot.open(converted)["tree"]).__name__.startswith("Model_TTree")


def test_missing_branch(files):
    d, _ = files
    jets = toy_jets(10)
    del jets["part_px"]
    path = d / "nopx.root"
    write_root(path, jets)
    assert_fails(tokenize(d, path), "nopx.root", "lacks the branch(es) part_px")


@pytest.mark.parametrize("which,phrase", [("gpt.pt", "holds a 'omnijet_gpt', but one of"),
                                          ("junk.pt", "not a readable PyTorch checkpoint")])
def test_wrong_or_foreign_checkpoint(files, which, phrase):
    d, good = files
    (d / "junk.pt").write_text("hello")
    assert_fails(tokenize(d, good, tokenizer=d / which), which, phrase)


def test_generate_refuses_a_tokenizer_checkpoint(files):
    d, _ = files
    proc = cli("generate", "--checkpoint", d / "tok.pt", "--num-jets", 2, "--output", d / "g.root", "--no-progress")
    assert_fails(proc, "holds a 'vqvae', but one of ['omnijet_gpt'] is expected")


def test_output_in_missing_folder_and_existing_output(files):
    d, good = files
    assert_fails(tokenize(d, good, output=d / "no" / "such" / "dir" / "t.parquet"), "output folder", "does not exist")
    out = d / "exists.parquet"
    out.write_text("keep me")
    assert_fails(tokenize(d, good, output=out), "exists; pass --overwrite")
    assert out.read_text() == "keep me"
    assert tokenize(d, good, output=out, extra=["--overwrite"]).returncode == 0
    assert len(ak.from_parquet(out)) == 30
    proc = cli("generate", "--checkpoint", d / "gpt.pt", "--num-jets", 2, "--output", d / "g.txt", "--no-progress")
    assert_fails(proc, "must end with one of .root, .parquet")


def test_degenerate_jets_are_handled(files):
    """No constituents, more than 128, NaN/inf values, all outside the cone: tokenized without error."""
    d, _ = files
    jets = toy_jets(4, seed=1)
    n = 200
    big = {k: np.linspace(1.0, 2.0, n).astype(np.float32) for k in ("px", "py", "pz")}
    rows = {k: ak.to_list(v) for k, v in jets.items() if k.startswith("part_")}
    rows["part_px"][0], rows["part_py"][0], rows["part_pz"][0] = [], [], []
    rows["part_energy"][0], rows["part_deta"][0], rows["part_dphi"][0] = [], [], []
    for k in ("px", "py", "pz"):
        rows[f"part_{k}"][1] = big[k].tolist()
    rows["part_energy"][1] = (np.sqrt(big["px"] ** 2 + big["py"] ** 2 + big["pz"] ** 2)).tolist()
    rows["part_deta"][1] = [0.1] * n
    rows["part_dphi"][1] = [0.1] * n
    rows["part_px"][2] = [float("nan")] + rows["part_px"][2][1:]
    rows["part_deta"][2] = [float("inf")] + rows["part_deta"][2][1:]
    rows["part_deta"][3] = [1.5] * len(rows["part_deta"][3])  # all outside the 0.8 cone
    jets.update({k: ak.Array([np.asarray(x, dtype=np.float32) for x in v]) for k, v in rows.items()})
    path = d / "degenerate.root"
    write_root(path, jets)
    out = d / "degenerate.parquet"
    proc = tokenize(d, path, output=out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    counts = ak.num(ak.from_parquet(out)["tokens"]).to_list()
    assert counts[0] == 0 and counts[1] == 128 and counts[3] == 0
    assert 0 < counts[2] < len(rows["part_px"][2])  # the NaN / inf constituents are dropped


def test_interrupted_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.parquet"
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(target) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"partial")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []
