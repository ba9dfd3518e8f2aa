"""The commands (``omnijet-weaver-*``) as one CLI: every --help, the one error path, the shared options spelled and
checked the same way everywhere, the parsed options -> study config step, the packaged defaults.

Commands run in-process through their ``main(argv)`` (SystemExit and the captured stderr are checked); the
subprocess runs are in test_robustness.py.
"""

from __future__ import annotations

import configparser
import dataclasses
import importlib
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import torch
from conftest import DATA_CONFIG, ROOT, toy_jets

from omnijet_weaver import cli
from omnijet_weaver.errors import ConfigError, InputFileError, MissingDependencyError, OutputExistsError, WeaverRunError
from omnijet_weaver.io.files import write_root
from omnijet_weaver.models.checkpoint import save_model
from omnijet_weaver.models.generative import OmniJetGPT
from omnijet_weaver.models.packaged import packaged_path
from omnijet_weaver.models.tokenizer import VQVAE


def entry_points() -> dict:
    """``{command name: module}`` from setup.cfg's console_scripts (every one must be ``<module>:main``)."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    out = {}
    for line in cfg["options.entry_points"]["console_scripts"].strip().splitlines():
        name, _, target = (x.strip() for x in line.partition("="))
        module, _, func = target.partition(":")
        assert func == "main", line
        out[name] = module
    return out


COMMANDS = entry_points()


def command(name):
    return importlib.import_module(COMMANDS[name])


def fails(capsys, name, *argv) -> str:
    """Run ``name`` in-process with ``argv``; assert exit 2 and exactly one stderr line ``<name>: error: ...``;
    returns that line."""
    with pytest.raises(SystemExit) as exc:
        command(name).main([str(a) for a in argv])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert exc.value.code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith(f"{name}: error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny JetClass-layout ROOT file, a tokenizer and a generative checkpoint (small random models)."""
    d = tmp_path_factory.mktemp("cli")
    write_root(d / "jets.root", toy_jets(24, seed=3))
    torch.manual_seed(0)
    tok = VQVAE(codebook_size=16, hidden_dim=16, num_blocks=1, num_heads=2)
    save_model(tok, d / "tok.pt")
    save_model(OmniJetGPT.from_tokenizer(tok, embed_dim=16, num_blocks=1, num_heads=2, ff_dim=16), d / "gpt.pt")
    return d


# --- every command ---------------------------------------------------------------------------------------------


def test_the_entry_points_are_the_cli_modules():
    assert len(COMMANDS) >= 9 and "omnijet-weaver-tokenize" in COMMANDS and "omnijet-weaver-configs" in COMMANDS
    for name, module in COMMANDS.items():
        assert module == "omnijet_weaver.cli." + name.removeprefix("omnijet-weaver-").replace("-", "_")
        assert command(name).PROG == name  # the name in every error line is the installed command's


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        command(name).main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {name} ") and "--help" in out
    if "--output" in out:
        assert "--overwrite" in out  # never one without the other


def test_shared_options_have_one_help_text():
    """An option that several commands take reads the same in each up to the command's own detail and default
    (the part of the help before the first colon, semicolon or parenthesis)."""
    heads = {}
    for name in set(COMMANDS) - {"omnijet-weaver-configs"}:  # its --overwrite goes with --copy DIR, not --output
        parser = _parser(name)
        for action in parser._actions:
            for option in action.option_strings:
                if option in ("--device", "--no-progress", "--overwrite", "--checkpoint", "--tokenizer", "--workers",
                              "--seed", "--seeds", "--batch-size", "--num-jets", "--data-config", "--patience"):
                    heads.setdefault(option, set()).add(action.help.split(":")[0].split("(")[0].split(";")[0])
    assert len(heads) == 12, sorted(heads)
    multi = {k: v for k, v in heads.items() if len(v) > 1 and k != "--tokenizer"}  # token-quality: a list of specs
    assert not multi, multi


