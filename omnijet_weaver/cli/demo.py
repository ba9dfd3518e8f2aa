"""``omnijet-weaver-demo``: the whole of OmniJet-alpha in weaver, end to end, with one command.

    omnijet-weaver-demo --output report/            # ~15 min on 2 CPU cores
    omnijet-weaver-demo --output /tmp/demo --quick  # tiny sizes, ~1 min (numbers not meaningful)

Makes top and QCD jets with Pythia8, tokenizes them with the packaged tokenizer, generates jets with the
packaged generative model and compares them with the real ones, fine-tunes the tagger with the real `weaver`
command on few labels against training from scratch, and writes a report folder: figures (PNG and PDF),
summary.md, summary.json, commands.sh (the weaver command lines) and the weaver logs.
Needs the Pythia and plotting extras (`pip install 'omnijet-weaver[pythia,plot]'`).
"""

from __future__ import annotations

from . import command, config_from_args
from . import options as opt

PROG = "omnijet-weaver-demo"


def parse_args(argv=None):
    """The parsed options; with ``--quick`` the defaults are those of :func:`~omnijet_weaver.studies.demo.quick_config`
    (explicit options still apply on top)."""
    from ..studies.demo import DemoConfig, quick_config

    p, d = opt.study_parser(PROG, __doc__, DemoConfig)
    p.add_argument("--quick", action="store_true",
                   help="tiny everything (60 jets per process, 20 and 40 labels, 2 epochs, one learning rate); "
                        "explicit options still apply on top")
    opt.add_num_jets_option(p, d["num_jets"], "Pythia jets per process, top and QCD")
    opt.add_tagger_options(p, d)
    p.add_argument("--val-jets", type=opt.positive_int, default=d["val_jets"], metavar="N",
                   help=f"validation jets per process (default {d['val_jets']})")
    p.add_argument("--gen-jets", type=opt.positive_int, default=d["gen_jets"], metavar="N",
                   help=f"jets to generate (default {d['gen_jets']})")
    opt.add_epochs_option(p, d["epochs"], "of every tagger, one pass over the labelled jets each")
    p.add_argument("--lr", type=opt.positive_float, nargs="+", default=list(d["lrs"]), dest="lrs", metavar="LR",
                   help=f"learning-rate grid (AdamW), the same for every mode, space-separated (default "
                        f"{opt.spaced(d['lrs'])})")
    opt.add_batch_size_option(p, d["batch_size"], "training")
    opt.add_seed_option(p, d["seed"], "Pythia, sampling and every tagger training (weaver -o seed)")
    opt.add_workers_option(p, "Pythia processes and concurrent weaver runs")
    p.add_argument("--keep-data", action="store_true",
                   help="keep data/ (jets, tokens, generated jets, checkpoints, predictions) in the report")
    opt.add_progress_option(p)
    args = p.parse_args(argv)
    if args.quick:  # parse again with the quick presets as the defaults
        quick = quick_config(args.output)
        p.set_defaults(**{k: getattr(quick, k) for k in d if k in vars(args)})
        args = p.parse_args(argv)
    return args


@command(PROG)
def main(argv=None):
    from ..studies.demo import DemoConfig, run_demo

    config = config_from_args(DemoConfig, parse_args(argv))
    config.check()
    run_demo(config)


if __name__ == "__main__":
    main()
