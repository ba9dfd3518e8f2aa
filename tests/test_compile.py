"""weaver's ``--compile`` (``compile_model``) with our network configs: the trimmed sequence length is rounded up
to a multiple of 32 (as weaver's ParT does with ``round_to_32``), and a compiled tagger and GPT forward recompile
at most twice over batches of ten different multiplicities and give the eager outputs.

The models are compiled as weaver compiles them (``torch.compile(model)``, plus ``dynamic=False`` as
``--compiler-option dynamic False`` gives) with the ``aot_eager`` backend: dynamo's graph capture, guards and
recompilations are those of any backend, without the C++ code generation of inductor (slow on a CI machine).
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from conftest import DATA_CONFIG
from test_tagger import load_data_config, make_checkpoints

from omnijet_weaver.models.features import FeatureTransform
from omnijet_weaver.weaver.networks import COMPILE_ROUND_TO, gpt_model, tagger_model, vqvae_model

MULTIPLICITIES = (5, 17, 40, 63, 70, 90, 100, 33, 128, 12)  # the longest jet of each batch


@pytest.fixture(scope="module")
def models(toy_root_files, tmp_path_factory):
    folder = tmp_path_factory.mktemp("compile")
    tok, gpt = make_checkpoints(folder, toy_root_files[0])
    dc = load_data_config(DATA_CONFIG)
    return {
        "tagger": lambda compile_model: tagger_model(dc, pretrained=str(gpt), compile_model=compile_model)[0],
        "gpt": lambda compile_model: gpt_model(dc, tokenizer=str(tok), embed_dim=16, num_blocks=1, num_heads=2,
                                               ff_dim=16, compile_model=compile_model)[0],
        "vqvae": lambda compile_model: vqvae_model(dc, codebook_size=32, hidden_dim=8, num_blocks=1, num_heads=2,
                                                   compile_model=compile_model)[0],
    }


def batch(longest: int, size: int = 6, length: int = 128, seed: int = 0):
    """ParT kin inputs (points, features, vectors, mask) of ``size`` jets, the longest with ``longest`` particles."""
    g = torch.Generator().manual_seed(seed + longest)
    points = 0.2 * torch.rand(size, 2, length, generator=g) - 0.1
    vectors = 1 + 50 * torch.rand(size, 4, length, generator=g)
    n = torch.randint(1, longest + 1, (size,), generator=g)
    n[0] = longest
    mask = (torch.arange(length)[None, :] < n[:, None]).float()[:, None, :]
    return points, torch.zeros(size, 4, length), vectors, mask


def test_round_to_gives_multiples_of_32_capped_at_max_particles():
    transform = FeatureTransform(round_to=COMPILE_ROUND_TO)
    plain = FeatureTransform()
    for longest in MULTIPLICITIES:
        points, _, vectors, mask = batch(longest)
        features, keep = transform(points, vectors, mask)
        ref_features, ref_keep = plain(points, vectors, mask)
        expected = min(128, -(-longest // 32) * 32)
        assert features.shape[1] == keep.shape[1] == expected and ref_keep.shape[1] == longest
        # the same constituents, then padding (mask False, features 0)
        assert torch.equal(keep[:, :longest], ref_keep) and not keep[:, longest:].any()
        assert torch.equal(features[:, :longest], ref_features) and not features[:, longest:].any()


def test_compile_model_sets_the_rounding_and_nothing_else(models, toy_root_files):
    dc = load_data_config(DATA_CONFIG)
    for name in ("tagger", "gpt"):
        build = models[name]
        assert build(True).tokenizer.transform.round_to == COMPILE_ROUND_TO, name
        assert build(False).tokenizer.transform.round_to == 1, name
    assert vqvae_model(dc, codebook_size=8, hidden_dim=8, num_blocks=1, num_heads=2,
                       compile_model=True)[0].transform.round_to == COMPILE_ROUND_TO
    assert "round_to" not in build(True).config["tokenizer"]["config"]  # a run-time setting, not in checkpoints


@pytest.mark.parametrize("name", ["vqvae", "gpt", "tagger"])
def test_training_forward_breaks_the_graph_only_for_the_trimmed_length(models, name):
    """No host synchronisation in a training forward but the one weaver's ParT has too (the trimmed length,
    read outside the graph): a data-dependent op (``nonzero``, a boolean index, ``.item()``, ``bincount``) would
    show as a graph break. The VQ-VAE's k-means init (first batch) is done first; its dead-code replacement
    runs in every step here (``replace_freq=1``: codes unused in a batch are replaced)."""
    torch._dynamo.reset()
    model = models[name](True).train()
    if name == "vqvae":
        model.quantizer.replace_freq = 1
    model(*batch(40))  # k-means init (VQ-VAE)
    explained = torch._dynamo.explain(model)(*batch(5))  # <= 30 constituents for 32 codes: some die
    reasons = [str(r.reason) for r in explained.break_reasons]
    assert reasons and all("_trimmed_length" in r for r in reasons), reasons
    if name == "vqvae":  # and the replacement did run inside the graph
        assert int(model.quantizer.last_num_replaced) > 0


def outputs(model, name, inputs):
    out = model(*inputs)
    return out if name == "tagger" else out["loss"][None]


def rounded(longest):
    return min(128, -(-longest // COMPILE_ROUND_TO) * COMPILE_ROUND_TO)


@pytest.mark.parametrize("dynamic", [None, False])
@pytest.mark.parametrize("name", ["tagger", "gpt"])
def test_compiled_forward_recompiles_little_and_matches_eager(models, name, dynamic):
    """weaver's default ``torch.compile(model)``: at most two recompilations of any frame over the ten batches
    (in fact one: dynamo recompiles once with dynamic shapes); ``dynamic=False``: one compilation per rounded
    length (4 here), where each multiplicity would be one (10)."""
    torch._dynamo.reset()
    model = models[name](True).eval()
    graphs = []

    def backend(gm, example_inputs):  # aot_eager, counting the graphs dynamo hands over
        graphs.append(gm)
        from torch._dynamo.backends.debugging import aot_eager

        return aot_eager(gm, example_inputs)

    compiled = torch.compile(model, backend=backend, dynamic=dynamic)
    lengths = {rounded(n) for n in MULTIPLICITIES}
    assert len(lengths) == 4
    limit = 3 if dynamic is None else len(lengths)  # compilations per frame: the first + at most 2 recompilations
    first = None
    with torch._dynamo.config.patch(recompile_limit=limit, fail_on_recompile_limit_hit=True):
        for i, longest in enumerate(MULTIPLICITIES):
            inputs = batch(longest)
            with torch.no_grad():
                expected, got = outputs(model, name, inputs), outputs(compiled, name, inputs)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
            if i == 0:
                first = len(graphs)
    assert first >= 1 and len(graphs) <= limit * first
    if dynamic is None:
        assert len(graphs) <= 2 * first  # one recompilation (dynamic shapes), none after


def test_without_compile_model_each_multiplicity_is_a_new_shape(models):
    """The baseline the rounding fixes: with ``dynamic=False`` every multiplicity recompiles."""
    torch._dynamo.reset()
    model = models["tagger"](False).eval()
    compiled = torch.compile(model, backend="aot_eager", dynamic=False)
    with torch._dynamo.config.patch(recompile_limit=4, fail_on_recompile_limit_hit=True):
        with pytest.raises(Exception, match="recompile_limit|FailOnRecompileLimitHit|recompile"):
            with torch.no_grad():
                for longest in MULTIPLICITIES[:6]:
                    compiled(*batch(longest))
