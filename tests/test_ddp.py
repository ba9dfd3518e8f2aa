"""Two-process DDP (gloo, CPU) runs of weaver's training loop: the tagger (fine-tuning and frozen backbone, which
must not trip ``find_unused_parameters=False``) and the VQ-VAE (whose quantizer synchronises its codebook).

weaver-core 0.5.3 initialises ``torch.distributed`` only on its GPU path (``--gpus 0 --backend ...`` calls
``torch.cuda.set_device``); with ``--gpus ""`` it wraps the model in DDP without a process group and with an
undefined ``local_rank``. So on CPU the runs go through a tiny launcher that adds exactly the missing CPU branch
to weaver's own ``train.py`` (init the gloo group, ``output_device=None``) and then runs weaver's ``main()``
unchanged; on a GPU machine plain ``torchrun $(which weaver) --backend nccl`` needs none of it.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import pytest
import torch
from conftest import DATA_CONFIG, NETWORK_CONFIGS
from test_tagger import CLS_CONFIG, assert_identical, make_checkpoints, mode_options, part
from test_weaver_history import fmt5

from omnijet_weaver.models.tokenizer import load_tokenizer
from omnijet_weaver.weaver.history import history_path, read_history

BIN = os.path.dirname(sys.executable)
TORCHRUN = os.path.join(BIN, "torchrun")

pytestmark = pytest.mark.skipif(
    not (os.path.exists(TORCHRUN) and torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torchrun / torch.distributed with gloo is not available",
)

#: Launcher: weaver's train.py with the CPU branch for --backend that weaver-core 0.5.3 lacks.
LAUNCHER = '''
import inspect, sys
import weaver.train as wt

src = inspect.getsource(wt)
fixes = [
    ('        gpus = None\\n        dev = torch.device("cpu")\\n',
     '        gpus = None\\n        dev = torch.device("cpu")\\n'
     '        local_rank = args.local_rank\\n'
     '        if args.backend is not None:\\n'
     '            torch.distributed.init_process_group(backend=args.backend)\\n'
     '            _logger.info(f"Using distributed PyTorch with {args.backend} backend on CPU")\\n'),
    ("output_device=local_rank, find_unused_parameters=False",
     "output_device=local_rank if gpus else None, find_unused_parameters=False"),
]
for old, new in fixes:
    if src.count(old) != 1:
        sys.exit("weaver's train.py changed; update the CPU-DDP launcher of tests/test_ddp.py")
    src = src.replace(old, new)
exec(compile(src, wt.__file__, "exec"), wt.__dict__)
sys.argv[0] = "weaver"
sys.exit(wt.main())
'''


@pytest.fixture(scope="module")
def setup(toy_root_files, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    launcher = folder / "weaver_cpu_ddp.py"
    launcher.write_text(LAUNCHER)
    tok, gpt = make_checkpoints(folder, toy_root_files[0])
    return folder, launcher, tok, gpt


def run_ddp(setup, toy_root_files, name, network_config, options):
    """weaver on 2 gloo ranks, one file each; returns (model prefix, [log of rank 0, log of rank 1])."""
    folder, launcher, _, _ = setup
    out = folder / name
    out.mkdir()
    files = [str(f) for f in toy_root_files]  # each rank gets one of the two files
    cmd = [TORCHRUN, "--standalone", "--nnodes=1", "--nproc_per_node=2", str(launcher),
           "--backend", "gloo", "--gpus", "", "--data-train", *files, "--data-val", *files,
           "--data-config", str(DATA_CONFIG), "--network-config", str(network_config), *options,
           "--model-prefix", str(out / "model"), "--log-file", str(out / "train.log"),
           "--num-workers", "0", "--batch-size", "32", "--num-epochs", "1", "--steps-per-epoch", "3",
           "--steps-per-epoch-val", "1", "--in-memory", "--fetch-step", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=out, capture_output=True, text=True, timeout=300, env=env)
    logs = [(out / f"train.log.{r:03d}").read_text() if (out / f"train.log.{r:03d}").exists() else "" for r in (0, 1)]
    if proc.returncode != 0:
        raise AssertionError(f"torchrun weaver failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-6000:]}\n{logs[1][-3000:]}")
    for rank, log in enumerate(logs):
        assert "Using distributed PyTorch with gloo backend" in log
        # each rank reads its own file
        listed = re.findall(r"Restarted DataIter train_rank(\d).*?file_list:[\s{\[]*\"_\": \[\s*\"([^\"]+)\"", log, re.S)
        assert listed and all(int(r) == rank for r, _ in listed), listed
        assert {os.path.basename(f) for _, f in listed} == {os.path.basename(files[rank])}
    assert (out / "model_best_epoch_state.pt").exists()
    # the history: written once (by global rank 0), and weaver's validation metric is the same on both ranks
    history = read_history(out / "model")
    assert len(history_path(out / "model").read_text().splitlines()) == 1 and history[0]["epoch"] == 0
    assert history[0]["best_epoch"] == 0
    for log in logs:
        assert re.findall(r"Current validation metric: (\S+) \(", log) == [fmt5(history[0]["val"]["metric"])]
    return out / "model", logs


@pytest.mark.parametrize("mode", ["finetune", "frozen"])
def test_ddp_trains_the_tagger(setup, toy_root_files, mode):
    _, _, tok, gpt = setup
    prefix, logs = run_ddp(setup, toy_root_files, mode, CLS_CONFIG, mode_options(mode, tok, gpt))
    record = read_history(prefix)[0]
    # validation over both ranks (weaver gathers outputs and labels): accuracy = metric; training: rank 0's batches
    assert record["val"]["accuracy"] == record["val"]["metric"] and set(record["train"]) == {"loss", "accuracy"}
    assert re.findall(r"Train AvgLoss: (\S+), AvgAcc: (\S+)", logs[0]) == [
        (fmt5(record["train"]["loss"]), fmt5(record["train"]["accuracy"]))]
    state = torch.load(f"{prefix}_best_epoch_state.pt", weights_only=True)
    gpt_state = torch.load(gpt, weights_only=True)
    assert_identical(part(state, "tokenizer"), part(gpt_state, "tokenizer"), "tokenizer")
    if mode == "frozen":
        assert_identical(part(state, "backbone"), part(gpt_state, "backbone"), "frozen backbone")
    else:
        assert any(not torch.equal(v, part(gpt_state, "backbone")[k]) for k, v in part(state, "backbone").items())


def test_ddp_trains_the_vqvae(setup, toy_root_files):
    options = ["-o", "codebook_size", "32", "-o", "hidden_dim", "16", "-o", "num_blocks", "1", "-o", "num_heads", "2",
               "--optimizer", "adamw", "--start-lr", "3e-3"]
    prefix, logs = run_ddp(setup, toy_root_files, "vqvae", NETWORK_CONFIGS / "omnijet_vqvae.py", options)
    for log in logs:
        assert "Using custom train/evaluate functions" in log
    record = read_history(prefix)[0]
    assert 0 < record["train"]["code_usage"] <= 1 and record["val"]["metric"] == math.exp(-record["val"]["loss"])
    tok = load_tokenizer(f"{prefix}_best_epoch_state.pt")
    assert bool(tok.quantizer.initialized) and tok.codebook_size == 32
