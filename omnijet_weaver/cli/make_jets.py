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
import os
import sys


def parse_args(argv=None):
    from ..io.pythia import ETA_MAX, PROCESS_NAMES, PT_MAX, PT_MIN

    p = argparse.ArgumentParser(prog="omnijet-weaver-make-jets", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--process", nargs="+", default=["top", "qcd"], metavar="NAME",
                   help=f"jet types: {', '.join(PROCESS_NAMES)} or all; several allowed (default: top qcd)")
    p.add_argument("--num-jets", type=int, required=True, help="jets per process")
    p.add_argument("--output", required=True, help="output file, .root (TTree 'tree') or .parquet")
    p.add_argument("--seed", type=int, default=0,
                   help="base seed (default 0): worker w of the k-th process (in qcd, top, wqq, zqq, hbb) runs Pythia "
                        "with seed 1 + seed + w + 100000 k; same seed and --workers, same file")
    p.add_argument("--workers", type=int, default=None,
                   help=f"worker processes, one Pythia each (default: all cores, {os.cpu_count()})")
    p.add_argument("--pt-min", type=float, default=PT_MIN, help=f"lowest jet pT in GeV (default {PT_MIN:g})")
    p.add_argument("--pt-max", type=float, default=PT_MAX, help=f"highest jet pT in GeV (default {PT_MAX:g})")
    p.add_argument("--eta-max", type=float, default=ETA_MAX, help=f"largest |jet eta| (default {ETA_MAX:g})")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="'KEY = VALUE'",
                   help="extra Pythia setting, applied last (repeatable), e.g. --set 'Tune:pp = 14'")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None):
    from ..io.files import check_output_path, write_jets
    from ..io.pythia import PythiaSettingError, make_jets, parse_processes, require_pythia
    from . import fail

    args = parse_args(argv)
    try:
        processes = parse_processes(args.process)
    except ValueError as err:
        fail(str(err))
    if args.num_jets < 1:
        fail(f"--num-jets must be at least 1, got {args.num_jets}")
    if args.workers is not None and args.workers < 1:
        fail(f"--workers must be at least 1, got {args.workers}")
    try:
        output = check_output_path(args.output, args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        fail(str(err))
    try:
        require_pythia()
    except ImportError as err:
        fail(str(err))
    try:
        arrays = make_jets(processes, args.num_jets, seed=args.seed, workers=args.workers, pt_min=args.pt_min,
                           pt_max=args.pt_max, eta_max=args.eta_max, extra_settings=args.settings,
                           progress=not args.no_progress)
        write_jets(output, arrays)
    except (PythiaSettingError, RuntimeError, ValueError, OSError) as err:
        fail(str(err))
    except KeyboardInterrupt:
        fail("interrupted; no file written", code=130)
    print(f"wrote {len(arrays['jet_pt'])} jets ({args.num_jets} each of {', '.join(processes)}) to {output}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
