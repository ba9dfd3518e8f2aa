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


def main(argv=None):
    from ..io.files import check_output_path, write_parquet
    from ..models.checkpoint import CheckpointError
    from ..models.tokenizer import load_tokenizer
    from ..weaver.dataset import tokenize_files
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