def _parser(name):
    """The argparse parser a command builds (captured from its parse_args)."""
    captured = {}
    original = cli.CommandParser.parse_args

    def grab(self, args=None, namespace=None):
        captured["parser"] = self
        raise SystemExit(0)

    cli.CommandParser.parse_args = grab
    try:
        with pytest.raises(SystemExit):
            command(name).main([])
    finally:
        cli.CommandParser.parse_args = original
    return captured["parser"]


# --- bad values: one line, exit 2 --------------------------------------------------------------------------------

STUDY_INPUTS = {  # the least each command needs besides the option under test (files filled in by the test)
    "omnijet-weaver-tokenize": ["{jets}", "--data-config", "qg_top", "--output", "{tmp}/t.parquet"],
    "omnijet-weaver-generate": ["--num-jets", 2, "--output", "{tmp}/g.root"],
    "omnijet-weaver-make-jets": ["--num-jets", 2, "--output", "{tmp}/m.root"],
    "omnijet-weaver-demo": ["--output", "{tmp}/demo"],
    "omnijet-weaver-transfer": ["--train", "{jets}", "--test", "{jets}", "--output", "{tmp}/tr"],
    "omnijet-weaver-token-quality": ["{jets}", "--output", "{tmp}/tq"],
    "omnijet-weaver-gen-fidelity": ["{jets}", "--output", "{tmp}/gf"],
}


def base(name, files, tmp_path):
    return [str(a).format(jets=files / "jets.root", tmp=tmp_path) for a in STUDY_INPUTS[name]]


@pytest.mark.parametrize("name", [n for n in STUDY_INPUTS if n != "omnijet-weaver-make-jets"])
def test_batch_size_zero(name, files, tmp_path, capsys):
    line = fails(capsys, name, *base(name, files, tmp_path), "--batch-size", 0)
    assert line == (f"{name}: error: argument --batch-size: must be a whole number of at least 1, got '0' "
                    f"(see {name} --help)")


@pytest.mark.parametrize("name", ["omnijet-weaver-generate", "omnijet-weaver-make-jets", "omnijet-weaver-demo",
                                  "omnijet-weaver-gen-fidelity"])
