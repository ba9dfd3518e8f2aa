"""``omnijet-weaver-generate``: a generative checkpoint -> N jets in the JetClass layout.

    omnijet-weaver-generate --num-jets 1000 --output gen.root        # the packaged CPU-scale model
    omnijet-weaver-generate --checkpoint out/gpt_best_epoch_state.pt --num-jets 10000 --output gen.root

Writes TTree ``tree`` (``part_px/py/pz/energy/deta/dphi``, ``jet_pt/eta/phi/energy/nparticles``, the ten
``label_*`` branches and the tokens as ``part_token``) or, for a ``.parquet`` name, a parquet file, so the
jets go straight back into weaver (e.g. ``--predict`` with a tagger). Under ``torchrun`` each rank
generates its share of the jets (seed + rank) and writes ``gen.part<rank>of<world>.root``.
"""

from __future__ import annotations

import sys

from . import command, command_parser, rank_output
from . import options as opt

PROG = "omnijet-weaver-generate"


def parse_args(argv=None):
    from ..constants import JETCLASS_LABELS
    from ..models.sampling import PRECISIONS

    p = command_parser(PROG, __doc__)
    opt.add_checkpoint_option(p)
    opt.add_num_jets_option(p, None, "jets to generate (split over the ranks under torchrun)")
    opt.add_output_options(p)
    opt.add_batch_size_option(p, 256, "sampled together")
    opt.add_sampling_options(p)
    opt.add_seed_option(p, 0, "sampling (rank r under torchrun: seed + r)")
    opt.add_device_option(p)
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="precision of the GPT while sampling: fp32 (default) or bf16 (autocast, on GPUs; the "
                        "token choice and the decoder stay float32; bf16 jets differ from fp32 jets)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the decode step (the first batch waits for compilation; worth it for "
                        "many jets on a GPU)")
    opt.add_progress_option(p)
    p.add_argument("--label", default=None, choices=list(JETCLASS_LABELS), metavar="BRANCH",
                   help="JetClass label branch to set to 1 (e.g. label_Tbqq); default: all labels 0")
    return p.parse_args(argv)


@command(PROG)
def main(argv=None):
    args = parse_args(argv)

    from ..io.files import write_jets
    from ..io.jetclass import jetclass_arrays
    from ..models.generative import load_generative
    from ..models.packaged import packaged_path

    rank, world, output = rank_output(args.output, args.overwrite)
    model = load_generative(args.checkpoint or packaged_path("gpt"))
    n = args.num_jets // world + (1 if rank < args.num_jets % world else 0)
    jets = model.generate(n, batch_size=args.batch_size, temperature=args.temperature, top_k=args.top_k,
                          seed=args.seed + rank, device=args.device, progress=args.progress,
                          precision=args.precision, compile=args.compile)
    arrays = jetclass_arrays(jets["pt"], jets["eta_rel"], jets["phi_rel"], jets["mask"], jets["tokens"],
                             label=args.label)
    write_jets(output, arrays, overwrite=args.overwrite)
    print(f"wrote {n} jets to {output}", file=sys.stderr)
    if args.label is None:
        print("note: the jets carry no class label (all label_* = 0); data configs that select on labels, "
              "such as qg_top.yaml, skip them: pass --label label_Tbqq (or another) to keep them", file=sys.stderr)


if __name__ == "__main__":
    main()
