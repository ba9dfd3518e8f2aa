"""``omnijet-weaver-convert``: rewrite a ROOT RNTuple or a parquet file as a TTree that weaver reads.

    omnijet-weaver-convert in.root --output out.root     # uproot's f[name] = {...} writes RNTuples; weaver skips them
"""

from __future__ import annotations

import sys

from . import command, command_parser
from . import options as opt

PROG = "omnijet-weaver-convert"


def parse_args(argv=None):
    p = command_parser(PROG, __doc__)
    p.add_argument("input", type=opt.existing_file, help="ROOT file (TTree or RNTuple) or parquet file")
    opt.add_output_options(p, suffixes=(".root",))
    p.add_argument("--tree", default="tree", help="tree name in the input and the output (default: tree)")
    return p.parse_args(argv)


@command(PROG)
def main(argv=None):
    args = parse_args(argv)

    from ..io.files import convert_to_ttree

    n = convert_to_ttree(args.input, args.output, tree=args.tree, overwrite=args.overwrite)
    print(f"wrote {n} entries as TTree {args.tree!r} to {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