def test_negative_num_jets(name, files, tmp_path, capsys):
    line = fails(capsys, name, *base(name, files, tmp_path), "--num-jets", -1)
    assert "argument --num-jets: must be a whole number of at least 1, got '-1'" in line
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("option,value,message", [
    ("--device", "cdua", "argument --device: 'cdua' is not a torch device: give e.g. cpu, cuda or cuda:1"),
    ("--seed", "-3", "argument --seed: must be a seed, a whole number from 0 to 2**32 - 1, got '-3'"),
    ("--seed", str(2**32), f"argument --seed: must be a seed, a whole number from 0 to 2**32 - 1, got '{2**32}'"),
    ("--temperature", "0", "argument --temperature: must be a positive number, got '0'"),
    ("--top-k", "0", "argument --top-k: must be a whole number of at least 1, got '0'"),
    ("--checkpoint", "nope.pt", "argument --checkpoint: 'nope.pt' does not exist"),
    ("--label", "label_Top", "argument --label: invalid choice: 'label_Top'"),
    ("--precision", "fp16", "argument --precision: invalid choice: 'fp16' (choose from 'fp32', 'bf16')"),
])
def test_generate_checks_values_at_parse_time(option, value, message, files, tmp_path, capsys):
    assert message in fails(capsys, "omnijet-weaver-generate", *base("omnijet-weaver-generate", files, tmp_path),
                            option, value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_cuda_on_a_machine_without_one(files, tmp_path, capsys):
    line = fails(capsys, "omnijet-weaver-tokenize", *base("omnijet-weaver-tokenize", files, tmp_path), "--device", "cuda")
    assert "argument --device: 'cuda': this machine has no CUDA device; use --device cpu" in line


@pytest.mark.parametrize("name", ["omnijet-weaver-demo", "omnijet-weaver-transfer"])
def test_unknown_mode(name, files, tmp_path, capsys):
    line = fails(capsys, name, *base(name, files, tmp_path), "--modes", "finetune", "bogus")
    assert "argument --modes: invalid choice: 'bogus' (choose from 'finetune', 'scratch', 'frozen')" in line


@pytest.mark.parametrize("name", ["omnijet-weaver-tokenize", "omnijet-weaver-token-quality",
                                  "omnijet-weaver-gen-fidelity", "omnijet-weaver-transfer", "omnijet-weaver-convert"])
def test_missing_input_file(name, files, tmp_path, capsys):
    missing = tmp_path / "missing.root"
    argv = {"omnijet-weaver-convert": [missing, "--output", tmp_path / "c.root"],
            "omnijet-weaver-transfer": ["--train", missing, "--test", files / "jets.root", "--output", tmp_path / "o"]}
    args = argv.get(name) or [a.replace(str(files / "jets.root"), str(missing)) for a in base(name, files, tmp_path)]
    line = fails(capsys, name, *args)
    assert f"'{missing}' does not exist" in line
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("name,option,checkpoint,message", [
    ("omnijet-weaver-generate", "--checkpoint", "tok.pt", "holds a 'vqvae', but one of ['omnijet_gpt'] is expected"),
    ("omnijet-weaver-gen-fidelity", "--checkpoint", "tok.pt", "holds a 'vqvae', but one of ['omnijet_gpt']"),
    ("omnijet-weaver-tokenize", "--tokenizer", "gpt.pt", "holds a 'omnijet_gpt', but one of"),
    ("omnijet-weaver-tokenize", "--tokenizer", "junk.pt", "not a readable PyTorch checkpoint"),
])
def test_wrong_checkpoint(name, option, checkpoint, message, files, tmp_path, capsys):
    (files / "junk.pt").write_text("hello")
    line = fails(capsys, name, *base(name, files, tmp_path), option, files / checkpoint, "--device", "cpu")
    assert checkpoint in line and message in line
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["omnijet-weaver-tokenize", "omnijet-weaver-generate", "omnijet-weaver-make-jets",
                                  "omnijet-weaver-convert"])
def test_existing_output_file_needs_overwrite(name, files, tmp_path, capsys):
    args = [files / "jets.root", "--output", tmp_path / "c.root"] if name == "omnijet-weaver-convert" \
        else base(name, files, tmp_path)
    output = Path(args[args.index("--output") + 1])
    output.write_text("keep me")
    line = fails(capsys, name, *args)
    assert f"output '{output}' exists; pass --overwrite to replace it" in line
    assert output.read_text() == "keep me"


@pytest.mark.parametrize("name", ["omnijet-weaver-demo", "omnijet-weaver-transfer", "omnijet-weaver-token-quality",
                                  "omnijet-weaver-gen-fidelity"])
def test_existing_report_folder_needs_overwrite(name, files, tmp_path, capsys):
    args = base(name, files, tmp_path)
    folder = Path(args[args.index("--output") + 1])
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    extra = {"omnijet-weaver-demo": ["--quick"], "omnijet-weaver-token-quality": ["--device", "cpu"],
             "omnijet-weaver-gen-fidelity": ["--device", "cpu"]}.get(name, [])
    line = fails(capsys, name, *args, *extra)
    assert str(folder) in line and "--overwrite" in line
    assert (folder / "notes.txt").read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == [folder.name]


def _help(name) -> str:
    return _parser(name).format_help()


def test_a_list_option_that_swallowed_the_files_says_so(files, tmp_path, capsys):
    line = fails(capsys, "omnijet-weaver-token-quality", "--output", tmp_path / "tq", "--seeds", 0, 1, files / "jets.root")
    assert f"argument --seeds: must be a seed, a whole number from 0 to 2**32 - 1, got '{files / 'jets.root'}'; a " \
           "list option takes every value up to the next option: give the input files first, or end the list " \
           "with --" in line
    line = fails(capsys, "omnijet-weaver-token-quality", "--output", tmp_path / "tq", "--tokenizer", "packaged",
                 files / "jets.root")
    assert "the following arguments are required: files; a list option takes every value" in line


