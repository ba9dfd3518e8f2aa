#!/usr/bin/env python
"""CPU/GPU throughput of the OmniJet-alpha tagger (omnijet_cls) against ParT, on the same batches.

    OMP_NUM_THREADS=2 python scripts/bench_tagger.py --batch-size 128 --steps 20 --threads 2

Both models get exactly ParT's kin inputs, batch by batch, as weaver feeds them: the batches are read once with
weaver's own dataset (``omnijet_weaver.weaver.dataset.jet_loader``, ``data_configs/qg_top.yaml``) from the Pythia files
``../shared/data/pythia/*.root`` (top and QCD batches alternate), or made from synthetic toy jets when those
files are absent. Models:

- ParT: ``weaver.nn.model.ParticleTransformer.ParticleTransformer`` with the sizes of particle_transformer's
  ``networks/example_ParticleTransformer.py`` (embed_dims [128, 512, 128], pair_embed_dims [64, 64, 64],
  8 heads, 8 layers, 2 class-attention layers, fc_params [], input_dim 7, 2 classes), called as its weaver
  wrapper does: ``mod(features, v=vectors, mask=mask)``.
- omnijet_cls: paper-size backbone (embedding 256, 3 blocks, 8 heads, feed-forward 1024) around a conditional
  VQ-VAE tokenizer (paper: hidden 128, 4 NormFormer blocks, 8 heads, 8192 codes; ``--tokenizer-*`` options for
  a smaller one), fine-tuning mode (backbone and head train, tokenizer frozen), or ``--freeze-backbone``.

Training = forward + cross-entropy + backward + AdamW step (``model.train()``); inference = forward under
``torch.no_grad()`` with softmax outputs (``model.eval()``). The first ``--warmup`` steps of each are not timed.
Prints jets/s for both models and the ratio omnijet_cls / ParT.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_FILES = os.path.join(ROOT, "..", "shared", "data", "pythia", "*.root")
INPUTS = ("pf_points", "pf_features", "pf_vectors", "pf_mask")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=128, help="jets per batch (default: 128)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per measurement (default: 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before each measurement (default: 3)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--files", default=DEFAULT_FILES, help="glob of JetClass-layout ROOT files (default: Pythia)")
    p.add_argument("--data-config", default=os.path.join(ROOT, "data_configs", "qg_top.yaml"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--codebook-size", type=int, default=8192, help="tokenizer codes (paper: 8192)")
    p.add_argument("--tokenizer-hidden", type=int, default=128, help="tokenizer width (paper: 128)")
    p.add_argument("--tokenizer-blocks", type=int, default=4, help="tokenizer NormFormer blocks (paper: 4)")
    p.add_argument("--freeze-backbone", action="store_true", help="omnijet_cls with the backbone fixed")
    p.add_argument("--models", default="part,omnijet", help="comma-separated subset of part,omnijet")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


# --- data ------------------------------------------------------------------------------------------------------


def load_batches(args, n_batches: int):
    """``n_batches`` weaver batches (X dicts, labels) from the files, or from toy jets when there are none."""
    import torch

    from omnijet_weaver.weaver.dataset import jet_loader

    files = sorted(glob.glob(args.files))
    source = ", ".join(os.path.basename(f) for f in files)
    if not files:
        import tempfile

        sys.path.insert(0, os.path.join(ROOT, "tests"))
        from conftest import toy_jets

        from omnijet_weaver.io.files import write_root

        folder = tempfile.mkdtemp()
        files = [os.path.join(folder, "toy.root")]
        write_root(files[0], toy_jets(n_batches * args.batch_size, seed=args.seed, max_particles=128))
        source = "synthetic toy jets (tests/conftest.py toy_jets)"
    per_file = -(-n_batches // len(files))
    streams = []
    for f in files:
        batches = []
        for X, y, _ in jet_loader(args.data_config, [f], batch_size=args.batch_size):
            if len(y["_label_"]) < args.batch_size or len(batches) == per_file:
                break
            batches.append(({k: X[k] for k in INPUTS}, y["_label_"].long()))
        streams.append(batches)
    batches = [b for group in zip(*streams) for b in group][:n_batches]  # alternate the files (top, QCD, ...)
    if len(batches) < n_batches:
        raise SystemExit(f"only {len(batches)} full batches of {args.batch_size} jets in {source}")
    mult = torch.cat([X["pf_mask"][:, 0].sum(1) for X, _ in batches])
    return batches, source, float(mult.mean()), float(mult.max())


# --- models ------------------------------------------------------------------------------------------------


class ParTWrapper:
    """particle_transformer's ParticleTransformerWrapper: forward(points, features, vectors, mask)."""

    @staticmethod
    def build(for_inference=False):
        import torch
        from weaver.nn.model.ParticleTransformer import ParticleTransformer

        class Wrapper(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.mod = ParticleTransformer(
                    input_dim=7, num_classes=2, pair_input_dim=4, use_pre_activation_pair=False,
                    embed_dims=[128, 512, 128], pair_embed_dims=[64, 64, 64], num_heads=8, num_layers=8,
                    num_cls_layers=2, block_params=None,
                    cls_block_params={"dropout": 0, "attn_dropout": 0, "activation_dropout": 0},
                    fc_params=[], activation="gelu", trim=True, for_inference=for_inference,
                )

            def forward(self, points, features, vectors, mask):
                return self.mod(features, v=vectors, mask=mask)

        return Wrapper()


def build_omnijet(args, for_inference=False):
    from omnijet_weaver.models.checkpoint import description
    from omnijet_weaver.models.tagger import OmniJetTagger
    from omnijet_weaver.models.tokenizer import VQVAE

    tok = VQVAE(codebook_size=args.codebook_size, conditional=True, hidden_dim=args.tokenizer_hidden,
                num_blocks=args.tokenizer_blocks, num_heads=8)
    model = OmniJetTagger(description(tok), num_classes=2, embed_dim=256, num_blocks=3, num_heads=8, ff_dim=1024,
                          freeze_backbone=args.freeze_backbone, for_inference=for_inference)
    model.tokenizer.load_state_dict(tok.state_dict())
    return model


def build(name, args, for_inference=False):
    import logging

    logging.getLogger("weaver").setLevel(logging.WARNING)  # ParT logs its whole config
    return ParTWrapper.build(for_inference) if name == "part" else build_omnijet(args, for_inference)


# --- timing ------------------------------------------------------------------------------------------------


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training(model, batches, args, device) -> float:
    """jets/s of forward + loss + backward + optimizer step over the timed batches."""
    import torch

    model.to(device).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    start, jets = None, 0
    for i, (X, y) in enumerate(batches):
        if i == args.warmup:
            _sync(device)
            start = time.perf_counter()
        inputs = [X[k].to(device) for k in INPUTS]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(*inputs), y.to(device))
        loss.backward()
        opt.step()
        if i >= args.warmup:
            jets += len(y)
    _sync(device)
    return jets / (time.perf_counter() - start)


