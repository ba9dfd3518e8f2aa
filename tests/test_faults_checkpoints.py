"""Corrupted checkpoints: each ends in one ``<command>: error: ...`` line and exit 2, never a traceback.

The corruptions are generated (hypothesis) and run through the real command entry points in-process
(``omnijet-weaver-tokenize`` for a tokenizer, ``omnijet-weaver-generate`` for a generative model), in four
families: the file's bytes (random, truncated, flipped), the description (options replaced, deleted or added,
kind or format version changed), the tensors (NaN / inf, other shapes, other types, missing or extra), and
weaver running our network configs on a bad checkpoint.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch
from conftest import DATA_CONFIG, NETWORK_CONFIGS, toy_jets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omnijet_weaver.cli import generate, tokenize
from omnijet_weaver.errors import CheckpointError
from omnijet_weaver.io.files import write_root
from omnijet_weaver.models import checkpoint
from omnijet_weaver.models.checkpoint import load_model, save_model
from omnijet_weaver.models.generative import OmniJetGPT
from omnijet_weaver.models.tokenizer import VQVAE, load_tokenizer

#: Examples per generated family (OMNIJET_FAULT_EXAMPLES=500 for a deeper search).
SETTINGS = settings(max_examples=int(os.environ.get("OMNIJET_FAULT_EXAMPLES", 30)), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# --------------------------------------------------------------------------------------------------------
# the tiny models and the two commands, run in-process
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A folder with 20 toy jets, a tiny tokenizer and a tiny generative model (and their state dicts)."""
    d = tmp_path_factory.mktemp("faults")
    write_root(d / "jets.root", toy_jets(20))
    torch.manual_seed(0)
    tok = VQVAE(codebook_size=16, hidden_dim=16, num_blocks=1, num_heads=2)
    save_model(tok, d / "tok.pt")
    save_model(OmniJetGPT.from_tokenizer(tok, embed_dim=16, num_blocks=1, num_heads=2, ff_dim=16), d / "gpt.pt")
    states = {which: torch.load(d / f"{which}.pt", weights_only=True) for which in ("tok", "gpt")}
    return Files((d, states))


class Files(tuple):
    """(folder, state dicts), with a short repr for hypothesis' reports."""

    def __repr__(self):
        return f"Files({self[0]})"


def run(d, which: str, path, capsys):
    """Run the command that reads checkpoint ``path`` (``which``: "tok" -> tokenize, "gpt" -> generate);
    returns (exit code, stderr). Any other exception than SystemExit propagates and fails the test."""
    out = d / ("tokens.parquet" if which == "tok" else "gen.root")
    if out.exists():
        out.unlink()
    if which == "tok":
        main, argv = tokenize.main, [d / "jets.root", "--data-config", DATA_CONFIG, "--tokenizer", path]
    else:
        main, argv = generate.main, ["--checkpoint", path, "--num-jets", 2]
    capsys.readouterr()
    try:
        main([str(a) for a in [*argv, "--output", out, "--overwrite", "--no-progress"]])
        code = 0
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err
    if code == 0:
        assert out.exists(), err
    return code, err


def error_line(code, err) -> str:
    """The one ``omnijet-weaver-<command>: error: ...`` line of a failed command (asserted)."""
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, (code, err[-3000:])
    assert lines[0].startswith("omnijet-weaver-") and ": error: " in lines[0], err
    assert "Traceback" not in err
    return lines[0]


def assert_fails(code, err, *phrases) -> str:
    line = error_line(code, err)
    for phrase in phrases:
        assert phrase in line, line
    return line


def shapes(state) -> dict:
    return {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}


def check_outcome(d, which, path, state, capsys):
    """A corrupted checkpoint either fails with one error line and exit 2, or, if still a valid model, is used
    (exit 0, output written) and then holds exactly the tensors its description asks for."""
    code, err = run(d, which, path, capsys)
    if code != 0:
        return error_line(code, err)
    model = load_model(path)
    assert shapes(model.state_dict()) == shapes(state)
    assert model.config == state["_extra_state"]["config"]
    return None


# --------------------------------------------------------------------------------------------------------
# family 1: the file's bytes
# --------------------------------------------------------------------------------------------------------


