"""Evaluation: reconstruction figures, Gaussian fits, W1, token spread, and the two report commands on tiny inputs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("fastjet")
pytest.importorskip("matplotlib")

from conftest import DATA_CONFIG  # noqa: E402
from omnijet_weaver.models.checkpoint import save_model  # noqa: E402
from omnijet_weaver.evaluation.reconstruction import (  # noqa: E402
    difference_stats, gaussian_fit, load_jets, reconstruct, resolutions, token_spread)
from omnijet_weaver.studies.gen_fidelity import GenFidelityConfig, run_gen_fidelity, wasserstein_1d  # noqa: E402
from omnijet_weaver.models.generative import OmniJetGPT  # noqa: E402
from omnijet_weaver.evaluation.report import OutputExistsError  # noqa: E402
from omnijet_weaver.studies.token_quality import TokenQualityConfig, load_tokenizer_spec, run_token_quality  # noqa: E402
from omnijet_weaver.models.tokenizer import VQVAE, BinnedTokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    tok = VQVAE(codebook_size=16, hidden_dim=16, num_blocks=1, num_heads=2).eval()
    save_model(tok, d / "vqvae.pt")
    save_model(OmniJetGPT.from_tokenizer(tok, embed_dim=16, num_blocks=1, num_heads=2, ff_dim=16), d / "gpt.pt")
    return d / "vqvae.pt", d / "gpt.pt"


@pytest.fixture(scope="module")
def sample(toy_root_files):
    return load_jets(DATA_CONFIG, toy_root_files, max_jets=300)


def test_gaussian_fit_recovers_core_despite_tails():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(1.5, 2.0, 20000), rng.uniform(-60, 60, 2000)])  # core + 9 % flat tails
    mean, sigma = gaussian_fit(x)
    assert mean == pytest.approx(1.5, abs=0.1)
    assert sigma == pytest.approx(2.0, rel=0.08)
    assert np.std(x) > 5 * sigma  # the plain std would be dominated by the tails
    s = difference_stats(x)
    assert s["sigma"] == pytest.approx(sigma) and s["std"] == pytest.approx(np.std(x))
    assert np.isnan(gaussian_fit([1.0, 2.0])[0])


def test_wasserstein_by_hand():
    a = np.array([0.0, 1.0, 3.0])
    assert wasserstein_1d(a, a + 2.5) == pytest.approx(2.5)
    assert wasserstein_1d(a, a[::-1]) == 0
    # {0} vs {0, 1}: half the mass moves by 1
    assert wasserstein_1d([0.0], [0.0, 1.0]) == pytest.approx(0.5)
    rng = np.random.default_rng(1)
    x, y = rng.normal(0, 1, 500), rng.exponential(1, 700)
    scipy_stats = pytest.importorskip("scipy.stats")
    assert wasserstein_1d(x, y) == pytest.approx(scipy_stats.wasserstein_distance(x, y), rel=1e-10)
    assert np.isnan(wasserstein_1d([], [1.0]))


def test_load_and_reconstruct(sample):
    assert len(sample) == 300 and sample.features.shape == (300, 128, 3) and sample.class_names == ["QCD", "Tbqq"]
    assert set(np.unique(sample.label)) == {0, 1}
    assert not sample.features[~sample.mask].any()
    # a fine grid reconstructs every constituent to within half a cell; a coarse one does not
    fine, counts = reconstruct(BinnedTokenizer(201), sample)
    coarse, _ = reconstruct(BinnedTokenizer(5), sample)
    assert counts.sum() == sample.mask.sum()
    assert np.abs(fine.features - sample.features)[sample.mask].max() < 0.06
    res_fine = resolutions(sample.observables()[0], fine.observables()[0], sample.label, sample.class_names)
    res_coarse = resolutions(sample.observables()[0], coarse.observables()[0], sample.label, sample.class_names)
    assert set(res_fine) == {"all", "QCD", "Tbqq"} and set(res_fine["all"]) == {"mass", "pt", "tau21", "tau32"}
    for obs in ("mass", "tau21"):
        assert res_fine["all"][obs]["std"] < res_coarse["all"][obs]["std"]
    assert res_fine["Tbqq"]["mass"]["jets"] == int((sample.label == 1).sum())


def test_taken_jets_keep_their_observables(sample):
    """A subsample hands on the jet observables already computed (no second FastJet pass): they equal a fresh
    computation on the same jets, and the constituent observables are those of the subsample only."""
    jets, consts = sample.observables()
    idx = np.arange(0, len(sample), 3)
    part = sample.take(idx)
    assert part._jet_observables is not None  # handed on, not recomputed
    fresh = type(sample)(part.features, part.mask)
    fj, fc = fresh.observables()
    pj, pc = part.observables()
    for k in fj:
        np.testing.assert_allclose(pj[k], fj[k], rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(pj[k], jets[k][idx])
    for k in fc:
        assert len(pc[k]) == part.mask.sum() < len(consts[k])
        np.testing.assert_array_equal(pc[k], fc[k])


def test_token_spread_conditional_vs_binned(tiny_models):
    cond = load_tokenizer_spec(str(tiny_models[0]))[1]
    s_cond = token_spread(cond, [1, 2], repeats=40, context=10)
    s_bin = token_spread(BinnedTokenizer(7), [0, 100], repeats=40, context=10)
    assert s_cond.shape == (2, 40, 3)
    assert (s_cond.std(axis=1) > 0).all()  # the conditional decoder moves a token with its neighbours
    assert np.allclose(s_bin.std(axis=1), 0, atol=1e-6)  # a grid cell decodes to its centre, always
    assert not np.allclose(s_bin[0, 0], s_bin[1, 0])
    with pytest.raises(ValueError, match="tokens must be in"):
        token_spread(BinnedTokenizer(3), [27])


def test_tokenizer_specs(tiny_models, tmp_path):
    assert load_tokenizer_spec("binned:9")[0] == "binned 9^3"
    name, tok = load_tokenizer_spec(f"mine={tiny_models[1]}")  # a generative checkpoint: its tokenizer
    assert name == "mine" and tok.codebook_size == 16
    with pytest.raises(ValueError, match="integer"):
        load_tokenizer_spec("binned:x")
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_tokenizer_spec(str(tmp_path / "nope.pt"))


def test_token_quality_report(toy_root_files, tiny_models, tmp_path):
    out = tmp_path / "tq"
    cfg = TokenQualityConfig(files=toy_root_files, output=out, data_config=str(DATA_CONFIG), max_jets=300,
                             tokenizers=[f"tiny={tiny_models[0]}", "binned:5", "binned:41"], classifiers=("deepsets",),
                             seeds=(0, 1), epochs=2, patience=2, spread_tokens=3, spread_repeats=20)
    s = run_token_quality(cfg)
    md = (out / "summary.md").read_text()
    for name in ("tiny", "binned 5^3", "binned 41^3", "original"):
        assert f"| {name} |" in md
    assert "## Resolution" in md and "## Information loss" in md
    saved = json.loads((out / "summary.json").read_text())
    tq = saved["tokenizers"]
    assert tq["binned 41^3"]["resolutions"]["all"]["mass"]["std"] < tq["binned 5^3"]["resolutions"]["all"]["mass"]["std"]
    assert 0 < tq["tiny"]["code_usage"] <= 1 and tq["binned 5^3"]["codebook_size"] == 125
    loss = saved["information_loss"]["deepsets"]
    assert set(loss) == {"original", "tiny", "binned 5^3", "binned 41^3"}
    assert all(0 <= v["accuracy_mean"] <= 1 and len(v["runs"]) == 2 for v in loss.values())
    for stem in ("mass", "tau32", "mass_diff_Tbqq", "pt_diff_QCD", "token_spread"):
        assert (out / f"{stem}.png").stat().st_size > 1000 and (out / f"{stem}.pdf").is_file()
    assert s["jets"] == 300
    assert not list(tmp_path.glob(".tq.partial-*"))
    with pytest.raises(OutputExistsError, match="--overwrite"):
        run_token_quality(cfg)


def test_gen_fidelity_report(toy_root_files, tiny_models, tmp_path):
    out = tmp_path / "gf"
    cfg = GenFidelityConfig(files=toy_root_files, output=out, checkpoint=str(tiny_models[1]),
                            data_config=str(DATA_CONFIG), num_jets=80, epochs=2, patience=2, progress=False)
    s = run_gen_fidelity(cfg)
    assert s["generated_jets"] == 80 and s["real_jets"] == 80
    assert 0 <= s["classifier_test"]["auc"] <= 1 and s["classifier_test"]["jets_per_sample"] == 80
    w1 = s["w1_generated_vs_reconstructed"]
    assert set(w1) == {"mass", "pt", "n", "tau21", "tau32", "const_pt", "const_eta", "const_phi"}
    assert all(np.isfinite(v) and v >= 0 for v in w1.values())
    md = (out / "summary.md").read_text()
    assert "test AUC" in md and "| jet mass [GeV] |" in md
    for stem in ("mass", "n", "tau21", "const_pt", "const_eta"):
        assert (out / f"{stem}.png").is_file() and (out / f"{stem}.pdf").is_file()


def test_failed_run_leaves_nothing(toy_root_files, tmp_path):
    out = tmp_path / "tq"
    cfg = TokenQualityConfig(files=toy_root_files, output=out, data_config=str(DATA_CONFIG), max_jets=50,
                             tokenizers=["binned:5"], classifiers=("deepsets",), epochs=1, spread_tokens=0,
                             seeds=(0,))
    tq = __import__("omnijet_weaver.studies.token_quality", fromlist=["TokenQuality"]).TokenQuality(cfg)
    tq.information_loss = lambda *a: (_ for _ in ()).throw(RuntimeError("interrupted"))
    with pytest.raises(RuntimeError, match="interrupted"):
        tq.run()
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("cmd", ["omnijet_weaver.cli.token_quality", "omnijet_weaver.cli.gen_fidelity"])
def test_cli_errors_are_one_line(cmd, tmp_path):
    proc = subprocess.run([sys.executable, "-m", cmd, str(tmp_path / "missing.root"), "--output", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [x for x in proc.stderr.strip().splitlines() if x]
    assert len(lines) == 1 and "missing.root" in lines[0] and "does not exist" in lines[0]
    assert not (tmp_path / "o").exists()
