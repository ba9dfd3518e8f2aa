"""``omnijet-weaver-transfer``: the transfer-learning study (paper Fig. 7) through weaver, with one command.

    omnijet-weaver-transfer --train top_train.root qcd_train.root --test top_test.root qcd_test.root \\
        --labels 100 1000 --seeds 0 1 2 --output transfer/

Test accuracy and ROC AUC of the tagger against the number of labelled training jets, fine-tuned from the
generative model vs trained from scratch vs backbone fixed, over several seeds. Per seed, the labelled jets
(balanced over the data config's classes, nested) and the validation jets are drawn from the --train pool;
every (mode, labels, seed) trains with the real `weaver` command (early stopping on the validation loss) and
`weaver --predict` tags the --test jets with the best epoch. Writes results.json, summary.md (mean ± std over
seeds, fine-tuned − from scratch), accuracy.png/.pdf, auc.png/.pdf, commands.sh and the weaver logs.
Needs the plotting extra (`pip install 'omnijet-weaver[plot]'`).
"""

from __future__ import annotations

import argparse

from . import command, config_from_args
from . import options as opt

PROG = "omnijet-weaver-transfer"


def learning_rate(text: str) -> tuple:
    """One ``--lr`` value: ``NUMBER`` (every mode) or ``MODE=NUMBER`` -> (mode or None, rate)."""
    from ..weaver.runner import MODES

    mode, eq, number = text.rpartition("=")
    if eq and mode not in MODES:
        raise argparse.ArgumentTypeError(f"{text!r}: unknown mode {mode!r}; choose from {', '.join(MODES)}")
    try:
        lr = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number (every mode) or mode=number, e.g. "
                                         f"finetune=1e-4") from None
    if not 0 < lr < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: learning rates must be positive")
    return (mode if eq else None, lr)


def learning_rates(values) -> dict:
    """Learning rate per mode: the defaults, then the ``--lr`` values in the order given."""
    from ..studies.transfer import DEFAULT_LRS

    lrs = dict(DEFAULT_LRS)
    for mode, lr in values or ():
        lrs.update({m: lr for m in ([mode] if mode else list(lrs))})
    return lrs


def parse_args(argv=None):
    from ..studies.transfer import DEFAULT_LRS, TransferConfig

    p, d = opt.study_parser(PROG, __doc__, TransferConfig)
    p.add_argument("--train", nargs="+", required=True, type=opt.existing_file, metavar="FILE",
                   help="labelled pool: JetClass-layout ROOT files (e.g. top and QCD); labelled and validation jets "
                        "are drawn from it")
    p.add_argument("--test", nargs="+", required=True, type=opt.existing_file, metavar="FILE",
                   help="test files (weaver --predict reads them)")
    opt.add_data_config_option(p)
    opt.add_tagger_options(p, d)
    opt.add_seeds_option(p, d["seeds"], "one draw of labelled / validation jets and one weaver -o seed each")
    p.add_argument("--val-jets", type=opt.positive_int, default=d["val_jets"], metavar="N",
                   help=f"validation jets per class, per seed, disjoint from the labelled jets "
                        f"(default {d['val_jets']})")
    opt.add_epochs_option(p, d["epochs"], "at most, one pass over the labelled jets each")
    opt.add_patience_option(p, d["patience"], off=True)
    p.add_argument("--lr", type=learning_rate, nargs="+", default=None, metavar="LR",
                   help="learning rate (AdamW), space-separated: a number for every mode and/or mode=number (default "
                        + " ".join(f"{m}={v:g}" for m, v in DEFAULT_LRS.items()) + ")")
    opt.add_batch_size_option(p, d["batch_size"], "training, at most the number of labels")
    opt.add_checkpoint_option(p, dest="pretrained", more="fine-tuned, and the from-scratch tagger takes its tokenizer "
                                                     "and sizes")
    opt.add_workers_option(p, "concurrent weaver runs")
    p.add_argument("--max-test-jets", type=opt.positive_int, default=None, metavar="N",
                   help="tag a random subset of this many test jets (default: all)")
    p.add_argument("--keep-data", action="store_true",
                   help="keep data/ (labelled and validation jets, checkpoints, predictions) in the output")
    return p.parse_args(argv)


@command(PROG)
def main(argv=None):
    args = parse_args(argv)

    from ..studies.transfer import TransferConfig, run_transfer

    config = config_from_args(TransferConfig, args, lrs=learning_rates(args.lr))
    config.check()
    run_transfer(config)


if __name__ == "__main__":
    main()
