"""``omnijet-weaver-configs``: the weaver network and data configs shipped inside the package.

    omnijet-weaver-configs                      # list them, with their full paths
    omnijet-weaver-configs --path omnijet_cls   # print one path
    omnijet-weaver-configs --copy my_configs/   # copies in my_configs/network_configs/, my_configs/data_configs/

    weaver --network-config $(omnijet-weaver-configs --path omnijet_cls) --data-config my.yaml ...

A copy refuses existing files unless ``--overwrite``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import command, command_parser, fail

PROG = "omnijet-weaver-configs"


def parse_args(argv=None):
    p = command_parser(PROG, __doc__)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--path", metavar="NAME", help="print the path of one config (e.g. omnijet_cls, qg_top.yaml)")
    what.add_argument("--copy", metavar="DIR",
                      help="copy all configs to DIR/network_configs/ and DIR/data_configs/ (DIR created if missing)")
    p.add_argument("--overwrite", action="store_true", help="with --copy: replace existing files")
    return p.parse_args(argv)


@command(PROG)
def main(argv=None):
    from ..weaver.configs import KINDS, config_path, copy_configs, list_configs

    args = parse_args(argv)
    if args.overwrite and not args.copy:
        fail(PROG, "--overwrite only goes with --copy DIR")
    if args.path:
        print(config_path(args.path))
    elif args.copy:
        written = copy_configs(args.copy, overwrite=args.overwrite)
        for path in written:
            print(path)
        dest = Path(args.copy)
        print(f"copied {len(written)} configs; e.g. weaver --data-config {dest / 'data_configs' / 'qg_top.yaml'} "
              f"--network-config {dest / 'network_configs' / 'omnijet_cls.py'} ...", file=sys.stderr)
    else:
        for kind, (*_, option) in KINDS.items():
            print(f"{kind} configs (weaver {option}):")
            for name, path in list_configs(kind).items():
                print(f"  {name:<14} {path}")


if __name__ == "__main__":
    main()
