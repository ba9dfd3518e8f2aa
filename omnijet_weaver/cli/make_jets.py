"""``omnijet-weaver-make-jets``: Pythia8 + FastJet jets in the JetClass ROOT layout, for users without JetClass.

    omnijet-weaver-make-jets --process top qcd --num-jets 20000 --output jets.root

pp at 13 TeV (Pythia 8.3, default tune, MPI and hadronisation on); anti-kT R = 0.8 jets of the visible
final-state particles; of the two leading jets, those with 500 < pT < 1000 GeV and |eta| < 2 are kept, and
signal jets are truth-matched as in JetClass. Writes TTree ``tree`` (or a parquet file) with the JetClass
branches (``part_*``, ``jet_*`` and the ten ``label_*``), which weaver and ``data_configs/qg_top.yaml`` read
as JetClass. Processes: qcd (label_QCD), top (label_Tbqq), wqq (label_Wqq), zqq (label_Zqq), hbb
(label_Hbb), or all. The jets are stored process after process; weaver shuffles when it trains.
Needs ``pip install 'omnijet-weaver[pythia]'``.
"""

from __future__ import annotations

import argparse
import sys

from . import command, command_parser
from . import options as opt

PROG = "omnijet-weaver-make-jets"


def process_name(text: str) -> str:
    """One ``--process`` value: a process name or ``all`` (any case)."""
    from ..io.pythia import PROCESS_NAMES

    if text.lower() not in (*PROCESS_NAMES, "all"):
        raise argparse.ArgumentTypeError(f"unknown process {text!r}: choose from {', '.join(PROCESS_NAMES)} or all "
                                         f"(several: space-separated)")
    return text.lower()


def parse_args(argv=None):
    from ..io.pythia import ETA_MAX, PROCESS_NAMES, PT_MAX, PT_MIN

    p = command_parser(PROG, __doc__)
    p.add_argument("--process", nargs="+", default=["top", "qcd"], type=process_name, metavar="NAME",
                   help=f"jet types, space-separated: {', '.join(PROCESS_NAMES)} or all (default: top qcd)")
    opt.add_num_jets_option(p, None, "jets per process")
    opt.add_output_options(p)
    opt.add_seed_option(p, 0, "worker w of the k-th process (in qcd, top, wqq, zqq, hbb) runs Pythia with seed "
                          "1 + seed + w + 100000 k; same seed and --workers, same file")
    opt.add_workers_option(p, "one Pythia each")
    p.add_argument("--pt-min", type=opt.nonnegative_float, default=PT_MIN,
                   help=f"lowest jet pT in GeV (default {PT_MIN:g})")
    p.add_argument("--pt-max", type=opt.positive_float, default=PT_MAX,
                   help=f"highest jet pT in GeV (default {PT_MAX:g})")
    p.add_argument("--eta-max", type=opt.positive_float, default=ETA_MAX,
                   help=f"largest |jet eta| (default {ETA_MAX:g})")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="'KEY = VALUE'",
                   help="extra Pythia setting, applied last (repeatable), e.g. --set 'Tune:pp = 14'")
    opt.add_progress_option(p)
    return p.parse_args(argv)


@command(PROG)
def main(argv=None):
    args = parse_args(argv)

    from ..io.files import check_output_path, write_jets
    from ..io.pythia import make_jets, parse_processes, require_pythia

    processes = parse_processes(args.process)
    output = check_output_path(args.output, args.overwrite)
    require_pythia()
    arrays = make_jets(processes, args.num_jets, seed=args.seed, workers=args.workers, pt_min=args.pt_min,
                       pt_max=args.pt_max, eta_max=args.eta_max, extra_settings=args.settings,
                       progress=args.progress)
    write_jets(output, arrays, overwrite=args.overwrite)
    print(f"wrote {len(arrays['jet_pt'])} jets ({args.num_jets} each of {', '.join(processes)}) to {output}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