# --- list options: space-separated, the same in every command --------------------------------------------------


def test_seeds_parse_the_same_in_every_command_that_takes_them(files, tmp_path, capsys):
    takes = sorted(n for n in COMMANDS if "--seeds" in _help(n))
    assert takes == ["omnijet-weaver-token-quality", "omnijet-weaver-transfer"]
    for name in takes:
        args = command(name).parse_args(base(name, files, tmp_path) + ["--seeds", "0", "1", "2"])
        assert args.seeds == [0, 1, 2]
        assert cli.config_from_args(_config_class(name), args, **_extra(name, args)).seeds == (0, 1, 2)
        line = fails(capsys, name, *base(name, files, tmp_path), "--seeds", "0,1,2")
        assert "argument --seeds: must be a seed, a whole number from 0 to 2**32 - 1, got '0,1,2'" in line
    takes_one = sorted(n for n in COMMANDS if "--seed " in _help(n) or "--seed SEED" in _help(n))
    assert takes_one == ["omnijet-weaver-demo", "omnijet-weaver-gen-fidelity", "omnijet-weaver-generate",
                         "omnijet-weaver-make-jets", "omnijet-weaver-token-quality"]  # token-quality: the jet mix
    for name in takes_one:
        assert command(name).parse_args(base(name, files, tmp_path) + ["--seed", "7"]).seed == 7


def test_other_lists_are_space_separated(files, tmp_path, capsys):
    tq = command("omnijet-weaver-token-quality")
    args = tq.parse_args([str(files / "jets.root"), "--output", "x", "--classifiers", "deepsets", "part",
                          "--tokenizer", "packaged", "binned:5", "--tokenizer", "b=binned:7"])
    assert args.classifiers == ["deepsets", "part"] and args.tokenizers == ["packaged", "binned:5", "b=binned:7"]
    assert tq.parse_args([str(files / "jets.root"), "--output", "x", "--classifiers", "none"]).classifiers == []
    assert "argument --classifiers: invalid choice: 'deepsets,transformer'" in \
        fails(capsys, "omnijet-weaver-token-quality", files / "jets.root", "--output", tmp_path / "tq",
              "--classifiers", "deepsets,transformer")
    assert "argument --classifiers: none goes alone" in \
        fails(capsys, "omnijet-weaver-token-quality", files / "jets.root", "--output", tmp_path / "tq",
              "--classifiers", "none", "deepsets")
    mj = command("omnijet-weaver-make-jets")
    assert mj.parse_args(["--process", "top", "QCD", "--num-jets", "1", "--output", "x.root"]).process == ["top", "qcd"]
    assert "argument --process: unknown process 'top,qcd': choose from qcd, top, wqq, zqq, hbb or all" in \
        fails(capsys, "omnijet-weaver-make-jets", "--process", "top,qcd", *base("omnijet-weaver-make-jets", files,
                                                                                  tmp_path))
    tr = command("omnijet-weaver-transfer")
    args = tr.parse_args(base("omnijet-weaver-transfer", files, tmp_path) + ["--lr", "1e-2", "scratch=5e-4"])
    assert tr.learning_rates(args.lr) == {"finetune": 1e-2, "scratch": 5e-4, "frozen": 1e-2}
    assert "argument --lr: 'bogus=1e-3': unknown mode 'bogus'; choose from finetune, scratch, frozen" in \
        fails(capsys, "omnijet-weaver-transfer", *base("omnijet-weaver-transfer", files, tmp_path), "--lr", "bogus=1e-3")


