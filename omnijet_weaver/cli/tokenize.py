"""``omnijet-weaver-tokenize``: jets -> token file, through weaver's own dataset.

    omnijet-weaver-tokenize --data-config data_configs/qg_top.yaml --tokenizer out/vqvae_best_epoch_state.pt \
        --output tokens.parquet jets_*.root

The output is an awkward parquet file, one row per jet: ``tokens`` (list of int, pT-ordered constituents
that pass the 0.8 cut, at most 128), ``label`` (class index of the data config's labels) and the data
config's observers. Under ``torchrun`` each rank takes every WORLD_SIZE-th file and writes
``tokens.part<rank>of<world>.parquet``.
"""

from __future__ import annotations

import argparse
import sys

import awkward as ak
import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="omnijet-weaver-tokenize", description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", help="input ROOT (TTree) or parquet files")
    p.add_argument("--data-config", required=True, help="weaver data config with ParT's kin inputs")
    p.add_argument("--tokenizer", required=True, help="tokenizer checkpoint (e.g. out/vqvae_best_epoch_state.pt)")
    p.add_argument("--output", required=True, help="output token file (.parquet)")
    p.add_argument("--device", default=None, help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def tokenize_files(tokenizer, data_config, files, device="cpu", batch_size=512, progress=True) -> ak.Array:
    """Tokenize ``files`` with weaver's dataset; returns one record per jet (tokens, label, observers)."""
    import torch
    import tqdm

    from ..data import jet_loader

    tokenizer = tokenizer.to(device).eval()
    tokens, labels, observers = [], [], {}
    loader = jet_loader(data_config, files, batch_size=batch_size)
    input_names = loader.dataset.config.input_names
    label_name = loader.dataset.config.label_names[0] if loader.dataset.config.label_names else None
    with torch.no_grad():
        for X, y, Z in tqdm.tqdm(loader, disable=not progress, unit="batch", desc="tokenize"):
            points, _, vectors, mask = (X[k].to(device) for k in input_names[:4])
            ids, keep = tokenizer.encode(points, vectors, mask)
            counts = keep.sum(1).cpu().numpy()
            flat = ids[keep].cpu().numpy()  # row-major: jets in order, constituents pT-ordered
            tokens.append(ak.unflatten(flat.astype(np.int32), counts))
            if label_name is not None:
                labels.append(y[label_name].numpy())
            for k, v in Z.items():
                observers.setdefault(k, []).append(np.asarray(v))
    if not tokens:
        raise ValueError("no jets were read: check the files and the data config's selection")
    columns = {"tokens": ak.concatenate(tokens)}
    if labels:
        columns["label"] = np.concatenate(labels).astype(np.int64)
    columns.update({k: np.concatenate(v) for k, v in observers.items()})
    return ak.zip(columns, depth_limit=1)


def main(argv=None):
    from ..checkpoint import CheckpointError
    from ..io import check_output_path, write_parquet
    from ..tokenizer import load_tokenizer
    from . import default_device, distributed_rank, fail, part_path

    args = parse_args(argv)
    rank, world = distributed_rank()
    try:
        output = check_output_path(part_path(args.output, rank, world), args.overwrite, suffixes=(".parquet",))
        tokenizer = load_tokenizer(args.tokenizer)
        files = args.files[rank::world]
        if not files:
            fail(f"rank {rank} of {world} has no file to tokenize: pass at least {world} files")
        table = tokenize_files(tokenizer, args.data_config, files, device=args.device or default_device(),
                               batch_size=args.batch_size, progress=not args.no_progress)
        write_parquet(output, {k: table[k] for k in table.fields})
    except (CheckpointError, FileNotFoundError, FileExistsError, ValueError, OSError, KeyError) as err:
        fail(str(err))
    print(f"wrote {len(table)} jets, {int(ak.sum(ak.num(table['tokens'])))} tokens to {output}", file=sys.stderr)


if __name__ == "__main__":
    main()
