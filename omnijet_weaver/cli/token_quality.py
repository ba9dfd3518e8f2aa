"""``omnijet-weaver-token-quality``: compare tokenizers on the same jets in one report (paper Figs. 3-5).

    omnijet-weaver-token-quality --output tq/ top_test.root qcd_test.root          # packaged vs binned 21^3
    omnijet-weaver-token-quality --output tq/ --tokenizer cond2048=packaged --tokenizer binned:21 \
        --tokenizer uncond512=out/vqvae_uncond_best_epoch_state.pt --max-jets 20000 top.root qcd.root

A tokenizer is ``[NAME=]WHAT``: ``packaged``, ``binned:N`` (N^3 grid) or a checkpoint (a tokenizer, or a
generative model whose tokenizer is used). Writes summary.md (codebook usage, Gaussian-fit resolutions of
mass, pT, tau21, tau32 per class, the information-loss classifier accuracies), summary.json and PNG + PDF
figures (distributions with ratio panels, differences per class, the token-spread picture).
"""

from __future__ import annotations

import argparse


def _names(text: str) -> list:
    return [] if text.strip().lower() in ("", "none") else [x.strip() for x in text.split(",") if x.strip()]


def _seeds(text: str) -> list:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated integers, e.g. 0,1,2, got {text!r}") from None


def parse_args(argv=None):
    from ..studies.token_quality import TokenQualityConfig

    d = TokenQualityConfig(files=[], output=None)
    p = argparse.ArgumentParser(prog="omnijet-weaver-token-quality", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("files", nargs="+", help="jet files (ROOT TTrees or parquet) the data config reads")
    p.add_argument("--output", required=True, help="report folder; an existing report is replaced only with --overwrite")
    p.add_argument("--tokenizer", action="append", default=None, dest="tokenizers",
                   help="[NAME=]packaged | binned:N | CHECKPOINT; repeat for several (default: packaged and binned:21)")
    p.add_argument("--data-config", default=None, help="weaver data config (default: the repository's qg_top.yaml)")
    p.add_argument("--max-jets", type=int, default=d.max_jets, help=f"jets to read (default {d.max_jets})")
    p.add_argument("--classifiers", type=_names, default=list(d.classifiers),
                   help="information-loss classifiers, comma-separated: deepsets,transformer (default), part (weaver's "
                        "ParT with pair features, slow on a CPU); none: skip")
    p.add_argument("--seeds", type=_seeds, default=list(d.seeds),
                   help="classifier seeds, comma-separated, e.g. 0,1,2 (split and initialisation; mean and std "
                        "over them; default 0)")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"maximum classifier epochs (default {d.epochs})")
    p.add_argument("--patience", type=int, default=d.patience,
                   help=f"early stopping on the validation loss (default {d.patience} epochs)")
    p.add_argument("--spread-tokens", type=int, default=d.spread_tokens,
                   help=f"tokens in the token-spread picture (default {d.spread_tokens}; 0: no picture)")
    p.add_argument("--spread-repeats", type=int, default=d.spread_repeats,
                   help=f"decodings per token in the picture (default {d.spread_repeats})")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing token-quality report")
    return p.parse_args(argv)


def main(argv=None):
    from ..models.checkpoint import CheckpointError
    from ..studies.token_quality import TokenQualityConfig, run_token_quality
    from ..weaver.dataset import InputFileError
    from . import default_device, fail

    args = parse_args(argv)
    config = TokenQualityConfig(
        files=args.files, output=args.output, tokenizers=args.tokenizers or ["packaged", "binned:21"],
        data_config=args.data_config, max_jets=args.max_jets, classifiers=tuple(args.classifiers),
        seeds=tuple(args.seeds), epochs=args.epochs, patience=args.patience, spread_tokens=args.spread_tokens,
        spread_repeats=args.spread_repeats, device=args.device or default_device(), overwrite=args.overwrite)
    try:
        run_token_quality(config)
    except (CheckpointError, InputFileError, FileNotFoundError, FileExistsError, ValueError, ImportError) as err:
        fail(str(err))


if __name__ == "__main__":
    main()
