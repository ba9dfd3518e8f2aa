"""``omnijet-weaver-gen-fidelity``: how close generated jets are to real ones (W1 distances, classifier test).

    omnijet-weaver-gen-fidelity --output gf/ --num-jets 10000 top_test.root qcd_test.root      # packaged model
    omnijet-weaver-gen-fidelity --output gf/ --checkpoint out/gpt_best_epoch_state.pt --num-jets 48000 test.root

Generates --num-jets jets and reads as many real jets (through the data config, as in training), which are
tokenized and reconstructed with the generator's own tokenizer. Writes summary.md (classifier-test AUC, W1
distances with their statistical floor, medians), summary.json and PNG + PDF histograms with ratio panels.
"""

from __future__ import annotations

import argparse


def parse_args(argv=None):
    from ..studies.gen_fidelity import GenFidelityConfig

    d = GenFidelityConfig(files=[], output=None)
    p = argparse.ArgumentParser(prog="omnijet-weaver-gen-fidelity", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("files", nargs="+", help="real jet files (ROOT TTrees or parquet) the data config reads")
    p.add_argument("--output", required=True, help="report folder; an existing report is replaced only with --overwrite")
    p.add_argument("--checkpoint", default=None, help="generative checkpoint (default: the packaged model)")
    p.add_argument("--data-config", default=None, help="weaver data config (default: the repository's qg_top.yaml)")
    p.add_argument("--num-jets", type=int, default=d.num_jets, help=f"jets to generate (default {d.num_jets})")
    p.add_argument("--max-real-jets", type=int, default=None, help="real jets to read (default: --num-jets)")
    p.add_argument("--temperature", type=float, default=d.temperature, help="sampling temperature (default 1)")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens only")
    p.add_argument("--seed", type=int, default=d.seed, help="sampling, split and classifier seed (default 0)")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"maximum classifier epochs (default {d.epochs})")
    p.add_argument("--patience", type=int, default=d.patience,
                   help=f"early stopping on the validation loss (default {d.patience} epochs)")
    p.add_argument("--width", type=int, default=d.width, help=f"per-particle MLP width (default {d.width}, as the paper)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None):
    from ..models.checkpoint import CheckpointError
    from ..studies.gen_fidelity import GenFidelityConfig, run_gen_fidelity
    from ..weaver.dataset import InputFileError
    from . import default_device, fail

    args = parse_args(argv)
    config = GenFidelityConfig(
        files=args.files, output=args.output, checkpoint=args.checkpoint, data_config=args.data_config,
        num_jets=args.num_jets, max_real_jets=args.max_real_jets, temperature=args.temperature, top_k=args.top_k,
        seed=args.seed, epochs=args.epochs, patience=args.patience, width=args.width,
        device=args.device or default_device(), overwrite=args.overwrite, progress=not args.no_progress)
    try:
        run_gen_fidelity(config)
    except (CheckpointError, InputFileError, FileNotFoundError, FileExistsError, ValueError, ImportError) as err:
        fail(str(err))


if __name__ == "__main__":
    main()
