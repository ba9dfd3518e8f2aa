"""``omnijet-weaver-convert``: rewrite a ROOT RNTuple or a parquet file as a TTree that weaver reads.

    omnijet-weaver-convert in.root out.root        # uproot's f[name] = {...} writes RNTuples; weaver skips them
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None):
    from ..io.files import convert_to_ttree
    from . import fail

    p = argparse.ArgumentParser(prog="omnijet-weaver-convert", description=__doc__.split("\n\n")[0])
    p.add_argument("input", help="ROOT file (TTree or RNTuple) or parquet file")
    p.add_argument("output", help="output ROOT file (TTree)")
    p.add_argument("--tree", default="tree", help="tree name in the input and the output (default: tree)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = p.parse_args(argv)
    try:
        n = convert_to_ttree(args.input, args.output, tree=args.tree, overwrite=args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError, OSError, KeyError) as err:
        fail(str(err))
    print(f"wrote {n} entries as TTree {args.tree!r} to {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
