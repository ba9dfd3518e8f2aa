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

from omnijet_weaver.evaluation import plots  # noqa: E402
from omnijet_weaver.evaluation.classifiers import classifier_test  # noqa: E402
from omnijet_weaver.evaluation.reconstruction import (  # noqa: E402
    difference_stats,
    gaussian_fit,
    load_jets,
    reconstruct,
    resolutions,
    token_spread,
)
from omnijet_weaver.evaluation.report import OutputExistsError  # noqa: E402
from omnijet_weaver.models.checkpoint import save_model  # noqa: E402
from omnijet_weaver.models.generative import OmniJetGPT, load_generative  # noqa: E402
from omnijet_weaver.models.quantizer import codebook_usage  # noqa: E402
from omnijet_weaver.models.tokenizer import VQVAE, BinnedTokenizer  # noqa: E402
from omnijet_weaver.studies.gen_fidelity import (  # noqa: E402
    GenFidelityConfig,
    distances,
    generated_sample,
    run_gen_fidelity,
    wasserstein_1d,
)
from omnijet_weaver.studies.token_quality import TokenQualityConfig, load_tokenizer_spec, run_token_quality  # noqa: E402


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


def table_rows(md: str) -> list:
    """The body rows of the markdown tables in ``md``, as lists of stripped cells (header separators left out)."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in md.splitlines() if line.startswith("|")]
    return [r for r in rows if not all(set(c) <= set("-:") for c in r)]


def assert_png_layout(path, ratio: bool) -> bool:
    """The PNG decodes, and has the size of its figure at 110 dpi trimmed to the content: 8 x 8 in with the ratio
    panel, 8 x 6 in without (minus the trimmed margins)."""
    import matplotlib.image

    h, w, channels = matplotlib.image.imread(path).shape
    height = (8 if ratio else 6) * 110  # pixels before trimming; bbox_inches="tight" adds 0.1 in on each side
    assert channels == 4 and 0.8 * 880 < w <= 880 + 22 and 0.8 * height < h <= height + 22, (path, w, h)
    return True


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions save, in order (save_figure still writes them)."""
    saved = []
    write = plots.save_figure

    def keep(fig, path, formats=plots.FORMATS):
        saved.append(fig)
        return write(fig, path, formats)

    monkeypatch.setattr(plots, "save_figure", keep)
    return saved


def test_hist_ratio_draws_the_histograms_and_their_ratio(tmp_path, figures):
    from matplotlib.patches import StepPatch

    rng = np.random.default_rng(0)
    samples = {"real": rng.normal(90, 20, 2000), "generated": rng.normal(100, 25, 1500), "other": rng.normal(80, 20, 500)}
    samples["generated"][:3] = [np.nan, np.inf, 1e6]  # dropped (non-finite) and overflow (kept in the count)
    bins = np.linspace(0, 200, 21)
    written = plots.hist_ratio(tmp_path / "mass", samples, bins, reference="real", xlabel="jet mass [GeV]")
    assert written == [tmp_path / "mass.png", tmp_path / "mass.pdf"]
    assert_png_layout(written[0], ratio=True) and written[1].read_bytes()[:4] == b"%PDF"
    ax, rax = figures[0].axes
    steps = [p for p in ax.patches if isinstance(p, StepPatch)]
    density = {}
    for (name, values), step in zip(samples.items(), steps):
        values = values[np.isfinite(values)]
        counts, _ = np.histogram(values, bins)
        density[name] = counts / (counts.sum() * np.diff(bins))
        drawn = step.get_data()
        np.testing.assert_array_equal(drawn.edges, bins)
        np.testing.assert_allclose(drawn.values, density[name], rtol=1e-12)
    assert len(steps) == 3
    assert ax.get_legend_handles_labels()[1] == ["real (2000)", "generated (1498)", "other (500)"]
    assert ax.get_xlim() == (0.0, 200.0) and rax.get_ylim() == (0.0, 2.0)
    # ratio panel: one point per bin at the bin centre, sample / reference, for the two non-reference samples
    points = [line for line in rax.lines if line.get_marker() == "o"]
    assert len(points) == 2
    centres = 0.5 * (bins[1:] + bins[:-1])
    for line, name in zip(points, ("generated", "other")):
        x, y = line.get_data()
        np.testing.assert_allclose(x, centres)
        expected = np.where(density["real"] > 0, density[name] / np.where(density["real"] > 0, density["real"], 1), np.nan)
        np.testing.assert_allclose(y, expected, rtol=1e-12)
    # counts instead of densities, one panel
    plots.hist_ratio(tmp_path / "n", {"a": np.array([0.5, 1.5, 1.5, 2.5, 9.0])}, np.array([0.0, 1, 2, 3]),
                     density=False, ratio=False)
    (ax,) = figures[1].axes
    (step,) = [p for p in ax.patches if isinstance(p, StepPatch)]
    np.testing.assert_array_equal(step.get_data().values, [1, 2, 1])
    assert_png_layout(tmp_path / "n.png", ratio=False)