@pytest.mark.parametrize("name", ["omnijet-weaver-token-quality", "omnijet-weaver-gen-fidelity"])
def test_figures_option(name, files, tmp_path, capsys):
    cls, parse = _config_class(name), command(name).parse_args
    assert cli.config_from_args(cls, parse(base(name, files, tmp_path))).figures == ("png", "pdf")
    for argv, formats in ((["svg"], ("svg",)), (["none"], ()), (["pdf", "png", "pdf"], ("pdf", "png"))):
        assert cli.config_from_args(cls, parse(base(name, files, tmp_path) + ["--figures", *argv])).figures == formats
    assert "argument --figures: none goes alone" in fails(capsys, name, *base(name, files, tmp_path), "--figures",
                                                           "none", "png")
    assert "argument --figures: invalid choice: 'gif'" in fails(capsys, name, *base(name, files, tmp_path),
                                                                "--figures", "gif")


def test_each_torchrun_rank_takes_its_own_gpu():
    """Under torchrun a bare ``cuda`` (and ``--device auto``) is ``cuda:LOCAL_RANK``; without torchrun, ``cuda``."""
    import argparse

    from omnijet_weaver.cli.options import rank_cuda_device

    assert rank_cuda_device(None, 1) == "cuda"
    assert [rank_cuda_device(str(r), 4) for r in range(4)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    with pytest.raises(argparse.ArgumentTypeError, match=r"LOCAL_RANK=2 but this machine has 2 CUDA device\(s\): "
                                                         r"launch torchrun with --nproc_per_node 2 or fewer"):
        rank_cuda_device("2", 2)
    with pytest.raises(argparse.ArgumentTypeError, match="LOCAL_RANK='x' is not a whole number"):
        rank_cuda_device("x", 2)


# --- parsed options -> the study's config ----------------------------------------------------------------------


def _config_class(name):
    from omnijet_weaver.studies.demo import DemoConfig
    from omnijet_weaver.studies.gen_fidelity import GenFidelityConfig
    from omnijet_weaver.studies.token_quality import TokenQualityConfig
    from omnijet_weaver.studies.transfer import TransferConfig

    return {"omnijet-weaver-demo": DemoConfig, "omnijet-weaver-transfer": TransferConfig,
            "omnijet-weaver-token-quality": TokenQualityConfig, "omnijet-weaver-gen-fidelity": GenFidelityConfig}[name]


def _extra(name, args) -> dict:
    return {"lrs": command(name).learning_rates(args.lr)} if name == "omnijet-weaver-transfer" else {}


@pytest.mark.parametrize("name", ["omnijet-weaver-demo", "omnijet-weaver-transfer", "omnijet-weaver-token-quality",
                                  "omnijet-weaver-gen-fidelity"])
def test_the_command_line_defaults_are_the_configs_defaults(name, files, tmp_path):
    cls = _config_class(name)
    args = command(name).parse_args(base(name, files, tmp_path))
    config = cli.config_from_args(cls, args, **_extra(name, args))
    required = {f.name: getattr(config, f.name) for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    expected = cls(**required)
    if hasattr(expected, "device"):
        expected.device = "cuda" if torch.cuda.is_available() else "cpu"  # --device auto
    assert config == expected
    assert Path(config.output) == tmp_path / Path(config.output).name


def test_every_option_reaches_the_config(files, tmp_path):
    """Each option a study's parser defines lands in a field of its config (one add_argument is all it takes)."""
    for name in ("omnijet-weaver-demo", "omnijet-weaver-transfer", "omnijet-weaver-token-quality",
                 "omnijet-weaver-gen-fidelity"):
        fields = {f.name for f in dataclasses.fields(_config_class(name))}
        dests = {a.dest for a in _parser(name)._actions if a.dest != "help"}
        assert dests - fields <= {"lr"}, (name, dests - fields)  # transfer's --lr becomes lrs (a dict)
    gf = command("omnijet-weaver-gen-fidelity")
    args = gf.parse_args(base("omnijet-weaver-gen-fidelity", files, tmp_path) + [
        "--num-jets", "40", "--max-real-jets", "30", "--temperature", "0.5", "--top-k", "9", "--batch-size", "8",
        "--seed", "3", "--epochs", "4", "--patience", "2", "--width", "6", "--device", "cpu", "--no-progress",
        "--checkpoint", str(files / "gpt.pt"), "--data-config", "qg_top", "--overwrite"])
    config = cli.config_from_args(_config_class("omnijet-weaver-gen-fidelity"), args)
    assert (config.num_jets, config.max_real_jets, config.temperature, config.top_k, config.batch_size, config.seed,
            config.epochs, config.patience, config.width, config.device, config.progress, config.overwrite) == \
        (40, 30, 0.5, 9, 8, 3, 4, 2, 6, "cpu", False, True)
    assert config.checkpoint == str(files / "gpt.pt")
    assert Path(config.data_config) == ROOT / "omnijet_weaver" / "configs" / "data" / "qg_top.yaml"


def test_demo_quick_presets_with_explicit_options_on_top(tmp_path):
    from omnijet_weaver.studies.demo import DemoConfig, quick_config

    demo = command("omnijet-weaver-demo")
    out = tmp_path / "r"
    assert cli.config_from_args(DemoConfig, demo.parse_args(["--output", str(out), "--quick"])) == quick_config(out)
    config = cli.config_from_args(DemoConfig, demo.parse_args(["--output", str(out), "--quick", "--labels", "30", "50",
                                                               "--seed", "4", "--no-progress", "--modes", "frozen"]))
    assert config == quick_config(out, labels=(30, 50), seed=4, progress=False, modes=("frozen",))
    assert cli.config_from_args(DemoConfig, demo.parse_args(["--output", str(out)])) == DemoConfig(output=out)


# --- packaged defaults -----------------------------------------------------------------------------------------


def test_tokenize_defaults_to_the_packaged_tokenizer(files, tmp_path, capsys):
    tokenize = command("omnijet-weaver-tokenize").main
    common = [str(files / "jets.root"), "--data-config", str(DATA_CONFIG), "--device", "cpu", "--no-progress"]
    tokenize(common + ["--output", str(tmp_path / "default.parquet")])
    tokenize(common + ["--output", str(tmp_path / "explicit.parquet"), "--tokenizer", packaged_path("tokenizer")])
    tokenize(common + ["--output", str(tmp_path / "other.parquet"), "--tokenizer", str(files / "tok.pt")])
    assert "wrote 24 jets" in capsys.readouterr().err
    default, explicit, other = (ak.from_parquet(tmp_path / f"{n}.parquet") for n in ("default", "explicit", "other"))
    assert len(default) == 24 and ak.sum(ak.num(default["tokens"])) > 24
    assert ak.to_list(default["tokens"]) == ak.to_list(explicit["tokens"])
    assert ak.to_list(default["tokens"]) != ak.to_list(other["tokens"])  # the comparison can tell tokenizers apart
    assert int(ak.max(default["tokens"])) >= 16 > int(ak.max(other["tokens"]))  # packaged codebook vs 16 codes
    np.testing.assert_array_equal(default["label"], explicit["label"])


def test_worker_file_order_gives_each_worker_a_contiguous_block():
    from omnijet_weaver.weaver.dataset import worker_file_order

    files = list("abcdefg")
    for n in (1, 2, 3, 7, 9):
        order = worker_file_order(files, n)
        m = min(n, len(files))
        assert sorted(order) == files  # a permutation
        # weaver gives worker w the files order[w::m]; concatenated by worker they are the original order
        assert [f for w in range(m) for f in order[w::m]] == files


def test_tokenize_with_workers_keeps_the_file_order(files, tmp_path, capsys):
    tokenize = command("omnijet-weaver-tokenize").main
    inputs = []
    for i, n in enumerate((11, 5, 17, 8, 3)):  # files of different sizes: workers finish at different times
        write_root(tmp_path / f"in{i}.root", toy_jets(n, seed=40 + i))
        inputs.append(str(tmp_path / f"in{i}.root"))
    common = ["--data-config", str(DATA_CONFIG), "--device", "cpu", "--no-progress", "--tokenizer",
              str(files / "tok.pt")]
    singles = []
    for i, path in enumerate(inputs):
        tokenize([path, *common, "--output", str(tmp_path / f"single{i}.parquet")])
        singles.append(ak.from_parquet(tmp_path / f"single{i}.parquet"))
    expected = ak.concatenate(singles)
    assert len(expected) == 44
    for workers, batch in ((0, 512), (2, 4), (3, 7), (5, 512)):
        out = tmp_path / f"w{workers}_b{batch}.parquet"
        tokenize([*inputs, *common, "--output", str(out), "--num-workers", str(workers), "--batch-size", str(batch)])
        table = ak.from_parquet(out)
        assert table.fields == expected.fields
        for field in table.fields:
            assert ak.to_list(table[field]) == ak.to_list(expected[field]), (workers, batch, field)


def test_tokenize_refuses_negative_workers(files, tmp_path, capsys):
    line = fails(capsys, "omnijet-weaver-tokenize", *base("omnijet-weaver-tokenize", files, tmp_path),
                 "--num-workers", "-1")
    assert "argument --num-workers: must be a whole number of at least 0, got '-1'" in line


def test_data_config_by_shipped_name(files, tmp_path, capsys):
    args = command("omnijet-weaver-tokenize").parse_args([str(files / "jets.root"), "--data-config", "jetclass",
                                                          "--output", "t.parquet"])
    assert Path(args.data_config) == ROOT / "omnijet_weaver" / "configs" / "data" / "jetclass.yaml"
    line = fails(capsys, "omnijet-weaver-tokenize", files / "jets.root", "--output", tmp_path / "t.parquet",
                 "--data-config", "qg-top")
    assert "argument --data-config: 'qg-top' is neither a file nor a shipped data config (choose from " \
           "five_classes, jetclass, qg_top, quarkgluon, tokens, toplandscape, or give a YAML file)" in line


# --- the error path itself -------------------------------------------------------------------------------------


@pytest.mark.parametrize("error,line", [
    (ConfigError("--x must be 1"), "prog: error: --x must be 1"),
    (InputFileError("input file 'a.root'\n holds no TTree"), "prog: error: input file 'a.root' holds no TTree"),
    (OutputExistsError("output 'o' exists"), "prog: error: output 'o' exists"),
    (MissingDependencyError("pip install x"), "prog: error: pip install x"),
    (KeyError("'f.root' has no tree 'tree'"), "prog: error: 'f.root' has no tree 'tree'"),  # no extra quotes
    (FileNotFoundError(2, "No such file or directory", "f.yaml"), "prog: error: [Errno 2] No such file or "
                                                                 "directory: 'f.yaml'"),
    (ImportError("needs matplotlib"), "prog: error: needs matplotlib"),
])
def test_bad_input_is_one_line_and_exit_2(error, line, capsys):
    def body():
        raise error

    with pytest.raises(SystemExit) as exc:
        cli.run_command("prog", body)
    assert exc.value.code == 2 and capsys.readouterr().err == line + "\n"


def test_failed_weaver_run_keeps_its_log_tail_and_exits_1(capsys):
    def body():
        raise WeaverRunError("weaver (train) failed; end of logs/train.log:\n  line 1\n  line 2")

    with pytest.raises(SystemExit) as exc:
        cli.run_command("prog", body)
    assert exc.value.code == 1
    assert capsys.readouterr().err == "prog: error: weaver (train) failed; end of logs/train.log:\n  line 1\n  line 2\n"


def test_interrupt_is_one_line_and_exit_130(capsys):
    def body():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exc:
        cli.run_command("prog", body)
    assert exc.value.code == 130
    assert capsys.readouterr().err == "prog: error: interrupted; nothing partial is left (outputs appear only when complete)\n"


def test_a_bug_is_not_hidden():
    """Errors that are not about the input (a bug) keep their traceback."""
    def body():
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        cli.run_command("prog", body)
    assert cli.command("prog")(lambda argv: argv)(["x"]) == ["x"]