def time_inference(model, batches, args, device) -> float:
    import torch

    model.to(device).eval()
    start, jets = None, 0
    with torch.no_grad():
        for i, (X, y) in enumerate(batches):
            if i == args.warmup:
                _sync(device)
                start = time.perf_counter()
            model(*[X[k].to(device) for k in INPUTS])
            if i >= args.warmup:
                jets += len(y)
    _sync(device)
    return jets / (time.perf_counter() - start)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    n_batches = args.warmup + args.steps
    t0 = time.perf_counter()
    batches, source, mean_mult, max_mult = load_batches(args, n_batches)
    print(f"data: {source}; {n_batches} batches of {args.batch_size} jets, {mean_mult:.1f} particles per jet on "
          f"average (max {max_mult:.0f}); loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, "
          f"load average {load:.2f} on {os.cpu_count()} CPUs; {args.warmup} warm-up + {args.steps} timed steps",
          flush=True)
    if "omnijet" in names:
        print(f"omnijet_cls: backbone 256 x 3 blocks, 8 heads, ff 1024; conditional VQ-VAE tokenizer hidden "
              f"{args.tokenizer_hidden}, {args.tokenizer_blocks} blocks, {args.codebook_size} codes"
              f"{'; backbone frozen' if args.freeze_backbone else ''}", flush=True)

    results = {}
    for name in names:
        torch.manual_seed(args.seed)
        model = build(name, args)
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        n_all = sum(p.numel() for p in model.parameters())
        train = time_training(model, batches, args, device)
        infer_model = build(name, args, for_inference=True)
        infer_model.load_state_dict(model.state_dict())
        infer = time_inference(infer_model, batches, args, device)
        results[name] = (train, infer)
        label = "ParT" if name == "part" else "omnijet_cls"
        print(f"{label:12s} params {n_all / 1e6:6.2f} M ({n_train / 1e6:.2f} M trained)  "
              f"training {train:8.1f} jets/s  inference {infer:8.1f} jets/s", flush=True)
    if {"part", "omnijet"} <= results.keys():
        (pt, pi), (ot, oi) = results["part"], results["omnijet"]
        print(f"ratio omnijet_cls / ParT: training {ot / pt:.2f}x, inference {oi / pi:.2f}x")
    return results


if __name__ == "__main__":
    main()