def test_roc_curve_points_by_hand(tmp_path, figures):
    # scores 0.9 (signal), 0.6 (background), 0.4 (signal), 0.1 (background): after each cut
    # (eps_S, eps_B) = (1/2, 0) [left out: infinite rejection], (1/2, 1/2), (1, 1/2), (1, 1)
    plots.roc_curves(tmp_path / "roc", {"toy": ([1, 0, 1, 0], [0.9, 0.6, 0.4, 0.1])})
    (line,) = figures[0].axes[0].lines
    x, y = line.get_data()
    np.testing.assert_allclose(x, [0.5, 1.0, 1.0])
    np.testing.assert_allclose(y, [2.0, 2.0, 1.0])


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
    assert wasserstein_1d(a, a + 2.5) == pytest.approx(2.5, rel=1e-15)
    assert wasserstein_1d(a, a[::-1]) == 0
    # {0} vs {0, 1}: half the mass moves by 1; {0, 0, 0, 4} vs {1}: 3/4 moves by 1, 1/4 by 3
    assert wasserstein_1d([0.0], [0.0, 1.0]) == pytest.approx(0.5, rel=1e-15)
    assert wasserstein_1d([0.0, 0.0, 0.0, 4.0], [1.0]) == pytest.approx(1.5, rel=1e-15)
    # equal sizes: the mean distance of the sorted values; u_i vs u_i^2 on a grid -> mean(u - u^2) (1/6 for n -> inf)
    u = np.arange(1000) / 1000
    rng = np.random.default_rng(1)
    assert wasserstein_1d(rng.permutation(u), u**2) == pytest.approx(np.mean(u - u**2), rel=1e-12)
    assert wasserstein_1d(u, u**2) == pytest.approx(1 / 6, abs=1e-3)
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
    first_cells = {row[0] for row in table_rows(md)}
    assert {"tiny", "binned 5^3", "binned 41^3", "original"} <= first_cells
    assert "## Resolution" in md and "## Information loss" in md
    saved = json.loads((out / "summary.json").read_text())
    tq = saved["tokenizers"]
    assert tq["binned 41^3"]["resolutions"]["all"]["mass"]["std"] < tq["binned 5^3"]["resolutions"]["all"]["mass"]["std"]
    assert tq["binned 5^3"]["codebook_size"] == 125
    # usage and perplexity are those of the code counts of the same 300 jets
    sample = load_jets(DATA_CONFIG, toy_root_files, max_jets=300)
    for name, tok in (("tiny", load_tokenizer_spec(str(tiny_models[0]))[1]), ("binned 5^3", BinnedTokenizer(5))):
        counts = reconstruct(tok, sample)[1]
        assert counts.sum() == sample.mask.sum()
        usage, perplexity = codebook_usage(counts)
        assert usage == tq[name]["code_usage"] == np.count_nonzero(counts) / tok.codebook_size
        assert perplexity == tq[name]["perplexity"]
    loss = saved["information_loss"]["deepsets"]
    assert set(loss) == {"original", "tiny", "binned 5^3", "binned 41^3"}
    for v in loss.values():  # mean and sample std (ddof 1) of the two seeds' test accuracies, k / 60 each
        acc = [r["accuracy"] for r in v["runs"]]
        assert len(acc) == 2 and all(r["n_test"] == 60 and round(a * 60) == pytest.approx(a * 60, abs=1e-9)
                                     for a, r in zip(acc, v["runs"]))
        assert v["accuracy_mean"] == pytest.approx(np.mean(acc), abs=1e-15)
        assert v["accuracy_std"] == pytest.approx(np.std(acc, ddof=1), abs=1e-15)
        assert f"{v['accuracy_mean']:.4f} ± {v['accuracy_std']:.4f}" in md
    for stem, ratio in (("mass", True), ("tau32", True), ("mass_diff_Tbqq", False), ("pt_diff_QCD", False)):
        assert_png_layout(out / f"{stem}.png", ratio) and (out / f"{stem}.pdf").read_bytes()[:4] == b"%PDF"
    assert (out / "token_spread.pdf").read_bytes()[:4] == b"%PDF"
    assert s["jets"] == 300
    assert not list(tmp_path.glob(".tq.partial-*"))
    with pytest.raises(OutputExistsError, match="--overwrite"):
        run_token_quality(cfg)


