"""Bad inputs, options and environments: each ends in one ``<command>: error: ...`` line and exit 2, never a
traceback, a hang or silent garbage; and the real jets of the studies are a seeded mix of their files.

Five families, run in-process through the commands' ``main`` (one subprocess for the real command line):
odd paths, inputs and data configs (input order and variables, zero-entry files, selections that keep no jet,
malformed YAML), options (devices, temperatures, top-k, batch sizes, numbers of jets, seeds; hypothesis-generated
bad values; the Python sampling API), the torchrun environment, and the sampling of N jets from several files.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import string
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from conftest import DATA_CONFIG, toy_jets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omnijet_weaver.cli import distributed_rank, gen_fidelity, generate, token_quality, tokenize
from omnijet_weaver.errors import ConfigError
from omnijet_weaver.evaluation.reconstruction import load_jets
from omnijet_weaver.io.files import write_root
from omnijet_weaver.models.checkpoint import save_model
from omnijet_weaver.models.generative import OmniJetGPT, load_generative
from omnijet_weaver.models.sampling import sample_tokens
from omnijet_weaver.models.tokenizer import VQVAE
from omnijet_weaver.weaver import dataset, networks

SETTINGS = settings(max_examples=int(os.environ.get("OMNIJET_FAULT_EXAMPLES", 30)), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
COMMANDS = {"tokenize": tokenize, "generate": generate, "token-quality": token_quality, "gen-fidelity": gen_fidelity}
CUDA = torch.cuda.is_available()


# --------------------------------------------------------------------------------------------------------
# toy files, tiny models, data configs; the commands run in-process
# --------------------------------------------------------------------------------------------------------


def config_variant(path, change) -> None:
    """A copy of qg_top.yaml, changed by ``change(options)`` (which may return a replacement)."""
    opts = yaml.safe_load(DATA_CONFIG.read_text())
    opts = change(opts) or opts
    path.write_text(yaml.safe_dump(opts, sort_keys=False))


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    write_root(d / "good.root", toy_jets(30, seed=5))
    write_root(d / "top.root", toy_jets(100, seed=1, top_fraction=1.0))
    write_root(d / "qcd.root", toy_jets(100, seed=2, top_fraction=0.0))
    write_root(d / "qcd300.root", toy_jets(300, seed=3, top_fraction=0.0))
    write_root(d / "empty.root", {k: v[:0] for k, v in toy_jets(3).items()})
    other = toy_jets(20, seed=4)  # a class qg_top.yaml's selection drops (both labels 0)
    other["label_QCD"][:] = 0
    other["label_Tbqq"][:] = 0
    write_root(d / "other.root", other)
    (d / "folder.root").mkdir()
    torch.manual_seed(0)
    tok = VQVAE(codebook_size=16, hidden_dim=16, num_blocks=1, num_heads=2)
    save_model(tok, d / "tok.pt")
    save_model(OmniJetGPT.from_tokenizer(tok, embed_dim=16, num_blocks=1, num_heads=2, ff_dim=16), d / "gpt.pt")

    def swap(o):
        o["inputs"] = {k: o["inputs"][k] for k in ("pf_vectors", "pf_features", "pf_points", "pf_mask")}

    config_variant(d / "swapped.yaml", swap)
    config_variant(d / "varorder.yaml", lambda o: o["inputs"]["pf_vectors"].update(
        vars=[["part_energy", None], ["part_px", None], ["part_py", None], ["part_pz", None]]))
    config_variant(d / "nosel.yaml", lambda o: o.update(selection="jet_pt < 0"))
    config_variant(d / "noinputs.yaml", lambda o: {k: v for k, v in o.items() if k != "inputs"})
    config_variant(d / "toplevel.yaml", lambda o: {**o, **o.pop("inputs")})  # inputs lost their indentation
    (d / "syntax.yaml").write_text(DATA_CONFIG.read_text().replace("inputs:\n", "inputs:\n  - [unclosed\n", 1))
    (d / "list.yaml").write_text("- inputs\n- labels\n")
    return d


def run(capsys, cmd: str, *argv):
    """Run command ``cmd`` in-process; returns (exit code, stderr). Any exception but SystemExit propagates."""
    capsys.readouterr()
    try:
        COMMANDS[cmd].main([str(a) for a in argv])
        code = 0
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err


def error_line(code, err, cmd=None) -> str:
    """The one ``omnijet-weaver-<cmd>: error: ...`` line of a failed command (exit 2; asserted)."""
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, (code, err[-3000:])
    assert lines[0].startswith(f"omnijet-weaver-{cmd or ''}") and ": error: " in lines[0], err[-3000:]
    assert "Traceback" not in err
    return lines[0]


def assert_fails(result, cmd, *phrases) -> str:
    line = error_line(*result, cmd)
    for phrase in phrases:
        assert phrase in line, line
    return line


def tok_args(d, *files, config=DATA_CONFIG, output=None, extra=()):
    return [*files, "--data-config", config, "--tokenizer", d / "tok.pt", "--output", output or d / "t.parquet",
            "--overwrite", "--no-progress", *extra]


def gen_args(d, *extra, output=None):
    return ["--checkpoint", d / "gpt.pt", "--num-jets", 3, "--output", output or d / "g.root", "--overwrite",
            "--no-progress", *extra]


def study_args(cmd, d, *files, config=DATA_CONFIG, output=None, extra=()):
    common = [*files, "--data-config", config, "--output", output or d / cmd, "--overwrite", "--device", "cpu"]
    if cmd == "token-quality":
        return [*common, "--tokenizer", "binned:4", "--classifiers", "none", "--spread-tokens", 0, "--max-jets", 10,
                *extra]
    return [*common, "--checkpoint", d / "gpt.pt", "--num-jets", 10, "--epochs", 1, "--patience", 1, "--no-progress",
            *extra]


def args_of(cmd, d, *files, config=DATA_CONFIG, extra=()):
    if cmd == "tokenize":
        return tok_args(d, *files, config=config, extra=extra)
    return study_args(cmd, d, *files, config=config, extra=extra)


@contextlib.contextmanager
def no_hang(seconds: int = 30):
    """Fail (TimeoutError) instead of hanging."""
    def alarm(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# --------------------------------------------------------------------------------------------------------
# odd paths
# --------------------------------------------------------------------------------------------------------


def test_output_with_tilde_is_expanded(d, capsys, monkeypatch):
    home = d / "home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    code, err = run(capsys, "tokenize", *tok_args(d, d / "good.root", output="~/t.parquet"))
    assert code == 0, err
    assert (home / "t.parquet").is_file() and not (d / "~").exists()
    assert token_quality.parse_args([str(d / "good.root"), "--output", "~/tq"]).output == home / "tq"


@pytest.mark.parametrize("cmd,output", [("tokenize", "newdir/"), ("tokenize", "adir.parquet"),
                                        ("generate", "adir.root")])
def test_output_that_is_a_folder(d, capsys, cmd, output):
    (d / "adir.parquet").mkdir(exist_ok=True)
    (d / "adir.root").mkdir(exist_ok=True)
    args = tok_args(d, d / "good.root", output=d / output) if cmd == "tokenize" else gen_args(d, output=d / output)
    if output.endswith("/"):
        args[args.index(d / output)] = f"{d / output}/"
    assert_fails(run(capsys, cmd, *args), cmd, "is a folder")


def test_study_output_that_is_a_file(d, capsys):
    assert_fails(run(capsys, "token-quality", *study_args("token-quality", d, d / "good.root", output=d / "good.root")),
                 "token-quality", "exists and is a file")


@pytest.mark.parametrize("cmd", ["tokenize", "token-quality", "gen-fidelity"])
def test_input_file_that_is_a_folder(d, capsys, cmd):
    assert_fails(run(capsys, cmd, *args_of(cmd, d, d / "folder.root")), cmd, "folder.root", "is a folder",
                 "give the jet files in it")


# --------------------------------------------------------------------------------------------------------
# inputs and data configs
# --------------------------------------------------------------------------------------------------------


def test_tokenize_refuses_a_config_listing_pf_vectors_first(d):
    """The real command line: it exited 0 with wrong tokens before (inputs taken by position)."""
    proc = subprocess.run([sys.executable, "-m", "omnijet_weaver.cli.tokenize", *map(str, tok_args(
        d, d / "good.root", config=d / "swapped.yaml"))], capture_output=True, text=True, timeout=300)
    line = assert_fails((proc.returncode, proc.stderr), "tokenize", "swapped.yaml", "in this order",
                        "['pf_vectors', 'pf_features', 'pf_points', 'pf_mask']")
    assert "argument --data-config" in line  # checked at parse time, before any work


def test_one_input_check_for_commands_and_network_configs(d):
    assert networks.check_inputs is dataset.check_inputs
    cfg = dataset.read_data_config(d / "swapped.yaml")
    with pytest.raises(ConfigError, match="omnijet_vqvae needs ParT's kin inputs"):
        networks.vqvae_model(cfg)
    with pytest.raises(ConfigError, match="input pf_vectors .* must list part_px, part_py, part_pz, part_energy"):
        networks.check_inputs(dataset.read_data_config(d / "varorder.yaml"), "omnijet_cls")
    networks.check_inputs(dataset.read_data_config(DATA_CONFIG), "omnijet_cls")


CONFIG_CASES = {
    "pf_vectors first": ("swapped.yaml", "in this order"),
    "variables reordered": ("varorder.yaml", "must list part_px, part_py, part_pz, part_energy"),
    "selection keeps no jet": ("nosel.yaml", "passes the selection `jet_pt < 0`"),
    "YAML syntax error": ("syntax.yaml", "is not valid YAML"),
    "YAML not a mapping": ("list.yaml", "is a list, not a mapping"),
    "no inputs": ("noinputs.yaml", "has no `inputs`"),
    "unknown keys": ("toplevel.yaml", "has unknown key(s) pf_features, pf_mask, pf_points, pf_vectors"),
    "config missing": ("nope.yaml", "is neither a file nor a shipped data config"),
}


@pytest.mark.parametrize("cmd,case", [(cmd, case) for cmd in ("tokenize", "token-quality") for case in CONFIG_CASES]
                         + [("gen-fidelity", c) for c in ("pf_vectors first", "selection keeps no jet", "YAML syntax error")])
def test_bad_data_config(d, capsys, cmd, case):
    name, phrase = CONFIG_CASES[case]
    assert_fails(run(capsys, cmd, *args_of(cmd, d, d / "good.root", config=d / name)), cmd, name, phrase)


@pytest.mark.parametrize("cmd", ["tokenize", "token-quality", "gen-fidelity"])
def test_zero_entry_file(d, capsys, cmd):
    assert_fails(run(capsys, cmd, *args_of(cmd, d, d / "good.root", d / "empty.root")), cmd, "empty.root",
                 "holds no jets (0 entries)", "leave it out")


def test_a_file_none_of_whose_jets_passes_is_left_out(d, capsys):
    """weaver itself fails on such a file ("not enough values to unpack"); it gives no jet, the others do."""
    code, err = run(capsys, "tokenize", *tok_args(d, d / "other.root", d / "good.root"))
    assert code == 0 and "wrote 30 jets" in err, err
    assert len(load_jets(DATA_CONFIG, [d / "other.root", d / "good.root"], max_jets=20)) == 20


# --------------------------------------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------------------------------------


DEVICE_CASES = [("meta", "runs on cpu or cuda"), ("xpu", "runs on cpu or cuda"), ("foo", "is not a torch device"),
                ("", "is not a torch device"), ("cuda:-1", "is not a torch device")]
if not CUDA:
    DEVICE_CASES += [("cuda", "no CUDA device; use --device cpu"), ("cuda:1", "no CUDA device; use --device cpu")]


@pytest.mark.parametrize("cmd", list(COMMANDS))
@pytest.mark.parametrize("device,phrase", DEVICE_CASES)
def test_bad_device(d, capsys, cmd, device, phrase):
    args = gen_args(d) if cmd == "generate" else args_of(cmd, d, d / "good.root")
    if "--device" in args:
        del args[args.index("--device"): args.index("--device") + 2]
    assert_fails(run(capsys, cmd, *args, f"--device={device}"), cmd, "argument --device", phrase)


@pytest.mark.parametrize("option,value,phrase", [
    ("--temperature", "nan", "must be a positive number"), ("--temperature", "inf", "must be a positive number"),
    ("--temperature", "-1", "must be a positive number"), ("--temperature", "0", "must be a positive number"),
    ("--temperature", "abc", "must be a positive number"), ("--temperature", "1e-9", "must be at least 1e-06"),
    ("--top-k", "0", "at least 1"), ("--batch-size", "0", "at least 1"), ("--num-jets", "0", "at least 1"),
    ("--batch-size", str(2**40), "from 1 to 1048576"), ("--num-jets", str(2**40), "from 1 to 2147483647"),
])
def test_bad_generate_option(d, capsys, option, value, phrase):
    assert_fails(run(capsys, "generate", *gen_args(d), f"{option}={value}"), "generate", f"argument {option}", phrase)


@pytest.mark.parametrize("kwargs,phrase", [
    ({"batch_size": 0}, "batch_size must be a whole number of at least 1"),
    ({"batch_size": -2}, "batch_size"), ({"batch_size": 2.5}, "batch_size"),
    ({"temperature": float("nan")}, "temperature must be a finite number > 0"),
    ({"temperature": float("inf")}, "temperature"), ({"temperature": 0.0}, "temperature"),
    ({"temperature": -1}, "temperature"), ({"temperature": "abc"}, "temperature"),
    ({"temperature": 1e-300}, "at least 1e-06"),
    ({"top_k": 0}, "top_k must be a whole number of at least 1"), ({"top_k": -1}, "top_k"), ({"top_k": 2.5}, "top_k"),
    ({"num_jets": -1}, "num_jets"),
])
def test_sampling_api_checks_its_arguments(d, kwargs, phrase):
    model = load_generative(d / "gpt.pt")
    kwargs = {"num_jets": 3, **kwargs}
    with no_hang(), pytest.raises(ValueError, match=re.escape(phrase)):
        model.generate(**kwargs)
    with no_hang(), pytest.raises(ValueError, match=re.escape(phrase)):
        sample_tokens(model.backbone, model.head, model.codebook_size, **kwargs)


def bad_values(option: str):
    """Bad values of ``option``: negative, zero, NaN / inf, huge, not a number, empty, unicode."""
    numberish = [st.integers(max_value=-1).map(str), st.sampled_from(["nan", "NaN", "inf", "-inf", "1e400", ""]),
                 st.text(string.ascii_letters + " ,;", min_size=1),
                 st.text(st.characters(min_codepoint=0x80, blacklist_categories=("Cs",)), min_size=1)]
    if option == "--device":
        valid = re.compile(r"(cpu|auto)(:\d+)?" + (r"|cuda(:\d+)?" if CUDA else ""))
        return st.one_of(*numberish, st.sampled_from(["meta", "xpu", "mps", "cuda:99", "CPU", " cpu", "cuda:x"])
                         ).filter(lambda s: not valid.fullmatch(s))
    if option == "--temperature":  # huge: overflows to inf (a big finite temperature is a valid one)
        return st.one_of(*numberish, st.sampled_from(["0", "-0", "0.0", "1e-400", "1e-9", "9" * 400]))
    huge = {"--seed": 2**32, "--batch-size": 2**20 + 1}.get(option, 2**31)
    zero = [] if option == "--seed" else [st.sampled_from(["0", "-0", "00"])]
    return st.one_of(*numberish, *zero, st.sampled_from(["1.5", "1e3", "2.0"]),
                     st.integers(min_value=huge, max_value=2**200).map(str))


def check_bad_value(capsys, cmd, args, option, value):
    line = error_line(*run(capsys, cmd, *args, f"{option}={value}"), cmd)
    assert f"argument {option}:" in line, line


@SETTINGS
@given(data=st.data())
def test_generate_rejects_generated_bad_values(d, capsys, data):
    option = data.draw(st.sampled_from(["--batch-size", "--num-jets", "--temperature", "--top-k", "--seed",
                                        "--device"]))
    check_bad_value(capsys, "generate", gen_args(d), option, data.draw(bad_values(option), label=option))


@SETTINGS
@given(data=st.data())
def test_tokenize_rejects_generated_bad_values(d, capsys, data):
    option = data.draw(st.sampled_from(["--batch-size", "--device"]))
    check_bad_value(capsys, "tokenize", tok_args(d, d / "good.root"), option,
                    data.draw(bad_values(option), label=option))


# --------------------------------------------------------------------------------------------------------
# the torchrun environment
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("env,phrase", [
    ({"RANK": "abc", "WORLD_SIZE": "2"}, "RANK='abc' (not a whole number)"),
    ({"RANK": "0", "WORLD_SIZE": "two"}, "WORLD_SIZE='two'"),
    ({"RANK": "0", "WORLD_SIZE": "0"}, "WORLD_SIZE='0' (must be at least 1)"),
    ({"RANK": "3", "WORLD_SIZE": "2"}, "RANK='3' with WORLD_SIZE='2' (RANK must be 0 to 1)"),
    ({"RANK": "-1", "WORLD_SIZE": "2"}, "RANK='-1'"),
    ({"RANK": "", "WORLD_SIZE": "2"}, "RANK=''"),
    ({"RANK": "1"}, "without WORLD_SIZE"),
    ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "x"}, "LOCAL_RANK='x'"),
])
@pytest.mark.parametrize("cmd", ["generate", "tokenize"])
def test_bad_torchrun_environment(d, capsys, monkeypatch, env, phrase, cmd):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    args = gen_args(d) if cmd == "generate" else tok_args(d, d / "good.root", d / "good.root")
    assert_fails(run(capsys, cmd, *args), cmd, phrase,
                 "is not a valid torchrun environment; unset RANK and WORLD_SIZE or launch with torchrun")


def test_good_torchrun_environment(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert distributed_rank() == (0, 1)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed_rank() == (3, 4)


# --------------------------------------------------------------------------------------------------------
# sampling N jets from several files
# --------------------------------------------------------------------------------------------------------


def test_jet_quotas():
    assert dataset.jet_quotas([100, 300], [100, 300], 40) == [10, 30]
    assert dataset.jet_quotas([100, 100], [5, 100], 40) == [5, 35]  # a short file: the others make up the rest
    assert dataset.jet_quotas([100, 100, 100], [0, 100, 100], 41) == [0, 21, 20]
    assert dataset.jet_quotas([10, 10], [10, 10], None) == [10, 10]
    assert dataset.jet_quotas([10, 10], [3, 10], 100) == [3, 10]


@pytest.mark.parametrize("order", [("top", "qcd"), ("qcd", "top")])
def test_max_jets_mixes_the_files(d, order):
    """A top file and a QCD file of equal size give half of each, whatever their order, shuffled."""
    sample = load_jets(DATA_CONFIG, [d / f"{name}.root" for name in order], max_jets=40, seed=0)
    assert len(sample) == 40 and sample.class_names == ["QCD", "Tbqq"]
    assert np.bincount(sample.label, minlength=2).tolist() == [20, 20]
    assert len(set(sample.label[:10])) == 2  # mixed, not one file after the other
    again = load_jets(DATA_CONFIG, [d / f"{name}.root" for name in order], max_jets=40, seed=0)
    assert np.array_equal(again.features, sample.features)
    other = load_jets(DATA_CONFIG, [d / f"{name}.root" for name in order], max_jets=40, seed=1)
    assert not np.array_equal(other.label, sample.label)
    uneven = load_jets(DATA_CONFIG, [d / "top.root", d / "qcd300.root"], max_jets=40)
    assert np.bincount(uneven.label, minlength=2).tolist() == [30, 10]  # in proportion to the entries


def test_max_jets_reads_only_what_it_needs(d, monkeypatch):
    ranges = []
    loader = dataset._loader
    monkeypatch.setattr(dataset, "_loader", lambda *a, **k: ranges.append(k["load_range"]) or loader(*a, **k))
    sample = load_jets(DATA_CONFIG, [d / "top.root", d / "qcd.root"], max_jets=6, seed=None)
    assert len(sample) == 6 and sample.label.tolist() == [1, 1, 1, 0, 0, 0]
    assert ranges == [(0.0, 0.035), (0.0, 0.035)]  # entries [0, 3) of each 100-entry file


def test_token_quality_reads_a_mix(d):
    """The command line (a subprocess: the studies bind sys.stdout when first imported, which capsys closes)."""
    out = d / "tq_mix"
    proc = subprocess.run([sys.executable, "-m", "omnijet_weaver.cli.token_quality", *map(str, study_args(
        "token-quality", d, d / "top.root", d / "qcd.root", output=out, extra=["--max-jets", 40]))],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    res = summary["tokenizers"]["binned 4^3"]["resolutions"]
    assert summary["classes"] == ["QCD", "Tbqq"] and res["QCD"]["mass"]["jets"] == res["Tbqq"]["mass"]["jets"] == 20
