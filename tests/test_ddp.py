"""DDP runs of weaver's training loop through the launcher (``torchrun ... -m omnijet_weaver.launch``, gloo on
CPU), and of tokenize / generate under torchrun.

The main runs are real two-node jobs on one machine: two ``torchrun --nnodes 2 --node_rank 0|1 --master_addr
127.0.0.1 --nproc_per_node 2`` agents started together, each in its own folder standing for its node's disk
(relative ``--model-prefix`` / ``--log-file``), so that anything weaver-core 0.5.3 would do on every node's
local rank 0 (checkpoints, the prediction) or number by local rank (the log files, the file shards) shows up
in the second node's folder or as overlapping shards. The tagger (fine-tuning, and on one node the frozen
backbone, which must not trip ``find_unused_parameters=False``), the VQ-VAE (whose quantizer synchronises its
codebook) and a tiny weaver ParT (BatchNorm layers on CPU) train this way.
"""

from __future__ import annotations

import math
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import uproot
from conftest import DATA_CONFIG, NETWORK_CONFIGS, ROOT, toy_jets
from test_tagger import CLS_CONFIG, assert_identical, make_checkpoints, mode_options, part
from test_weaver_history import fmt5

from omnijet_weaver.errors import ConfigError
from omnijet_weaver.io.files import write_root
from omnijet_weaver.models.tokenizer import load_tokenizer
from omnijet_weaver.weaver import launch
from omnijet_weaver.weaver.history import history_path, read_history

BIN = os.path.dirname(sys.executable)
TORCHRUN = os.path.join(BIN, "torchrun")
NPROC = 2  # processes per node
N_FILES, N_JETS = 4, 128  # the input files: one per rank of the two-node jobs

