"""The OmniJet-alpha tagger (network_configs/omnijet_cls.py) as a drop-in replacement for ParT in weaver.

Everything here goes through the real ``weaver`` command line with tiny models: fine-tuning from a generative
checkpoint, frozen backbone, from scratch, ``--load-model-weights gpt.pt``, ``--predict``; the data configs of
the other benchmark datasets (JetClass 10 classes, Top landscape, quark/gluon) on the shared real samples.
"""

from __future__ import annotations

import re

import awkward as ak
import numpy as np
import pytest
import torch
import uproot
from conftest import DATA_CONFIG, NETWORK_CONFIGS, ROOT, run_weaver, shared_file
from test_weaver_history import check_history

from omnijet_weaver.constants import JETCLASS_LABELS
from omnijet_weaver.models.checkpoint import save_model
from omnijet_weaver.models.generative import OmniJetGPT
from omnijet_weaver.models.tokenizer import VQVAE
from omnijet_weaver.weaver.dataset import jet_loader

CLS_CONFIG = NETWORK_CONFIGS / "omnijet_cls.py"
CONFIGS = ROOT / "data_configs"
#: The shared real samples and the data configs that read them: (folder/file, config, class counts).
REAL_SAMPLES = {
    "toplandscape": ("TopLandscape_test_2000.parquet", CONFIGS / "toplandscape.yaml", {"jet_isTop": 940, "jet_isQCD": 1060}),
    "quarkgluon": ("QG_test_2000_noPID.parquet", CONFIGS / "quarkgluon.yaml", {"jet_isQ": 990, "jet_isG": 1010}),
}
#: Sizes of the tiny generative model the tagger starts from.
GPT_SIZES = {"embed_dim": 32, "num_blocks": 2, "num_heads": 4, "ff_dim": 64}
SIZE_OPTIONS = [x for k, v in GPT_SIZES.items() for x in ("-o", k, str(v))]
INPUTS = ("pf_points", "pf_features", "pf_vectors", "pf_mask")