def corrupt_bytes(data, blob: bytes) -> tuple[str, bytes]:
    how = data.draw(st.sampled_from(["random", "truncate", "flip", "flip_tail"]), label="how")
    if how == "random":
        return how, data.draw(st.binary(max_size=3000), label="bytes")
    if how == "truncate":
        return how, blob[: data.draw(st.integers(0, len(blob) - 1), label="length")]
    lo = 0 if how == "flip" else len(blob) - 200  # the zip directory and the description's pickle
    flips = data.draw(st.lists(st.tuples(st.integers(lo, len(blob) - 1), st.integers(1, 255)), min_size=1,
                               max_size=8), label="flips")
    out = bytearray(blob)
    for pos, mask in flips:
        out[pos] ^= mask
    return how, bytes(out)


@SETTINGS
@given(data=st.data())
def test_random_bytes(files, capsys, data):
    d, states = files
    which = data.draw(st.sampled_from(["tok", "gpt"]), label="which")
    how, blob = corrupt_bytes(data, (d / f"{which}.pt").read_bytes())
    path = d / f"bytes_{which}.pt"
    path.write_bytes(blob)
    code, err = run(d, which, path, capsys)
    if code != 0 or how in ("random", "truncate"):
        assert_fails(code, err, path.name)


# --------------------------------------------------------------------------------------------------------
# family 2: the description
# --------------------------------------------------------------------------------------------------------

#: Hand-picked values, among them sizes no model of ours has.
SPECIAL = st.sampled_from([0, 1, -1, 2, 10**10, 2**31, 2**63, 10**100, 0.5, -0.0, float("nan"), float("inf"),
                           "", "16", "vqvae", True, False, None, [], {}, [16], {"kind": "vqvae"},
                           {"kind": "vqvae", "config": {"codebook_size": 10**10}},
                           {"kind": "binned", "config": {}}, {"kind": "omnijet_gpt", "config": {}}])

VALUES = st.recursive(
    SPECIAL | st.none() | st.booleans() | st.integers(-3, 40) | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)


def edit_description(data, desc):
    """Apply one drawn edit to the description ``desc`` (a dict, changed in place, or replaced: returned)."""
    op = data.draw(st.sampled_from(["set", "set", "set", "delete", "add", "kind", "version", "config", "whole"]),
                   label="op")
    config = desc.get("config") if isinstance(desc, dict) else None
    if op in ("set", "delete") and isinstance(config, dict) and config:
        key = data.draw(st.sampled_from(sorted(config)), label="key")
        if op == "set":
            config[key] = data.draw(VALUES, label="value")
        else:
            del config[key]
    elif op == "add" and isinstance(config, dict):
        config[data.draw(st.sampled_from(["extra", "codebook", "seed"]) | st.text(max_size=5), label="new")] = \
            data.draw(VALUES, label="value")
    elif op == "kind" and isinstance(desc, dict):
        desc["kind"] = data.draw(st.sampled_from(["vqvae", "binned", "omnijet_gpt", "omnijet_tagger",
                                                  "gpt_backbone", "other"]) | VALUES, label="kind")
    elif op == "version" and isinstance(desc, dict):
        desc["format_version"] = data.draw(VALUES, label="version")
    elif op == "config" and isinstance(desc, dict):
        desc["config"] = data.draw(VALUES, label="config")
    elif op == "whole":
        return data.draw(VALUES, label="description")
    return desc


def corrupt_description(data, state) -> dict:
    """1 to 3 edits of the descriptions in a state dict: the model's, its nested tokenizer's (in the generative
    model's options) or a submodule's own (``tokenizer._extra_state``, ``backbone._extra_state``)."""
    state = copy.deepcopy(state)
    targets = ["top"] + (["nested", "tokenizer._extra_state", "backbone._extra_state"]
                         if "tokenizer._extra_state" in state else [])
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        target = data.draw(st.sampled_from(targets), label="target")
        if target == "nested":
            config = state["_extra_state"].get("config") if isinstance(state["_extra_state"], dict) else None
            if isinstance(config, dict) and "tokenizer" in config:
                config["tokenizer"] = edit_description(data, config["tokenizer"])
        else:
            key = "_extra_state" if target == "top" else target
            state[key] = edit_description(data, state[key])
    return state


@SETTINGS
@given(data=st.data())
def test_description_edits(files, capsys, data):
    d, states = files
    which = data.draw(st.sampled_from(["tok", "gpt"]), label="which")
    state = corrupt_description(data, states[which])
    path = d / f"desc_{which}.pt"
    torch.save(state, path)
    check_outcome(d, which, path, state, capsys)


