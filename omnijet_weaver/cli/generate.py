"""``omnijet-weaver-generate``: a generative checkpoint -> N jets in the JetClass layout.

    omnijet-weaver-generate --num-jets 1000 --output gen.root        # the packaged CPU-scale model
    omnijet-weaver-generate --checkpoint out/gpt_best_epoch_state.pt --num-jets 10000 --output gen.root
    omnijet-weaver-generate --checkpoint cond.pt --class Tbqq --num-jets 10000 --output top.root
    omnijet-weaver-generate --checkpoint cond.pt --class Tbqq=5000 QCD=5000 --output mix.root
    omnijet-weaver-generate --checkpoint cond.pt --class Wqq=0.5 Zqq=0.5 --num-jets 2000 --output wz.root

Writes TTree ``tree`` (``part_px/py/pz/energy/deta/dphi``, ``jet_pt/eta/phi/energy/nparticles``, the ten
``label_*`` branches and the tokens as ``part_token``) or, for a ``.parquet`` name, a parquet file, so the
jets go straight back into weaver (e.g. ``--predict`` with a tagger). Under ``torchrun`` each rank
generates its share of the jets (seed + rank) and writes ``gen.part<rank>of<world>.root``.

A class-conditional model (trained with ``-o conditional True``) generates by class: ``--class NAME`` (all
``--num-jets`` of that class; several names share them equally), ``--class NAME=COUNT ...`` (the counts add up
to the number of jets), or ``--class NAME=FRACTION ...`` (fractions of ``--num-jets`` adding up to 1). The jets
come in the order the classes are given, and the class's ``label_NAME`` branch is 1 for each (under torchrun
every rank makes its share of every class). Without ``--class`` it generates unconditionally (labels 0).
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
    opt.add_num_jets_option(p, None, "jets to generate (split over the ranks under torchrun); may be left out "
                            "when --class gives counts", required=False)
    p.add_argument("--class", dest="classes", nargs="+", default=None, metavar="NAME[=N]",
                   help="class-conditional models: generate jets of these classes (e.g. Tbqq, or Tbqq=5000 "
                        "QCD=5000, or Wqq=0.5 Zqq=0.5 with --num-jets); names as in the checkpoint, with or "
                        "without label_")
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
                   help="class-conditional models: the same as --class with the class of this label branch "
                        "(e.g. label_Tbqq); refused for an unconditional model, whose jets have no class")
    args = p.parse_args(argv)
    if args.label is not None and args.classes is not None:
        p.error("give --class or --label, not both")
    if args.label is not None:
        args.classes = [args.label]
    return args


def class_counts(specs, num_jets, model) -> list[tuple[int, int]]:
    """``[(class index, number of jets), ...]`` from ``--class`` values (see the module docstring).

    Raises ValueError (one line, saying what to change) for an unconditional model, unknown names, repeated
    classes, counts and fractions mixed, counts that disagree with ``num_jets``, fractions that do not add up
    to 1, or a missing ``num_jets``.
    """
    names, values = [], []
    for spec in specs:
        name, sep, value = str(spec).partition("=")
        names.append(name.strip())
        values.append(value.strip() if sep else None)
    if not model.conditional:
        given = "--class" if not any(n.startswith("label_") for n in names) else "--label"
        raise ValueError(
            f"{given} needs a class-conditional model, and this checkpoint is unconditional: its jets are a mixture "
            "of the classes it was trained on, so a label branch would not describe them; train a conditional "
            "model (weaver ... omnijet_gpt.py -o conditional True) or leave out " + given)
    index = [model.class_index(n) for n in names]
    if len(set(index)) != len(index):
        raise ValueError(f"--class names a class twice: {' '.join(specs)}")
    given = [v for v in values if v is not None]
    if not given:
        if num_jets is None:
            raise ValueError("--num-jets is needed with --class NAME (or give counts: --class NAME=COUNT ...)")
        share, extra = divmod(num_jets, len(index))
        return [(c, share + (1 if i < extra else 0)) for i, c in enumerate(index)]
    if len(given) != len(values):
        raise ValueError("--class: give a count or fraction for every class (NAME=N ...) or for none")
    if all(v.isdigit() for v in given):
        counts = [int(v) for v in given]
        if num_jets is not None and sum(counts) != num_jets:
            raise ValueError(f"--class counts add up to {sum(counts)}, not --num-jets {num_jets}: leave --num-jets "
                             "out or make them agree")
        if sum(counts) == 0:
            raise ValueError("--class counts add up to 0 jets")
        return list(zip(index, counts))
    try:
        fractions = [float(v) for v in given]
    except ValueError:
        bad = next(v for v in given if not v.isdigit())
        raise ValueError(f"--class: {bad!r} is neither a count nor a fraction (NAME=5000 or NAME=0.5)") from None
    if any(v.isdigit() for v in given):
        raise ValueError("--class: give counts (NAME=5000) or fractions (NAME=0.5) for all classes, not both")
    if not all(0 <= f <= 1 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"--class fractions must be in [0, 1] and add up to 1, got {' '.join(given)}")
    if num_jets is None:
        raise ValueError("--num-jets is needed with --class fractions")
    # largest remainder: the counts add up to num_jets exactly
    exact = [f * num_jets for f in fractions]
    counts = [int(x) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: counts[i] - exact[i])[: num_jets - sum(counts)]:
        counts[i] += 1
    return list(zip(index, counts))


@command(PROG)
def main(argv=None):
    args = parse_args(argv)

    from ..constants import LABEL_PREFIX
    from ..io.files import write_jets
    from ..io.jetclass import jetclass_arrays
    from ..models.generative import load_generative
    from ..models.packaged import packaged_path

    if args.classes is None and args.num_jets is None:
        raise ValueError("--num-jets is required (or --class with counts)")
    rank, world, output = rank_output(args.output, args.overwrite)
    model = load_generative(args.checkpoint or packaged_path("gpt"))

    def share(count):  # this rank's part of `count` jets
        return count // world + (1 if rank < count % world else 0)

    if args.classes is None:
        n, classes, labels = share(args.num_jets), None, None
    else:
        plan = [(c, share(count)) for c, count in class_counts(args.classes, args.num_jets, model)]
        classes = [c for c, count in plan for _ in range(count)]
        n = len(classes)
        labels = [LABEL_PREFIX + model.classes[c] for c in classes]
    jets = model.generate(n, batch_size=args.batch_size, temperature=args.temperature, top_k=args.top_k,
                          seed=args.seed + rank, device=args.device, progress=args.progress,
                          precision=args.precision, compile=args.compile, classes=classes)
    arrays = jetclass_arrays(jets["pt"], jets["eta_rel"], jets["phi_rel"], jets["mask"], jets["tokens"],
                             labels=labels)
    write_jets(output, arrays, overwrite=args.overwrite)
    print(f"wrote {n} jets to {output}", file=sys.stderr)
    if labels is None:
        print("note: the jets carry no class label (all label_* = 0); data configs that select on labels, such as "
              "qg_top.yaml, skip them" + (": generate by class (--class) to label them" if model.conditional
                                          else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