def make_checkpoints(folder, train_file, data_config=DATA_CONFIG):
    """A tiny tokenizer (codebook 32, k-means on toy jets) and a tiny generative model around it, pre-trained
    for a few next-token steps, saved as ``folder/tok.pt`` and ``folder/gpt.pt`` (as weaver saves them)."""
    torch.manual_seed(0)
    tok = VQVAE(codebook_size=32, hidden_dim=16, num_blocks=1, num_heads=2).train()
    X, _, _ = next(iter(jet_loader(data_config, [train_file], batch_size=128)))
    tok(*[X[k] for k in INPUTS])  # k-means init of the codebook
    tok.eval()
    save_model(tok, folder / "tok.pt")
    gpt = OmniJetGPT.from_tokenizer(tok, **GPT_SIZES)
    opt = torch.optim.Adam([p for p in gpt.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(3):
        opt.zero_grad()
        gpt(*[X[k] for k in INPUTS])["loss"].backward()
        opt.step()
    save_model(gpt.eval(), folder / "gpt.pt")
    return folder / "tok.pt", folder / "gpt.pt"


def mode_options(mode: str, tok, gpt) -> list[str]:
    """weaver arguments of a tagger training mode."""
    return {
        "finetune": ["-o", "pretrained", repr(str(gpt))],
        "frozen": ["-o", "pretrained", repr(str(gpt)), "-o", "freeze_backbone", "True"],
        "scratch": ["-o", "pretrained", "None", "-o", "tokenizer", repr(str(tok)), *SIZE_OPTIONS],
        "load_weights": ["-o", "pretrained", "None", "-o", "tokenizer", repr(str(tok)), *SIZE_OPTIONS,
                         "--load-model-weights", str(gpt)],
    }[mode]


def load_data_config(path):
    from weaver.utils.dataset import DataConfig

    return DataConfig.load(str(path), load_observers=False, load_reweight_info=False)


def part(state: dict, prefix: str) -> dict:
    """The tensors of ``state`` under ``prefix.`` (descriptions left out)."""
    return {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".") and isinstance(v, torch.Tensor)}


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys() and a
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def assert_identical(a: dict, b: dict, what: str):
    assert a.keys() == b.keys() and a, what
    for k in a:
        assert torch.equal(a[k], b[k]), f"{what}: {k} differs"


def check_classification_log(log: str):
    """weaver ran its classification loop with our loss through our pass-through hooks, and did not fall back to
    a default for the network."""
    assert "Train AvgLoss" in log
    assert "Using custom train/evaluate functions" in log and "Running in classification mode" not in log
    assert "omnijet_cls: weaver's own train/evaluate functions, passed through" in log
    assert "Using loss function CrossEntropyLoss()" in log
    assert "Loss function not defined" not in log and "Error in flops" not in log


def training_args(mode, tok, gpt, toy_root_files, prefix, network_config=CLS_CONFIG) -> list:
    """The tiny weaver tagger training of the tests (seeded): weaver's default optimizer (ranger = RAdam +
    Lookahead, which also moves parameters without gradient); 6 steps per epoch so that Lookahead steps too."""
    train, val = toy_root_files
    return ["--data-train", train, "--data-val", val, "--data-config", DATA_CONFIG,
            "--network-config", network_config, *mode_options(mode, tok, gpt), "-o", "seed", "3",
            "--model-prefix", prefix, "--gpus", "", "--num-workers", "0", "--batch-size", "32", "--num-epochs", "2",
            "--steps-per-epoch", "6", "--steps-per-epoch-val", "1", "--in-memory", "--fetch-step", "1",
            "--lr-scheduler", "none", "--start-lr", "1e-2"]


@pytest.fixture(scope="module")
def checkpoints(toy_root_files, tmp_path_factory):
    return make_checkpoints(tmp_path_factory.mktemp("pretrained"), toy_root_files[0])


@pytest.fixture(scope="module")
def weaver_runs(toy_root_files, checkpoints, tmp_path_factory):
    """Train the tagger with weaver in a mode (once per mode): returns (model prefix, log)."""
    tok, gpt = checkpoints
    done = {}

    def run(mode):
        if mode not in done:
            out = tmp_path_factory.mktemp(mode)
            proc = run_weaver(training_args(mode, tok, gpt, toy_root_files, out / "cls"), cwd=out)
            done[mode] = (out / "cls", proc.stdout + proc.stderr)
        return done[mode]

    return run


# --- data configs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REAL_SAMPLES))
def test_parquet_configs_read_the_real_samples(name):
    file, config, counts = REAL_SAMPLES[name]
    path = shared_file("real", file)
    dc = load_data_config(config)
    assert tuple(dc.input_names) == INPUTS and list(dc.label_value) == list(counts)
    labels, n = [], 0
    for X, y, Z in jet_loader(config, [path], batch_size=500):
        assert X["pf_features"].shape[1:] == (7, 128) and X["pf_points"].shape[1:] == (2, 128)
        assert X["pf_vectors"].shape[1:] == (4, 128) and X["pf_mask"].shape[1:] == (1, 128)
        n_real = X["pf_mask"][:, 0].sum(1).numpy()
        np.testing.assert_array_equal(n_real, np.minimum(np.asarray(Z["jet_nparticles"]), 128))
        # ParT's pT-log features: part_pt_log standardised with (1.7, 0.7), clipped to [-5, 5]
        pt = torch.hypot(X["pf_vectors"][:, 0], X["pf_vectors"][:, 1])
        real = X["pf_mask"][:, 0] > 0
        expected = ((torch.log(pt[real]) - 1.7) * 0.7).clamp(-5, 5)
        torch.testing.assert_close(X["pf_features"][:, 0][real], expected, rtol=1e-4, atol=1e-4)
        labels.append(y["_label_"].numpy())
        n += len(n_real)
    table = ak.from_parquet(path, columns=["label"])
    assert n == len(table) == 2000
    labels = np.concatenate(labels)
    assert dict(zip(counts, np.bincount(labels, minlength=2).tolist())) == counts
    # class 0 of the config is label == 1 of the file (top / quark), as in particle_transformer's configs
    np.testing.assert_array_equal(labels == 0, table["label"].to_numpy() == 1)


def test_jetclass_config_has_ten_classes(tmp_path, checkpoints):
    from omnijet_weaver.io.files import convert_to_ttree
    from omnijet_weaver.weaver.networks import tagger_model

    config = CONFIGS / "jetclass.yaml"
    dc = load_data_config(config)
    assert list(dc.label_value) == list(JETCLASS_LABELS) and tuple(dc.input_names) == INPUTS
    model, info = tagger_model(dc, pretrained=str(checkpoints[1]))
    assert model.head.out.out_features == 10 and info["output_names"] == ["softmax"]
    src = shared_file("real", "JetClass_mixed500.root")
    tree = tmp_path / "mixed.root"
    convert_to_ttree(src, tree)  # the shared file is an RNTuple
    labels = []
    with torch.no_grad():
        for X, y, Z in jet_loader(config, [tree], batch_size=250):
            assert set(Z) == {"jet_pt", "jet_eta", "jet_phi", "jet_energy", "jet_nparticles"}
            assert model(*[X[k] for k in INPUTS]).shape == (len(y["_label_"]), 10)
            labels.append(y["_label_"].numpy())
    counts = np.bincount(np.concatenate(labels), minlength=10)
    assert counts.sum() == 500 and counts.min() >= 33 and counts.max() <= 65


# --- the model weaver builds ---------------------------------------------------------------------------------


def test_fine_tuning_starts_from_the_backbone(checkpoints, toy_root_files):
    from omnijet_weaver.weaver.networks import tagger_model

    tok, gpt = checkpoints
    dc = load_data_config(DATA_CONFIG)
    gpt_state = torch.load(gpt, weights_only=True)
    tok_state = {k: v for k, v in torch.load(tok, weights_only=True).items() if isinstance(v, torch.Tensor)}

    model, _ = tagger_model(dc, pretrained=str(gpt))
    state = model.state_dict()
    assert_identical(part(state, "backbone"), part(gpt_state, "backbone"), "fine-tune backbone")
    assert_identical(part(state, "tokenizer"), tok_state, "tokenizer")
    assert all(p.requires_grad for p in model.backbone.parameters())
    assert not any(p.requires_grad for p in model.tokenizer.parameters())

    frozen, _ = tagger_model(dc, pretrained=str(gpt), freeze_backbone=True)
    assert_identical(part(frozen.state_dict(), "backbone"), part(gpt_state, "backbone"), "frozen backbone")
    assert not any(p.requires_grad for p in frozen.backbone.parameters())
    assert all(p.requires_grad for p in frozen.head.parameters())

    scratch, _ = tagger_model(dc, pretrained=None, tokenizer=str(tok), **GPT_SIZES)
    assert_identical(part(scratch.state_dict(), "tokenizer"), tok_state, "scratch tokenizer")
    assert max_difference(part(scratch.state_dict(), "backbone"), part(gpt_state, "backbone")) > 0.1

    # weaver's --load-model-weights: a non-strict load of the generative state dict
    missing, unexpected = scratch.load_state_dict(gpt_state, strict=False)
    assert set(missing) == {k for k in scratch.state_dict() if k.startswith("head.")}
    assert set(unexpected) == {k for k in gpt_state if k.startswith("head.")}
    assert_identical(part(scratch.state_dict(), "backbone"), part(gpt_state, "backbone"), "loaded backbone")

    # the tagger sees the same ParT inputs as ParT and returns logits (probabilities for inference)
    X, _, _ = next(iter(jet_loader(DATA_CONFIG, [toy_root_files[1]], batch_size=16)))
    with torch.no_grad():
        logits = model.eval()(*[X[k] for k in INPUTS])
        inference = tagger_model(dc, pretrained=str(gpt), for_inference=True)[0]
        inference.load_state_dict(model.state_dict())
        probs = inference.eval()(*[X[k] for k in INPUTS])
    assert logits.shape == (16, 2)
    torch.testing.assert_close(probs, torch.softmax(logits, 1))


# --- weaver trains it ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["finetune", "frozen", "scratch", "load_weights"])
def test_weaver_trains_the_tagger(weaver_runs, checkpoints, mode):
    tok, gpt = checkpoints
    prefix, log = weaver_runs(mode)
    check_classification_log(log)
    # the history: weaver's own figures (AvgLoss, AvgAcc, validation metric = accuracy) and best epoch
    history = check_history(prefix, log, epochs=2, classification=True)
    for r in history:
        assert r["val"]["metric"] == r["val"]["accuracy"] and r["lr"] == 1e-2 and not r["skipped"]
        assert set(r["train"]) == {"loss", "accuracy"} and set(r["val"]) == {"loss", "accuracy", "metric"}
    gpt_backbone = part(torch.load(gpt, weights_only=True), "backbone")
    tok_state = {k: v for k, v in torch.load(tok, weights_only=True).items() if isinstance(v, torch.Tensor)}
    epochs = [torch.load(f"{prefix}_epoch-{i}_state.pt", weights_only=True) for i in (0, 1)]
    best = torch.load(f"{prefix}_best_epoch_state.pt", weights_only=True)
    for state in epochs + [best]:
        assert_identical(part(state, "tokenizer"), tok_state, f"{mode}: tokenizer")  # always frozen
        assert best["_extra_state"]["kind"] == "omnijet_tagger"
    # the head trains in every mode
    assert max_difference(part(epochs[0], "head"), part(epochs[1], "head")) > 1e-4
    distance = max_difference(part(best, "backbone"), gpt_backbone)
    if mode == "frozen":
        for state in epochs + [best]:
            assert_identical(part(state, "backbone"), gpt_backbone, "frozen backbone")
    elif mode == "scratch":
        assert distance > 1  # a fresh initialisation, far from the pre-trained weights
    else:
        # fine-tuning starts from the pre-trained backbone (a few small steps away) and changes it
        assert 1e-4 < distance < 0.5, distance
    if mode == "load_weights":
        loaded = re.search(r"Model initialized with weights from .*?Missing: (\[.*?\])\s*\n.*?Unexpected: (\[.*?\])",
                           log, re.S)
        assert loaded, "weaver did not load the weights"
        missing, unexpected = eval(loaded.group(1)), eval(loaded.group(2))
        assert missing and all(k.startswith("head.") for k in missing)
        assert unexpected and all(k.startswith("head.") for k in unexpected)


#: A network config with the tagger but without train / evaluate hooks: weaver uses its own loops.
PLAIN_CONFIG = '''
from omnijet_weaver.weaver.networks import tagger_model


def get_model(data_config, **kwargs):
    return tagger_model(data_config, **kwargs)


def get_loss(data_config, **kwargs):
    import torch

    return torch.nn.CrossEntropyLoss()
'''


def test_pass_through_trains_exactly_as_weavers_own_loops(weaver_runs, checkpoints, toy_root_files, tmp_path):
    """The same seeded training with weaver's own loops (a network config without hooks): the same weights after
    every epoch, the same printed figures, the same best epoch as through our pass-through hooks."""
    tok, gpt = checkpoints
    prefix, log = weaver_runs("finetune")
    config = tmp_path / "plain_cls.py"
    config.write_text(PLAIN_CONFIG)
    proc = run_weaver(training_args("finetune", tok, gpt, toy_root_files, tmp_path / "cls", config), cwd=tmp_path)
    plain = proc.stdout + proc.stderr
    assert "Running in classification mode" in plain and "Using custom train/evaluate functions" not in plain
    assert not (tmp_path / "cls_history.jsonl").exists()
    for name in ("epoch-0_state", "epoch-1_state", "best_epoch_state", "epoch-1_optimizer"):
        ours = torch.load(f"{prefix}_{name}.pt", weights_only=True)
        theirs = torch.load(tmp_path / f"cls_{name}.pt", weights_only=True)
        if "optimizer" in name:
            ours, theirs = ours["state"], theirs["state"]
            ours = {f"{i}.{k}": v for i, s in ours.items() for k, v in s.items() if isinstance(v, torch.Tensor)}
            theirs = {f"{i}.{k}": v for i, s in theirs.items() for k, v in s.items() if isinstance(v, torch.Tensor)}
        assert_identical({k: v for k, v in ours.items() if isinstance(v, torch.Tensor)},
                         {k: v for k, v in theirs.items() if isinstance(v, torch.Tensor)}, name)
    for pattern in (r"Train AvgLoss: \S+, AvgAcc: \S+", r"Eval AvgLoss: \S+, AvgAcc: \S+",
                    r"Current validation metric: \S+ \(best: \S+\)"):
        assert re.findall(pattern, log) == re.findall(pattern, plain) and len(re.findall(pattern, log)) == 2
    # and our history holds what weaver's own loops printed
    check_history(prefix, plain, epochs=2, classification=True)


def test_a_bug_in_the_hooks_is_not_swallowed_by_weaver(checkpoints, monkeypatch):
    """weaver-core 0.5.3 takes an AttributeError from get_train_fn / get_evaluate_fn for "not defined" and trains
    with its own loops: our hooks re-raise one as a RuntimeError, which stops weaver's model_setup."""
    import weaver.train as wt

    from omnijet_weaver.weaver import loops

    _, gpt = checkpoints
    args = wt.parser.parse_args(["--data-config", str(DATA_CONFIG), "--network-config", str(CLS_CONFIG),
                                 "-o", "pretrained", repr(str(gpt)), "--gpus", ""])
    dc = load_data_config(DATA_CONFIG)
    _, _, _, train, evaluate = wt.model_setup(args, dc)  # weaver's own code path
    assert isinstance(train.__self__, loops.TaggerLoops) and train.__func__ is loops.TaggerLoops.train
    assert isinstance(evaluate.__self__, loops.TaggerLoops) and train.__self__.patience == 0

    def broken(self, patience=0):
        raise AttributeError("'NoneType' object has no attribute 'patience'")

    monkeypatch.setattr(loops.TaggerLoops, "__init__", broken)
    with pytest.raises(RuntimeError, match=r"tagger_train_fn failed: AttributeError: 'NoneType' object has no "
                                           r"attribute 'patience' \(re-raised") as exc:
        wt.model_setup(args, dc)
    assert not isinstance(exc.value, AttributeError)


def test_weaver_predict_writes_scores_as_for_part(weaver_runs, checkpoints, toy_root_files, tmp_path):
    tok, gpt = checkpoints
    prefix, _ = weaver_runs("finetune")
    out = tmp_path / "pred.root"
    proc = run_weaver(
        ["--predict", "--data-test", toy_root_files[1], "--data-config", DATA_CONFIG, "--network-config", CLS_CONFIG,
         *mode_options("finetune", tok, gpt), "--model-prefix", f"{prefix}_best_epoch_state.pt", "--gpus", "",
         "--num-workers", "0", "--batch-size", "64", "--predict-output", out],
        cwd=tmp_path,
    )
    assert "Using custom train/evaluate functions" in proc.stdout + proc.stderr  # weaver's own --predict, passed through
    assert not list(tmp_path.glob("*_history.jsonl")) and not list(prefix.parent.glob("*best_epoch_state.pt_history*"))
    tree = uproot.open(out)["Events"]
    a = tree.arrays(library="np")
    assert {"score_label_QCD", "score_label_Tbqq", "label_QCD", "label_Tbqq", "jet_pt", "jet_nparticles"} <= set(a)
    assert len(a["score_label_QCD"]) == 128
    total = a["score_label_QCD"] + a["score_label_Tbqq"]
    np.testing.assert_allclose(total, 1, atol=1e-5)
    assert np.all((a["score_label_QCD"] >= 0) & (a["score_label_QCD"] <= 1))
    assert np.std(a["score_label_Tbqq"]) > 0  # the scores depend on the jet


@pytest.mark.parametrize("name", sorted(REAL_SAMPLES))
def test_weaver_fine_tunes_on_the_real_samples(name, checkpoints, tmp_path):
    file, config, _ = REAL_SAMPLES[name]
    path = shared_file("real", file)
    _, gpt = checkpoints
    proc = run_weaver(
        ["--data-train", path, "--data-val", path, "--data-config", config, "--network-config", CLS_CONFIG,
         *mode_options("finetune", None, gpt), "--model-prefix", tmp_path / "cls", "--gpus", "",
         "--num-workers", "0", "--batch-size", "32", "--num-epochs", "1", "--steps-per-epoch", "3",
         "--steps-per-epoch-val", "1", "--in-memory", "--fetch-step", "1"],
        cwd=tmp_path,
    )
    log = proc.stdout + proc.stderr
    check_classification_log(log)
    assert re.search(r"Current validation metric: [0-9.]+", log)
    assert (tmp_path / "cls_best_epoch_state.pt").exists()


# --- weaver's --load-model-weights and lr_mult, checked before weaver uses them ------------------------------


def tagger_run(toy_root_files, out, options):
    """A one-step weaver tagger training with ``options``; returns the completed process (not checked)."""
    import os
    import subprocess
    import sys

    train, val = toy_root_files
    cmd = [os.path.join(os.path.dirname(sys.executable), "weaver"), "--data-train", train, "--data-val", val,
           "--data-config", DATA_CONFIG, "--network-config", CLS_CONFIG, *options, "--model-prefix", out / "cls",
           "--gpus", "", "--num-workers", "0", "--batch-size", "16", "--num-epochs", "1", "--steps-per-epoch",
           "1", "--steps-per-epoch-val", "1", "--in-memory", "--fetch-step", "1", "--lr-scheduler", "none"]
    return subprocess.run([str(c) for c in cmd], cwd=out, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="2"))


