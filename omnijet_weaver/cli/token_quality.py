"""``omnijet-weaver-token-quality``: compare tokenizers on the same jets in one report (paper Figs. 3-5).

    omnijet-weaver-token-quality top_test.root qcd_test.root --output tq/          # packaged vs binned 21^3
    omnijet-weaver-token-quality top.root qcd.root --output tq/ --max-jets 20000 --seeds 0 1 2 \\
        --tokenizer cond2048=packaged binned:21 uncond512=out/vqvae_uncond_best_epoch_state.pt

A tokenizer is ``[NAME=]WHAT``: ``packaged``, ``binned:N`` (N^3 grid) or a checkpoint (a tokenizer, or a
generative model whose tokenizer is used). Writes summary.md (codebook usage, Gaussian-fit resolutions of
mass, pT, tau21, tau32 per class, the information-loss classifier accuracies), summary.json and PNG + PDF
figures (distributions with ratio panels, differences per class, the token-spread picture; --figures: other
formats, or none). List options
take every value up to the next option: give the jet files first (or end a list with --).
"""

from __future__ import annotations

from . import command, config_from_args
from . import options as opt

PROG = "omnijet-weaver-token-quality"


def parse_args(argv=None):
    from ..evaluation.classifiers import MODELS
    from ..studies.token_quality import TokenQualityConfig

    p, d = opt.study_parser(PROG, __doc__, TokenQualityConfig, files="jets to tokenize")
    p.add_argument("--tokenizer", action="extend", nargs="+", default=None, dest="tokenizers", metavar="SPEC",
                   help=f"tokenizers to compare, space-separated (or the option repeated): [NAME=]packaged | binned:N "
                        f"| CHECKPOINT (default {opt.spaced(d['tokenizers'])})")
    opt.add_data_config_option(p)
    p.add_argument("--max-jets", type=opt.positive_int, default=d["max_jets"], metavar="N",
                   help=f"jets to read (default {d['max_jets']}): {opt.SAMPLING_RULE}")
    p.add_argument("--classifiers", nargs="+", default=list(d["classifiers"]), choices=[*MODELS, "none"],
                   metavar="NAME",
                   help=f"information-loss classifiers, space-separated: {', '.join(MODELS)} (part: weaver's ParT "
                        f"with pair features, slow on a CPU), or none to skip (default {opt.spaced(d['classifiers'])})")
    opt.add_seed_option(p, d["seed"], "the mix of the jets read (--max-jets) and the tokens of the token-spread picture")
    opt.add_seeds_option(p, d["seeds"], "of the classifiers' split and initialisation, mean and std over them")
    opt.add_epochs_option(p, d["epochs"], "of each classifier, at most")
    opt.add_patience_option(p, d["patience"])
    p.add_argument("--spread-tokens", type=opt.nonnegative_int, default=d["spread_tokens"], metavar="N",
                   help=f"tokens in the token-spread picture (default {d['spread_tokens']}; 0: no picture)")
    p.add_argument("--spread-repeats", type=opt.positive_int, default=d["spread_repeats"], metavar="N",
                   help=f"decodings per token in the picture (default {d['spread_repeats']})")
    opt.add_figures_option(p, d["figures"])
    opt.add_batch_size_option(p, d["batch_size"], "read, tokenized and reconstructed together")
    opt.add_device_option(p)
    args = p.parse_args(argv)
    if "none" in args.classifiers:
        if len(args.classifiers) > 1:
            p.error(f"argument --classifiers: none goes alone, got {' '.join(args.classifiers)}")
        args.classifiers = []
    return args


@command(PROG)
def main(argv=None):
    from ..studies.token_quality import TokenQualityConfig, run_token_quality

    run_token_quality(config_from_args(TokenQualityConfig, parse_args(argv)))


if __name__ == "__main__":
    main()
