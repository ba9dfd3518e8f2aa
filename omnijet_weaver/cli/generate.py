"""``omnijet-weaver-generate``: a generative checkpoint -> N jets in the JetClass layout.

    omnijet-weaver-generate --checkpoint out/gpt_best_epoch_state.pt --num-jets 10000 --output gen.root
    omnijet-weaver-generate --num-jets 1000 --output gen.root        # the packaged CPU-scale model

Writes TTree ``tree`` (``part_px/py/pz/energy/deta/dphi``, ``jet_pt/eta/phi/energy/nparticles``, the ten
``label_*`` branches and the tokens as ``part_token``) or, for a ``.parquet`` name, a parquet file, so the
jets go straight back into weaver (e.g. ``--predict`` with a tagger). Under ``torchrun`` each rank
generates its share of the jets (seed + rank) and writes ``gen.part<rank>of<world>.root``.
"""

from __future__ import annotations

import argparse
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="omnijet-weaver-generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None,
                   help="generative checkpoint (weaver ... omnijet_gpt.py); default: the packaged model")
    p.add_argument("--num-jets", type=int, required=True, help="number of jets N")
    p.add_argument("--output", required=True, help="output file, .root (TTree) or .parquet")
    p.add_argument("--batch-size", type=int, default=256, help="jets sampled together (default 256)")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (default 1)")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens only")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0): same seed, same jets")
    p.add_argument("--label", default=None,
                   help="JetClass label branch to set to 1 (e.g. label_Tbqq); default: all labels 0")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None):
    from ..io.files import check_output_path, write_jets
    from ..io.jetclass import jetclass_arrays
    from ..models.checkpoint import CheckpointError
    from ..models.generative import load_generative
    from ..models.packaged import packaged_path
    from . import default_device, distributed_rank, fail, part_path

    args = parse_args(argv)
    rank, world = distributed_rank()
    if args.num_jets < 1:
        fail(f"--num-jets must be at least 1, got {args.num_jets}")
    try:
        output = check_output_path(part_path(args.output, rank, world), args.overwrite)
        model = load_generative(args.checkpoint or packaged_path("gpt"))
        n = args.num_jets // world + (1 if rank < args.num_jets % world else 0)
        jets = model.generate(n, batch_size=args.batch_size, temperature=args.temperature, top_k=args.top_k,
                              seed=args.seed + rank, device=args.device or default_device(),
                              progress=not args.no_progress)
        arrays = jetclass_arrays(jets["pt"], jets["eta_rel"], jets["phi_rel"], jets["mask"], jets["tokens"],
                                 label=args.label)
        write_jets(output, arrays)
    except (CheckpointError, FileNotFoundError, FileExistsError, ValueError, OSError) as err:
        fail(str(err))
    print(f"wrote {n} jets to {output}", file=sys.stderr)
    if args.label is None:
        print("note: the jets carry no class label (all label_* = 0); data configs that select on labels, "
              "such as qg_top.yaml, skip them: pass --label label_Tbqq (or another) to keep them", file=sys.stderr)


if __name__ == "__main__":
    main()