@pytest.mark.parametrize("which,key,value,phrases", [
    ("tok", "codebook_size", 32, ["does not match its own description", "quantizer.codebook has shape [16, 4]"]),
    ("tok", "num_blocks", 2, ["tensors missing: enc_blocks.1."]),
    ("tok", "conditional", False, ["tensors missing", "unexpected entries"]),
    ("tok", "codebook_size", 10**10, ["option codebook_size", "10000000000 is beyond any size"]),
    ("tok", "hidden_dim", "16", ["option hidden_dim", "'16' is not an int"]),
    ("tok", "num_heads", -2, ["option num_heads", "-2 is negative"]),
    ("tok", "alpha", float("nan"), ["option alpha", "nan is not a finite number"]),
    ("tok", "bogus", 1, ["'bogus' is not an option of VQVAE"]),
    ("gpt", "embed_dim", 32, ["does not match its own description", "backbone.embed.weight"]),
    ("gpt", "tokenizer", {"kind": "binned", "config": {}}, ["does not match its own description"]),
    ("gpt", "tokenizer", {"kind": "omnijet_gpt", "config": {}}, ["omnijet_gpt tokenizer", "cannot build"]),
    ("gpt", "tokenizer", {"kind": "vqvae", "config": {"codebook_size": 10**10}},
     ["option tokenizer", "at config.codebook_size: 10000000000 is beyond any size"]),
    ("gpt", "tokenizer", {"kind": "vqvae", "config": {"codebook_size": "16"}},
     ["omnijet_gpt tokenizer: option codebook_size of its 'vqvae': '16' is not an int"]),
    ("gpt", "tokenizer", "vqvae", ["option tokenizer", "is not a dict"]),
])
def test_description_claims_what_the_tensors_are_not(files, capsys, which, key, value, phrases):
    d, states = files
    state = copy.deepcopy(states[which])
    state["_extra_state"]["config"][key] = value
    path = d / f"claim_{which}.pt"
    torch.save(state, path)
    assert_fails(*run(d, which, path, capsys), repr(str(path)), *phrases)


def test_a_huge_codebook_is_refused_on_the_meta_device(files, monkeypatch):
    """A 10**10-code codebook (160 GB) is refused with nothing allocated: even with the option cap lifted, the model
    is built on the meta device first and stopped by the value cap as soon as the codebook is registered."""
    d, states = files
    state = copy.deepcopy(states["tok"])
    state["_extra_state"]["config"]["codebook_size"] = 10**10
    path = d / "huge.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="10000000000 is beyond any size"):
        load_tokenizer(path)
    monkeypatch.setattr(checkpoint, "MAX_OPTION_INT", 10**12)
    registered = []
    hook = torch.nn.modules.module.register_module_parameter_registration_hook(
        lambda module, name, p: registered.append((name, p.device.type, p.numel())))
    try:
        with pytest.raises(CheckpointError, match=r"huge.pt.*more than 2e\+09 values"):
            load_tokenizer(path)
    finally:
        hook.remove()
    assert ("codebook", "meta", 4 * 10**10) in registered
    assert all(device == "meta" for _, device, _ in registered)  # nothing real was built


def test_a_description_of_many_blocks_stops_early(files, monkeypatch):
    """num_blocks = 10**6 would loop for minutes even on the meta device: the count of registered tensors stops it."""
    d, states = files
    state = copy.deepcopy(states["tok"])
    state["_extra_state"]["config"]["num_blocks"] = 10**6
    path = d / "blocks.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="asks for more tensors than the file holds"):
        load_tokenizer(path)


def test_a_valid_edit_is_used(files, capsys):
    d, states = files
    state = copy.deepcopy(states["tok"])
    state["_extra_state"]["config"]["alpha"] = 3.0  # a training-only option: the weights fit, the model loads
    path = d / "alpha.pt"
    torch.save(state, path)
    assert run(d, "tok", path, capsys)[0] == 0
    assert load_tokenizer(path).alpha == 3.0


# --------------------------------------------------------------------------------------------------------
# family 3: the tensors
# --------------------------------------------------------------------------------------------------------