def test_gen_fidelity_report(toy_root_files, tiny_models, tmp_path):
    out = tmp_path / "gf"
    cfg = GenFidelityConfig(files=toy_root_files, output=out, checkpoint=str(tiny_models[1]),
                            data_config=str(DATA_CONFIG), num_jets=80, epochs=2, patience=2, progress=False)
    s = run_gen_fidelity(cfg)
    assert s["generated_jets"] == 80 and s["real_jets"] == 80 and s["classifier_test"]["jets_per_sample"] == 80
    # the same samples rebuilt here (all seeded) give the same distances and the same classifier-test AUC
    model = load_generative(tiny_models[1])
    real = load_jets(DATA_CONFIG, toy_root_files, max_jets=80)
    real_rec, _ = reconstruct(model.tokenizer, real)
    gen = generated_sample(model, 80, seed=0)
    w1 = s["w1_generated_vs_reconstructed"]
    assert set(w1) == {"mass", "pt", "n", "tau21", "tau32", "const_pt", "const_eta", "const_phi"}
    assert w1 == distances(gen, real_rec)
    assert s["w1_reconstructed_vs_original"] == distances(real_rec, real)
    scipy_stats = pytest.importorskip("scipy.stats")
    assert w1["mass"] == scipy_stats.wasserstein_distance(gen.observables()[0]["mass"], real_rec.observables()[0]["mass"])
    assert w1["const_pt"] == scipy_stats.wasserstein_distance(gen.observables()[1]["pt"], real_rec.observables()[1]["pt"])
    test = classifier_test(real_rec.features, real_rec.mask, gen.features, gen.mask, width=10, seed=0, max_epochs=2,
                           patience=2)
    assert s["classifier_test"]["auc"] == test.auc and s["classifier_test"]["accuracy"] == test.accuracy
    md = (out / "summary.md").read_text()
    assert "test AUC" in md
    w1_rows = {row[0]: row[1:] for row in table_rows(md)}
    assert w1_rows["jet mass [GeV]"][:3] == [f"{w1['mass']:.4f}", f"{s['w1_real_halves']['mass']:.4f}",
                                             f"{s['w1_reconstructed_vs_original']['mass']:.4f}"]
    for stem in ("mass", "n", "tau21", "const_pt", "const_eta"):
        assert (out / f"{stem}.png").is_file() and (out / f"{stem}.pdf").is_file()


@pytest.mark.parametrize("formats", [(), ("svg",)])
def test_figures_option_picks_the_formats(formats, toy_root_files, tmp_path):
    """``--figures none`` writes the tables alone (and the summary says so); ``--figures svg`` only SVG files."""
    out = tmp_path / "tq"
    cfg = TokenQualityConfig(files=toy_root_files, output=out, data_config=str(DATA_CONFIG), max_jets=50,
                             tokenizers=["binned:5"], classifiers=(), spread_tokens=0, seeds=(0,), figures=formats)
    s = run_token_quality(cfg)
    tables = ("summary.json", "summary.md", ".omnijet-weaver-token-quality")  # and the folder's marker
    suffixes = {p.suffix for p in out.iterdir() if p.name not in tables}
    assert suffixes == {f".{f}" for f in formats}
    md = (out / "summary.md").read_text()
    assert ("None written (`--figures none`)" in md) == (not formats)
    for stems in s["figures"].values():
        assert all((out / name).is_file() and name.endswith(".svg") for name in stems)
    assert bool(s["figures"]) == bool(formats)


def test_unknown_figure_format_is_refused(toy_root_files, tmp_path):
    cfg = TokenQualityConfig(files=toy_root_files, output=tmp_path / "tq", data_config=str(DATA_CONFIG),
                             figures=("gif",))
    with pytest.raises(ValueError, match=r"unknown figure format\(s\) gif: choose from png, pdf, svg \(or none\)"):
        run_token_quality(cfg)
    assert not list(tmp_path.iterdir())


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
