"""``omnijet-weaver-tokenize``: jets -> token file, through weaver's own dataset.

    omnijet-weaver-tokenize jets_*.root --data-config qg_top --output tokens.parquet    # the packaged tokenizer
    omnijet-weaver-tokenize jets_*.root --data-config data_configs/qg_top.yaml \\
        --tokenizer out/vqvae_best_epoch_state.pt --output tokens.parquet

The output is an awkward parquet file, one row per jet: ``tokens`` (list of int, pT-ordered constituents
that pass the 0.8 cut, at most 128), ``label`` (class index of the data config's labels) and the data
config's observers. Under ``torchrun`` each rank takes every WORLD_SIZE-th file and writes
``tokens.part<rank>of<world>.parquet``.
"""

from __future__ import annotations

import sys

from . import command, command_parser, rank_output
from . import options as opt

PROG = "omnijet-weaver-tokenize"


def parse_args(argv=None):
    p = command_parser(PROG, __doc__)
    opt.add_files_argument(p, "jets to tokenize")
    opt.add_data_config_option(p, required=True)
    opt.add_tokenizer_option(p)
    opt.add_output_options(p, suffixes=(".parquet",))
    opt.add_batch_size_option(p, 512, "tokenized together")
    p.add_argument("--num-workers", type=opt.nonnegative_int, default=0, metavar="N",
                   help="DataLoader processes reading the files while this one encodes, each a contiguous block "
                        "of files (the output keeps the file order whatever N; default 0: read in this process)")
    opt.add_progress_option(p)
    opt.add_device_option(p)
    return p.parse_args(argv)


@command(PROG)
def main(argv=None):
    args = parse_args(argv)

    import awkward as ak

    from ..errors import ConfigError
    from ..io.files import write_parquet
    from ..models.packaged import packaged_path
    from ..models.tokenizer import load_tokenizer
    from ..weaver.dataset import check_jet_files, tokenize_files

    rank, world, output = rank_output(args.output, args.overwrite, suffixes=(".parquet",))
    files = args.files[rank::world]
    if not files:
        raise ConfigError(f"rank {rank} of {world} has no file to tokenize: pass at least {world} files")
    files = check_jet_files(files, args.data_config, "the tokenizer")[0]  # before any work
    tokenizer = load_tokenizer(args.tokenizer or packaged_path("tokenizer"))
    table = tokenize_files(tokenizer, args.data_config, files, device=args.device, batch_size=args.batch_size,
                           progress=args.progress, num_workers=args.num_workers)
    write_parquet(output, {k: table[k] for k in table.fields}, overwrite=args.overwrite)
    print(f"wrote {len(table)} jets, {int(ak.sum(ak.num(table['tokens'])))} tokens to {output}", file=sys.stderr)


if __name__ == "__main__":
    main()
