"""``omnijet-weaver-demo``: the whole of OmniJet-alpha in weaver, end to end, with one command.

    omnijet-weaver-demo --output report/            # ~15 min on 2 CPU cores
    omnijet-weaver-demo --output /tmp/demo --quick  # tiny sizes, ~1 min (numbers not meaningful)

Makes top and QCD jets with Pythia8, tokenizes them with the packaged tokenizer, generates jets with the
packaged generative model and compares them with the real ones, fine-tunes the tagger with the real `weaver`
command on few labels against training from scratch, and writes a report folder: figures (PNG and PDF),
summary.md, summary.json, commands.sh (the weaver command lines) and the weaver logs.
Needs the repository checkout (`pip install -e '.[pythia,plot]'`): weaver runs with its network_configs/ and
data_configs/.
"""

from __future__ import annotations

import argparse
import sys


def parse_args(argv=None):
    from ..studies.demo import MODES, DemoConfig

    d = DemoConfig(output=None)
    p = argparse.ArgumentParser(prog="omnijet-weaver-demo", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--output", required=True,
                   help="report folder; an existing non-empty one is refused unless --overwrite")
    p.add_argument("--overwrite", action="store_true", help="replace an existing demo report in --output")
    p.add_argument("--quick", action="store_true",
                   help="tiny everything (60 jets per process, 20 and 40 labels, 2 epochs, one learning rate); "
                        "explicit options still apply on top")
    p.add_argument("--num-jets", type=int, default=None, help=f"Pythia jets per process, top and QCD (default {d.num_jets})")
    p.add_argument("--labels", type=int, nargs="+", default=None,
                   help=f"numbers of labelled training jets, half top, half QCD (default {' '.join(map(str, d.labels))})")
    p.add_argument("--val-jets", type=int, default=None, help=f"validation jets per process (default {d.val_jets})")
    p.add_argument("--gen-jets", type=int, default=None, help=f"jets to generate (default {d.gen_jets})")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"epochs of every tagger training, one pass over the labelled jets each (default {d.epochs})")
    p.add_argument("--lr", type=float, nargs="+", default=None, dest="lrs",
                   help=f"learning-rate grid, the same for every mode (default {' '.join(f'{x:g}' for x in d.lrs)})")
    p.add_argument("--modes", nargs="+", default=None, choices=list(MODES),
                   help=f"tagger modes (default {' '.join(d.modes)}; frozen = backbone fixed)")
    p.add_argument("--batch-size", type=int, default=None, help=f"training batch size (default {d.batch_size})")
    p.add_argument("--seed", type=int, default=None, help=f"Pythia, sampling and tagger seed (default {d.seed})")
    p.add_argument("--workers", type=int, default=None,
                   help="Pythia worker processes and concurrent weaver runs (default: all cores)")
    p.add_argument("--keep-data", action="store_true",
                   help="keep data/ (jets, tokens, generated jets, checkpoints, predictions) in the report")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def config_from_args(args):
    """The DemoConfig of parsed arguments (``--quick`` presets first, explicit options on top)."""
    from pathlib import Path

    from ..studies.demo import DemoConfig, quick_config

    explicit = {k: getattr(args, k) for k in ("num_jets", "labels", "val_jets", "gen_jets", "epochs", "lrs", "modes",
                                              "batch_size", "seed", "workers") if getattr(args, k) is not None}
    for k in ("labels", "lrs", "modes"):
        if k in explicit:
            explicit[k] = tuple(explicit[k])
    flags = dict(overwrite=args.overwrite, keep_data=args.keep_data, progress=not args.no_progress)
    if args.quick:
        return quick_config(args.output, **explicit, **flags)
    return DemoConfig(output=Path(args.output), **explicit, **flags)


def main(argv=None):
    from ..studies.demo import DemoError, OutputExistsError, run_demo
    from . import fail

    args = parse_args(argv)
    try:
        config = config_from_args(args)
        config.check()
        run_demo(config)
    except DemoError as err:  # a stage failed: its message carries the end of the weaver log, keep the lines
        print(f"omnijet-weaver-demo: error: {err}", file=sys.stderr)
        raise SystemExit(1)
    except (OutputExistsError, FileNotFoundError, ValueError, ImportError) as err:
        fail(str(err))
    except KeyboardInterrupt:
        fail("interrupted; no report written", code=130)


if __name__ == "__main__":
    main()
