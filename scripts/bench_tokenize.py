#!/usr/bin/env python
"""Benchmark tokenizing files with the packaged tokenizer: jets/s with 0, 1, 2 ... DataLoader workers.

Reads ``--num-jets`` jets of ``../shared/data/pythia/pythia_top_20k.root`` (or ``--input``), writes them as
``--files`` ROOT files in a temporary folder and tokenizes them with
:func:`omnijet_weaver.weaver.dataset.tokenize_files` (weaver's dataset, the ``qg_top`` data config) for each
``--workers`` value, in one run; prints jets/s, the ratio to the first value, and checks the tables are equal.

    python scripts/bench_tokenize.py --threads 2 --num-jets 4000 --workers 0 1 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import awkward as ak
import torch
import uproot

from omnijet_weaver.io.files import write_root
from omnijet_weaver.models.packaged import packaged_path
from omnijet_weaver.models.tokenizer import load_tokenizer
from omnijet_weaver.weaver.configs import data_config
from omnijet_weaver.weaver.dataset import tokenize_files

DEFAULT_INPUT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pythia" / "pythia_top_20k.root"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", default=str(DEFAULT_INPUT), help="a JetClass-layout ROOT file")
    ap.add_argument("--num-jets", type=int, default=4000)
    ap.add_argument("--files", type=int, default=4, help="files the jets are split into")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--device", default="cpu", help="torch device of the tokenizer (default cpu)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with uproot.open(args.input) as f:
        tree = f[[k for k, v in f.classnames().items() if v == "TTree"][0]]
        jets = tree.arrays(entry_stop=args.num_jets)
    tokenizer = load_tokenizer(packaged_path("tokenizer"))
    config = str(data_config("qg_top"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(jets)} jets in {args.files} files, "
          f"batch {args.batch_size}, load average {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        per = -(-len(jets) // args.files)
        for i in range(args.files):
            paths.append(os.path.join(tmp, f"jets{i}.root"))
            write_root(paths[-1], {k: jets[k][i * per:(i + 1) * per] for k in jets.fields})
        # warm-up
        tokenize_files(tokenizer, config, paths[:1], batch_size=args.batch_size, progress=False, device=args.device)
        first, reference = None, None
        for workers in args.workers:
            t0 = time.perf_counter()
            table = tokenize_files(tokenizer, config, paths, batch_size=args.batch_size, progress=False,
                                   num_workers=workers, device=args.device)
            rate = len(table) / (time.perf_counter() - t0)
            first = first or rate
            same = "" if reference is None else (
                f"; same table as {args.workers[0]} workers: {ak.to_list(table.tokens) == ak.to_list(reference.tokens)}")
            reference = table if reference is None else reference
            print(f"  workers {workers}: {rate:8.1f} jets/s ({rate / first:.2f}x){same};  load average "
                  f"{os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