def corrupt_tensors(data, state) -> tuple[dict, list]:
    """1 to 3 drawn edits of the tensors of a state dict; returns it and the edits."""
    state = dict(state)
    names = sorted(k for k, v in state.items() if isinstance(v, torch.Tensor))
    edits = []
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        op = data.draw(st.sampled_from(["nonfinite", "nonfinite", "shape", "dtype", "value", "delete", "add"]),
                       label="op")
        key = data.draw(st.sampled_from(names), label="tensor")
        if key not in state or not isinstance(state[key], torch.Tensor) or (
                op == "nonfinite" and not (state[key].is_floating_point() and state[key].numel())):
            continue  # already replaced by a non-tensor, or no floating-point values to spoil
        t = state[key]
        if op == "nonfinite":
            t = t.clone()
            i = data.draw(st.integers(0, t.numel() - 1), label="index")
            t.view(-1)[i] = data.draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]), label="bad")
        elif op == "shape":
            shape = data.draw(st.lists(st.integers(0, 20), max_size=3).filter(lambda s: tuple(s) != t.shape),
                              label="shape")
            t = torch.zeros(shape, dtype=t.dtype)
        elif op == "dtype":
            t = t.to(data.draw(st.sampled_from([torch.int64, torch.float64, torch.bool, torch.float16]), label="dtype"))
        elif op == "value":
            t = data.draw(VALUES, label="value")
        elif op == "delete":
            del state[key]
            edits.append((op, key))
            continue
        else:
            key = data.draw(st.sampled_from(["extra.weight", key + "_copy"]), label="new")
            t = torch.zeros(2)
        state[key] = t
        edits.append((op, key))
    return state, edits


@SETTINGS
@given(data=st.data())
def test_tensor_edits(files, capsys, data):
    d, states = files
    which = data.draw(st.sampled_from(["tok", "gpt"]), label="which")
    state, edits = corrupt_tensors(data, states[which])
    path = d / f"tensors_{which}.pt"
    torch.save(state, path)
    code, err = run(d, which, path, capsys)
    if must_fail(states[which], state):
        assert_fails(code, err, path.name)
    else:  # other dtypes only (load_state_dict converts them): the model may run
        assert code == 0 or error_line(code, err)


def must_fail(original: dict, state: dict) -> bool:
    """Whether ``state`` lacks a tensor of ``original``, has others, of other shapes, or non-finite values."""
    if set(state) != set(original):
        return True
    for k, v in original.items():
        t = state[k]
        if isinstance(v, torch.Tensor) and (not isinstance(t, torch.Tensor) or t.shape != v.shape or (
                t.is_floating_point() and not torch.isfinite(t).all())):
            return True
    return False


@pytest.mark.parametrize("which,key", [("tok", "quantizer.codebook"), ("tok", "enc_blocks.0.attn.qkv.weight"),
                                       ("gpt", "tokenizer.quantizer.codebook"), ("gpt", "head.proj.bias")])
def test_nan_weights_are_refused(files, capsys, which, key):
    d, states = files
    state = dict(states[which])
    state[key] = torch.full_like(state[key], float("nan"))
    path = d / f"nan_{which}.pt"
    torch.save(state, path)
    assert_fails(*run(d, which, path, capsys), repr(str(path)), f"tensor {key} holds NaN/inf values",
                 "use another checkpoint")


# --------------------------------------------------------------------------------------------------------
# family 4: weaver running our network configs
# --------------------------------------------------------------------------------------------------------


def weaver(args, cwd):
    cmd = [os.path.join(os.path.dirname(sys.executable), "weaver")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd + [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.parametrize("config,options,phrase", [
    ("omnijet_cls", ["-o", "pretrained", "'/nonexistent.pt'"], "checkpoint '/nonexistent.pt' does not exist"),
    ("omnijet_gpt", ["-o", "tokenizer", "NAN"], "tensor quantizer.codebook holds NaN/inf values"),
])
def test_weaver_reports_a_bad_checkpoint_in_one_line(files, config, options, phrase):
    d, states = files
    if "NAN" in options:
        state = dict(states["tok"])
        state["quantizer.codebook"] = torch.full_like(state["quantizer.codebook"], float("nan"))
        torch.save(state, d / "nan_tok.pt")
        options = [o if o != "NAN" else repr(str(d / "nan_tok.pt")) for o in options]
    proc = weaver(["--data-train", d / "jets.root", "--data-config", DATA_CONFIG, "--network-config",
                   NETWORK_CONFIGS / f"{config}.py", *options, "--model-prefix", d / "w" / config, "--gpus", "",
                   "--num-workers", "0", "--batch-size", "8", "--num-epochs", "1", "--steps-per-epoch", "1",
                   "--fetch-step", "1"], cwd=d)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if f"{config}: error: " in line]
    assert len(lines) == 1 and lines[0].startswith(f"{config}: error: ") and phrase in lines[0], proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == lines[0]
