"""``omnijet-weaver-transfer``: the transfer-learning study (paper Fig. 7) through weaver, with one command.

    omnijet-weaver-transfer --train top_train.root qcd_train.root --test top_test.root qcd_test.root \\
        --labels 100 1000 --seeds 0 1 2 --output transfer/

Test accuracy and ROC AUC of the tagger against the number of labelled training jets, fine-tuned from the
generative model vs trained from scratch vs backbone fixed, over several seeds. Per seed, the labelled jets
(balanced over the data config's classes, nested) and the validation jets are drawn from the --train pool;
every (mode, labels, seed) trains with the real `weaver` command (early stopping on the validation loss) and
`weaver --predict` tags the --test jets with the best epoch. Writes results.json, summary.md (mean ± std over
seeds, fine-tuned − from scratch), accuracy.png/.pdf, auc.png/.pdf, commands.sh and the weaver logs.
Needs the repository checkout (`pip install -e '.[plot]'`): weaver runs with its network_configs/omnijet_cls.py.
"""

from __future__ import annotations

import argparse
import sys


def parse_lrs(values, modes) -> dict:
    """``--lr`` values: one number for every mode, and/or ``mode=number`` for one mode."""
    from ..studies.transfer import DEFAULT_LRS
    from ..weaver.runner import MODES

    lrs = dict(DEFAULT_LRS)
    if not values:
        return lrs
    for v in values:
        mode, eq, number = v.rpartition("=")
        try:
            lr = float(number)
        except ValueError:
            raise ValueError(f"--lr {v!r}: give a number (every mode) or mode=number, e.g. finetune=1e-4") from None
        if eq and mode not in MODES:
            raise ValueError(f"--lr {v!r}: unknown mode {mode!r}; choose from {', '.join(MODES)}")
        for m in ([mode] if eq else list(MODES)):
            lrs[m] = lr
    return lrs


def parse_args(argv=None):
    from ..studies.transfer import DEFAULT_LRS, TransferConfig
    from ..weaver.runner import MODES

    d = TransferConfig(train=(), test=(), output=None)
    p = argparse.ArgumentParser(prog="omnijet-weaver-transfer", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--train", nargs="+", required=True, metavar="FILE",
                   help="labelled pool: JetClass-layout ROOT files (e.g. top and QCD); labelled and validation jets "
                        "are drawn from it")
    p.add_argument("--test", nargs="+", required=True, metavar="FILE", help="test files (weaver --predict reads them)")
    p.add_argument("--output", required=True,
                   help="study folder; an existing non-empty one is refused unless --overwrite")
    p.add_argument("--overwrite", action="store_true", help="replace an existing study in --output")
    p.add_argument("--data-config", default=None,
                   help="weaver data config with simple labels (default: the repository's data_configs/qg_top.yaml)")
    p.add_argument("--labels", type=int, nargs="+", default=list(d.labels),
                   help=f"numbers of labelled training jets, total, balanced over the classes (default "
                        f"{' '.join(map(str, d.labels))})")
    p.add_argument("--modes", nargs="+", default=list(d.modes), choices=list(MODES),
                   help="tagger modes (default: all three; frozen = backbone fixed)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(d.seeds),
                   help=f"seeds: one draw of labelled / validation jets and one weaver -o seed each (default "
                        f"{' '.join(map(str, d.seeds))})")
    p.add_argument("--val-jets", type=int, default=d.val_jets,
                   help=f"validation jets per class, per seed, disjoint from the labelled jets (default {d.val_jets})")
    p.add_argument("--epochs", type=int, default=d.epochs,
                   help=f"maximum epochs, one pass over the labelled jets each (default {d.epochs})")
    p.add_argument("--patience", type=int, default=d.patience,
                   help=f"early stopping: epochs without a lower validation loss before training stops; 0 = off, "
                        f"all epochs and best epoch by validation accuracy (default {d.patience})")
    p.add_argument("--lr", nargs="+", default=None, metavar="LR",
                   help="learning rate (AdamW): one number for every mode and/or mode=number (default "
                        + " ".join(f"{m}={v:g}" for m, v in DEFAULT_LRS.items()) + ")")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"training batch size, at most the number of labels (default {d.batch_size})")
    p.add_argument("--pretrained", default=None,
                   help="generative checkpoint to fine-tune (default: the packaged one); the from-scratch tagger "
                        "takes its tokenizer and sizes")
    p.add_argument("--workers", type=int, default=None, help="concurrent weaver runs (default: all cores)")
    p.add_argument("--max-test-jets", type=int, default=None,
                   help="tag a random subset of this many test jets (default: all)")
    p.add_argument("--keep-data", action="store_true",
                   help="keep data/ (labelled and validation jets, checkpoints, predictions) in the output")
    return p.parse_args(argv)


def config_from_args(args):
    from pathlib import Path

    from ..studies.transfer import TransferConfig

    return TransferConfig(train=tuple(args.train), test=tuple(args.test), output=Path(args.output),
                          data_config=args.data_config, labels=tuple(args.labels), modes=tuple(args.modes),
                          seeds=tuple(args.seeds), val_jets=args.val_jets, epochs=args.epochs,
                          patience=args.patience, lrs=parse_lrs(args.lr, args.modes), batch_size=args.batch_size,
                          pretrained=args.pretrained, workers=args.workers, max_test_jets=args.max_test_jets,
                          keep_data=args.keep_data, overwrite=args.overwrite)


def main(argv=None):
    from ..studies.transfer import run_transfer
    from ..weaver.runner import OutputExistsError, WeaverRunError
    from . import fail

    args = parse_args(argv)
    try:
        config = config_from_args(args)
        config.check()
        run_transfer(config)
    except WeaverRunError as err:  # a weaver run failed: its message carries the end of the log, keep the lines
        print(f"omnijet-weaver-transfer: error: {err}", file=sys.stderr)
        raise SystemExit(1)
    except (OutputExistsError, FileNotFoundError, ValueError, ImportError, KeyError) as err:
        fail(str(err))
    except KeyboardInterrupt:
        fail("interrupted; no results written", code=130)


if __name__ == "__main__":
    main()