def test_load_model_weights_takes_the_sizes_of_a_generative_checkpoint(checkpoints, toy_root_files, tmp_path):
    """``--load-model-weights gpt.pt`` alone (no -o pretrained, no sizes): the tagger is built with the
    checkpoint's sizes and tokenizer (not the packaged ones, which would not fit), and ParT's lr_mult recipe
    works with our head's names."""
    tok, gpt = checkpoints
    proc = tagger_run(toy_root_files, tmp_path, ["--load-model-weights", gpt, "--optimizer", "adam",
                                                 "--optimizer-option", "lr_mult", '("head.*",50)'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert f"sizes and tokenizer from --load-model-weights {gpt}" in log
    assert "Parameters with lr multiplied by 50" in log and " - head.out.weight" in log
    state = torch.load(tmp_path / "cls_best_epoch_state.pt", map_location="cpu")
    assert state["backbone.embed.weight"].shape[1] == GPT_SIZES["embed_dim"]
    assert torch.equal(state["tokenizer.quantizer.codebook"], torch.load(gpt)["tokenizer.quantizer.codebook"])


@pytest.mark.parametrize("what", ["part", "sizes", "lr_mult"])
def test_weights_and_lr_mult_that_match_nothing_are_one_line_errors(checkpoints, toy_root_files, tmp_path, what):
    """weaver loads --load-model-weights non-strictly and lr_mult by regex: a ParT checkpoint would load no
    weight and ("fc.*", 50) multiply no learning rate, silently; other sizes end in a size-mismatch traceback."""
    tok, gpt = checkpoints
    if what == "part":
        torch.save({"mod.fc.0.weight": torch.zeros(4, 4), "mod.embed.weight": torch.zeros(4)}, tmp_path / "part.pt")
        options, phrase = ["--load-model-weights", tmp_path / "part.pt"], "none of its 2 tensors (e.g. 'mod.fc.0"
    elif what == "sizes":  # from scratch at the packaged sizes, with a tiny checkpoint's weights over them
        options, phrase = ["-o", "pretrained", "None", "--load-model-weights", gpt], "tensors have other sizes"
    else:
        options, phrase = ["--optimizer-option", "lr_mult", '("fc.*",50)'], "lr_mult pattern 'fc.*' matches no"
    proc = tagger_run(toy_root_files, tmp_path, options)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("omnijet_cls: error: ")]
    assert len(lines) == 1 and phrase in lines[0] and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "cls_best_epoch_state.pt").exists()
