"""``omnijet-weaver-gen-fidelity``: how close generated jets are to real ones (W1 distances, classifier test).

    omnijet-weaver-gen-fidelity top_test.root qcd_test.root --output gf/ --num-jets 10000        # packaged model
    omnijet-weaver-gen-fidelity test.root --output gf/ --checkpoint out/gpt_best_epoch_state.pt --num-jets 48000
    omnijet-weaver-gen-fidelity top_test.root --output gf_top/ --checkpoint cond.pt --class Tbqq
    omnijet-weaver-gen-fidelity top_test.root qcd_test.root --data-config data_configs/qg_top.yaml --output gf/ \
        --checkpoint cond.pt --class Tbqq QCD --tagger tagger_best_epoch_state.pt     # per class + closure test

Generates --num-jets jets and reads as many real jets (through the data config, as in training), which are
tokenized and reconstructed with the generator's own tokenizer. The real jets are a mix of the files: each
gives a share in proportion to its number of entries, and the mix is shuffled with --seed. Writes summary.md (classifier-test AUC, W1
distances with their statistical floor, medians), summary.json and PNG + PDF histograms with ratio panels (--figures: other formats, or none).
With --class (a class-conditional generator) every class gets its own comparison, figures in class_NAME/, and an
overview table; with --tagger, a tagger trained on real jets classifies the generated and the real jets of each
class it knows (closure test: the same accuracy on both for a generator that makes what it is asked for).
"""

from __future__ import annotations

from . import command, config_from_args
from . import options as opt

PROG = "omnijet-weaver-gen-fidelity"


def parse_args(argv=None):
    from ..studies.gen_fidelity import GenFidelityConfig

    p, d = opt.study_parser(PROG, __doc__, GenFidelityConfig, files="real jets")
    opt.add_checkpoint_option(p, more="with --class, the packaged class-conditional model")
    opt.add_data_config_option(p)
    opt.add_num_jets_option(p, d["num_jets"], "jets to generate")
    p.add_argument("--max-real-jets", type=opt.positive_int, default=None, metavar="N",
                   help="real jets to read (default: --num-jets): " + opt.SAMPLING_RULE)
    p.add_argument("--class", dest="classes", nargs="+", default=None, metavar="NAME",
                   help="a class-conditional generator: --num-jets jets of each class NAME, each against the real "
                        "jets of that class (label_NAME of the data config, --max-real-jets of each); 'all': every "
                        "class of the generator; a report per class and an overview")
    g = p.add_argument_group("closure test (with --class)")
    g.add_argument("--tagger", default=None, metavar="WEIGHTS",
                   help="weights of a weaver classifier trained on real jets (e.g. tagger_best_epoch_state.pt, or a "
                        "ParT's): it classifies the generated and the real jets of each class through weaver --predict")
    g.add_argument("--tagger-network-config", default=None, metavar="PY",
                   help="its network config (default: the shipped omnijet_cls.py; ParT: its own)")
    g.add_argument("--tagger-data-config", type=opt.data_config_file, default=None, metavar="CONFIG",
                   help="the data config it was trained with, a file or a shipped name (default: --data-config); "
                        "kinematic inputs only")
    g.add_argument("--tagger-option", dest="tagger_options", nargs=2, action="append", default=[],
                   metavar=("NAME", "VALUE"), help="a network option it was trained with (weaver -o NAME VALUE)")
    opt.add_sampling_options(p)
    opt.add_batch_size_option(p, d["batch_size"], "sampled together")
    opt.add_seed_option(p, d["seed"], "sampling, the mix of the real jets, split and classifier")
    opt.add_epochs_option(p, d["epochs"], "of the classifier, at most")
    opt.add_patience_option(p, d["patience"])
    p.add_argument("--width", type=opt.positive_int, default=d["width"], metavar="N",
                   help=f"per-particle MLP width (default {d['width']}, as the paper)")
    opt.add_figures_option(p, d["figures"])
    opt.add_device_option(p)
    opt.add_progress_option(p)
    return p.parse_args(argv)


@command(PROG)
def main(argv=None):
    from ..studies.gen_fidelity import GenFidelityConfig, run_gen_fidelity

    run_gen_fidelity(config_from_args(GenFidelityConfig, parse_args(argv)))


if __name__ == "__main__":
    main()