pytestmark = pytest.mark.skipif(
    not (os.path.exists(TORCHRUN) and torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torchrun / torch.distributed with gloo is not available",
)

#: A tiny ParT as weaver's example config builds it (ParticleTransformer with BatchNorm input embeddings).
PART_CONFIG = '''
import torch
from weaver.nn.model.ParticleTransformer import ParticleTransformer


class ParticleTransformerWrapper(torch.nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        self.mod = ParticleTransformer(**kwargs)

    def forward(self, points, features, lorentz_vectors, mask):
        return self.mod(features, v=lorentz_vectors, mask=mask)


def get_model(data_config, **kwargs):
    cfg = dict(input_dim=len(data_config.input_dicts["pf_features"]), num_classes=len(data_config.label_value),
               pair_input_dim=4, embed_dims=[16, 16], pair_embed_dims=[8, 8], num_heads=2, num_layers=1,
               num_cls_layers=1, fc_params=[])
    cfg.update(**kwargs)
    model = ParticleTransformerWrapper(**cfg)
    return model, {"input_names": list(data_config.input_names), "output_names": ["softmax"]}


def get_loss(data_config, **kwargs):
    return torch.nn.CrossEntropyLoss()
'''


@pytest.fixture(scope="module")
def setup(toy_root_files, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    files = []
    for i in range(N_FILES):
        path = folder / f"shard_{i}.root"
        write_root(path, toy_jets(N_JETS, seed=20 + i))
        files.append(str(path))
    (folder / "part_config.py").write_text(PART_CONFIG)
    tok, gpt = make_checkpoints(folder, toy_root_files[0])
    return folder, files, tok, gpt


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(out, nnodes: int, command: list, timeout=300) -> list:
    """``torchrun`` agents of ``nnodes`` nodes × :data:`NPROC` processes started together on this machine, node
    ``i`` in ``out/node<i>`` (its own disk); waits for all and returns the node folders."""
    nodes = [out / f"node{i}" for i in range(nnodes)]
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    procs = []
    try:
        for i, node in enumerate(nodes):
            node.mkdir(parents=True)
            rdzv = (["--standalone", "--nnodes", "1"] if nnodes == 1 else
                    ["--nnodes", str(nnodes), "--node_rank", str(i), "--master_addr", "127.0.0.1",
                     "--master_port", str(port)])
            with open(node / "torchrun.out", "w") as sink:
                procs.append(subprocess.Popen([TORCHRUN, *rdzv, "--nproc_per_node", str(NPROC), *map(str, command)],
                                              cwd=node, stdout=sink, stderr=subprocess.STDOUT, env=env))
        codes = [proc.wait(timeout=timeout) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if any(codes):
        tails = "\n".join(f"--- node {i} (exit {c}):\n{(n / 'torchrun.out').read_text()[-4000:]}"
                          for i, (n, c) in enumerate(zip(nodes, codes)))
        logs = "\n".join(f"--- {p}:\n{p.read_text()[-3000:]}" for n in nodes for p in sorted(n.glob("train.log.*")))
        raise AssertionError(f"torchrun failed {codes}:\n{tails}\n{logs}")
    return nodes


def run_ddp(setup, name, network_config, options, nnodes=2, predict=False, ours=True):
    """weaver through the launcher on ``nnodes`` × 2 gloo ranks, one file each: checks what every such run
    must do and returns (node folders, model prefix on node 0, {global rank: log}). ``ours``: one of our
    network configs, whose hooks write the history file."""
    folder, files, _, _ = setup
    world = nnodes * NPROC
    inputs = files[:world]
    cmd = ["-m", "omnijet_weaver.launch", "--backend", "gloo", "--gpus", "", "--data-train", *inputs,
           "--data-val", *inputs, "--data-config", DATA_CONFIG, "--network-config", network_config, *options,
           "--model-prefix", "model/m", "--log-file", "train.log",
           "--num-workers", "0", "--batch-size", "32", "--num-epochs", "1", "--steps-per-epoch", "3",
           "--steps-per-epoch-val", "1", "--in-memory", "--fetch-step", "1"]
    if predict:
        cmd += ["--data-test", files[0], "--predict-output", "pred.root"]
    nodes = torchrun(folder / name, nnodes, cmd)

    # logs: one per global rank, each on its own node, numbered by global rank
    for i, node in enumerate(nodes):
        assert sorted(p.name for p in node.glob("train.log*")) == [
            f"train.log.{r:03d}" for r in range(i * NPROC, (i + 1) * NPROC)]
    logs = {r: (nodes[r // NPROC] / f"train.log.{r:03d}").read_text() for r in range(world)}

    # the ranks read disjoint shards covering every file: one file each (train and val), by global rank
    for mode in ("train", "val"):
        shards = {}
        for rank, log in logs.items():
            found = re.findall(rf"global rank {rank} of {world} reads (\d+) {mode} file\(s\): (\S+)\n", log)
            assert len(found) == 1 and found[0][0] == "1", (rank, mode, found)
            shards[rank] = found[0][1]
            # weaver's own dataset names the rank and lists the same file
            listed = re.findall(rf"Restarted DataIter {mode}_rank(\d+).*?file_list:[\s{{\[]*\"_\": \[\s*\"([^\"]+)\"",
                                log, re.S)
            assert listed and all(int(r) == rank and f == shards[rank] for r, f in listed), listed
        assert sorted(shards.values()) == sorted(inputs), shards

    # exactly one checkpoint set, on node 0 (global rank 0): nothing of it on the other node's disk
    prefix = nodes[0] / "model" / "m"
    written = sorted(p.name for p in (nodes[0] / "model").iterdir() if p.is_file())
    assert written == ["m_best_epoch_optimizer.pt", "m_best_epoch_state.pt", "m_epoch-0_optimizer.pt",
                       "m_epoch-0_state.pt"] + ["m_history.jsonl"] * ours, written
    for node in nodes[1:]:
        assert not (node / "model").exists() and not list(node.rglob("*.pt")) and not list(node.rglob("*.root"))

    # the ranks end with the same model, the one rank 0 saved
    digests = {r: re.findall(r"global rank \d+ model state sha256 (\w+)", log) for r, log in logs.items()}
    saved = launch.state_digest(torch.load(f"{prefix}_epoch-0_state.pt", weights_only=False))
    assert all(d == [saved] for d in digests.values()), (saved, digests)

    # weaver's validation metric is the same on every rank; the history: written once (by global rank 0)
    metrics = {r: re.findall(r"Current validation metric: (\S+) \(", log) for r, log in logs.items()}
    assert len(metrics[0]) == 1 and all(m == metrics[0] for m in metrics.values()), metrics
    for log in logs.values():
        assert "Using distributed PyTorch with gloo backend" in log and "process group gloo" in log
    if ours:
        history = read_history(prefix)
        assert len(history_path(prefix).read_text().splitlines()) == 1 and history[0]["epoch"] == 0
        assert history[0]["best_epoch"] == 0 and metrics[0] == [fmt5(history[0]["val"]["metric"])]

    # the prediction: on global rank 0 alone, over the whole test file, written once
    if predict:
        pred = nodes[0] / "model" / "predict_output" / "pred.root"
        with uproot.open(pred) as f:
            assert f["Events"].num_entries == N_JETS
        assert [r for r, log in logs.items() if "Written output to" in log] == [0]
        assert "the prediction runs on global rank 0 alone" in logs[0]
    return nodes, prefix, logs


def test_two_nodes_train_the_tagger_and_predict(setup):
    _, _, tok, gpt = setup
    nodes, prefix, logs = run_ddp(setup, "finetune", CLS_CONFIG, mode_options("finetune", tok, gpt), predict=True)
    record = read_history(prefix)[0]
    # validation over all ranks (weaver gathers outputs and labels): accuracy = metric; training: rank 0's batches
    assert record["val"]["accuracy"] == record["val"]["metric"] and set(record["train"]) == {"loss", "accuracy"}
    assert re.findall(r"Train AvgLoss: (\S+), AvgAcc: (\S+)", logs[0]) == [
        (fmt5(record["train"]["loss"]), fmt5(record["train"]["accuracy"]))]
    state = torch.load(f"{prefix}_best_epoch_state.pt", weights_only=True)
    gpt_state = torch.load(gpt, weights_only=True)
    assert_identical(part(state, "tokenizer"), part(gpt_state, "tokenizer"), "tokenizer")
    assert any(not torch.equal(v, part(gpt_state, "backbone")[k]) for k, v in part(state, "backbone").items())


def test_one_node_trains_the_frozen_tagger(setup):
    _, _, tok, gpt = setup
    _, prefix, _ = run_ddp(setup, "frozen", CLS_CONFIG, mode_options("frozen", tok, gpt), nnodes=1)
    state = torch.load(f"{prefix}_best_epoch_state.pt", weights_only=True)
    gpt_state = torch.load(gpt, weights_only=True)
    assert_identical(part(state, "tokenizer"), part(gpt_state, "tokenizer"), "tokenizer")
    assert_identical(part(state, "backbone"), part(gpt_state, "backbone"), "frozen backbone")


def test_two_nodes_train_the_vqvae(setup):
    options = ["-o", "codebook_size", "32", "-o", "hidden_dim", "16", "-o", "num_blocks", "1", "-o", "num_heads", "2",
               "--optimizer", "adamw", "--start-lr", "3e-3"]
    _, prefix, logs = run_ddp(setup, "vqvae", NETWORK_CONFIGS / "omnijet_vqvae.py", options)
    for log in logs.values():
        assert "Using custom train/evaluate functions" in log
    record = read_history(prefix)[0]
    assert 0 < record["train"]["code_usage"] <= 1 and record["val"]["metric"] == math.exp(-record["val"]["loss"])
    tok = load_tokenizer(f"{prefix}_best_epoch_state.pt")
    assert bool(tok.quantizer.initialized) and tok.codebook_size == 32


def test_one_node_trains_weavers_part_with_batchnorm_on_cpu(setup):
    folder = setup[0]
    _, prefix, logs = run_ddp(setup, "part", folder / "part_config.py", ["--optimizer", "adamw"], nnodes=1,
                              predict=True, ours=False)
    for log in logs.values():
        assert "BatchNorm layers kept as they are on CPU" in log
    state = torch.load(f"{prefix}_best_epoch_state.pt", weights_only=True)
    assert any("bn" in k and k.endswith("running_mean") for k in state)


# --- tokenize and generate: shares by global rank ------------------------------------------------------------


def test_two_nodes_tokenize_and_generate_by_global_rank(setup):
    import awkward as ak

    folder, files, tok, _ = setup
    world = 2 * NPROC
    tokenize = os.path.join(BIN, "omnijet-weaver-tokenize")
    nodes = torchrun(folder / "tokenize", 2, ["--no-python", tokenize, *files, "--data-config", DATA_CONFIG,
                                              "--tokenizer", tok, "--output", "tokens.parquet", "--no-progress",
                                              "--batch-size", "64"])
    for i, node in enumerate(nodes):
        assert sorted(p.name for p in node.glob("tokens*")) == [
            f"tokens.part{r}of{world}.parquet" for r in range(i * NPROC, (i + 1) * NPROC)]
    for r in range(world):
        tokens = ak.from_parquet(nodes[r // NPROC] / f"tokens.part{r}of{world}.parquet")
        assert len(tokens) == N_JETS  # rank r: files[r::4], one file

    generate = os.path.join(BIN, "omnijet-weaver-generate")
    nodes = torchrun(folder / "generate", 2, ["--no-python", generate, "--num-jets", "8", "--batch-size", "2",
                                              "--output", "gen.root", "--no-progress", "--device", "cpu"])
    jets = {}
    for i, node in enumerate(nodes):
        assert sorted(p.name for p in node.glob("gen*")) == [
            f"gen.part{r}of{world}.root" for r in range(i * NPROC, (i + 1) * NPROC)]
    for r in range(world):
        with uproot.open(nodes[r // NPROC] / f"gen.part{r}of{world}.root") as f:
            jets[r] = f["tree"]["jet_pt"].array(library="np")
        assert len(jets[r]) == 8 // world
    assert len({tuple(np.round(v, 4)) for v in jets.values()}) == world  # seed + rank: different jets per rank


# --- refusals (in-process) ---------------------------------------------------------------------------------


def test_launcher_refuses_another_weaver_version(monkeypatch, capsys):
    monkeypatch.setattr(launch, "installed_version", lambda: "0.5.4")
    with pytest.raises(ConfigError, match=r"^weaver-core 0.5.4 is installed, this launcher was written for 0.5.3; "):
        launch.check_weaver_train()
    with pytest.raises(SystemExit) as exit_:
        launch.main(["--data-config", str(DATA_CONFIG), "--network-config", str(CLS_CONFIG)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("omnijet_weaver.launch: error: weaver-core 0.5.4 is installed, this launcher was written "
                          "for 0.5.3; pip install weaver-core==0.5.3") and err.count("\n") == 1, err


def test_launcher_refuses_a_changed_weaver_function(monkeypatch):
    import weaver.train as wt

    assert launch.check_weaver_train() is wt
    monkeypatch.setattr(wt, "to_filelist", lambda args, mode, rank: None)
    with pytest.raises(ConfigError, match=r"weaver.train.to_filelist\(args, mode, rank\) .* differs from "
                                          r"to_filelist\(args, mode\)"):
        launch.check_weaver_train()


def test_launcher_refuses_backend_outside_torchrun_and_nccl_on_cpu(monkeypatch, capsys):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    argv = ["--data-config", str(DATA_CONFIG), "--network-config", str(CLS_CONFIG), "--gpus", ""]
    with pytest.raises(SystemExit) as exit_:
        launch.main([*argv, "--backend", "gloo"])
    assert exit_.value.code == 2 and "needs the RANK / WORLD_SIZE of torchrun" in capsys.readouterr().err
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(ConfigError, match="--backend nccl needs GPUs"):
        launch.torchrun_ranks("nccl", "")
    assert launch.torchrun_ranks(None, "") is None
    ranks = launch.torchrun_ranks("gloo", "")
    assert (ranks.rank, ranks.world, ranks.local, ranks.local_world, ranks.cuda) == (0, 1, 0, 1, False)


def test_launcher_refuses_torchrun_without_backend(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ConfigError, match="WORLD_SIZE=4 .* but no --backend"):
        launch.torchrun_ranks(None, "0")


# --- the patches, in-process (the GPU mapping included: no GPU needed) ---------------------------------------


def test_launcher_view_of_torch_maps_the_gpu_to_the_local_rank(monkeypatch):
    """Global rank 5 of 8, node-local rank 1: weaver's ``local_rank`` (= 5 under the launcher) picks cuda:1."""
    import weaver.train as wt

    launcher = launch.Launcher(wt, launch.Ranks(rank=5, world=8, local=1, local_world=4, cuda=True))
    view = launcher.torch_view()
    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", d)))

    class FakeDDP:
        def __init__(self, module, device_ids=None, output_device=None, **kwargs):
            calls.append(("ddp", device_ids, output_device, kwargs))
            self.module = module

    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", FakeDDP)
    view.cuda.set_device(5)
    assert view.device(5) == torch.device("cuda", 1)  # weaver's `dev = torch.device(local_rank)`
    assert view.device("cuda", 3) == torch.device("cuda", 3) and view.device("cpu") == torch.device("cpu")  # others: torch's
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    synced = view.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert isinstance(synced[1], torch.nn.SyncBatchNorm)  # on GPUs: torch's conversion
    view.nn.parallel.DistributedDataParallel(synced, device_ids=[5], output_device=5, find_unused_parameters=False)
    assert calls == [("set_device", 1), ("ddp", [1], 1, {"find_unused_parameters": False})]
    # everything else is torch itself
    assert view.nn.Linear is torch.nn.Linear and view.float32 is torch.float32 and view.load is torch.load
    assert view.cuda.is_available is torch.cuda.is_available

    cpu = launch.Launcher(wt, launch.Ranks(rank=1, world=2, local=1, local_world=2, cuda=False)).torch_view()
    cpu.cuda.set_device(1)  # nothing to set on CPU
    assert cpu.device(1) == torch.device("cpu")
    bn = torch.nn.Sequential(torch.nn.BatchNorm1d(2))
    assert cpu.nn.SyncBatchNorm.convert_sync_batchnorm(bn) is bn  # SyncBatchNorm runs on GPUs only
    assert calls == [("set_device", 1), ("ddp", [1], 1, {"find_unused_parameters": False})]


def test_launcher_shards_by_global_rank_and_names_logs_by_it(setup, monkeypatch):
    import weaver.train as wt

    _, files, _, _ = setup
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    launcher = launch.Launcher(wt, launch.Ranks(rank=2, world=4, local=0, local_world=2, cuda=False))
    args = wt.parser.parse_args(["--data-config", str(DATA_CONFIG), "--network-config", str(CLS_CONFIG),
                                 "--data-train", *files, "--data-val", *files[:3]])
    args.local_rank = 2
    assert launcher.to_filelist(args, "train") == ({"_": [files[2]]}, [files[2]])  # weaver alone: files[0::2]
    assert os.environ["LOCAL_WORLD_SIZE"] == "2"
    with pytest.raises(ConfigError, match=r"--data-val has 3 file\(s\) for 4 ranks"):
        launcher.to_filelist(args, "val")
    args.local_rank = None  # no --backend: weaver's own
    assert launcher.to_filelist(args, "train")[1] == sorted(files)

    seen = []
    launcher.originals["_configLogger"] = lambda name, stdout, filename, loglevel: seen.append(filename)
    launcher.config_logger("weaver", stdout=None, filename="logs/train.log.000")
    launcher.config_logger("weaver", stdout=None, filename="")
    assert seen == ["logs/train.log.002", ""]
