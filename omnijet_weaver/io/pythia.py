"""Pythia8 + FastJet jets in the JetClass layout, for users without JetClass.

The recipe of ``../shared/data/pythia`` (and of JetClass, without its detector simulation): pp collisions
at 13 TeV with Pythia 8.3 (``pythia8mc``), default tune, multi-parton interactions and hadronisation on.
Visible final-state particles (no neutrinos) with |eta| < 5 are clustered with FastJet anti-kT, R = 0.8; of
the two leading jets, those with ``pt_min < pT < pt_max`` (GeV) and ``|eta| < eta_max`` are kept. Signal
jets are truth-matched as in JetClass: a top jet is kept only when the top quark, its b quark and both
quarks of its W lie within Delta R < 0.8 of the jet axis; a W / Z / H jet only when the boson and both of its
daughter quarks do. QCD jets are not matched.

| process | Pythia processes (pTHat > 0.9 pt_min, i.e. 450 GeV by default)   | decay forced to      | label        |
|---------|-------------------------------------------------------------------|----------------------|--------------|
| ``qcd`` | ``HardQCD:all``, also pTHat < 1.1 pt_max (1100 GeV by default)    | -                    | ``label_QCD``  |
| ``top`` | ``Top:gg2ttbar``, ``Top:qqbar2ttbar``                             | W -> q q'            | ``label_Tbqq`` |
| ``wqq`` | ``WeakBosonAndParton:qg2Wq``, ``qqbar2Wg``                        | W -> q q'            | ``label_Wqq``  |
| ``zqq`` | ``WeakBosonAndParton:qg2gmZq``, ``qqbar2gmZg`` (Z only)           | Z -> q qbar (u...b)  | ``label_Zqq``  |
| ``hbb`` | ``HiggsSM:gg2Hg(l:t)``, ``qg2Hq(l:t)``, ``qqbar2Hg(l:t)`` (top loop) | H -> b bbar       | ``label_Hbb``  |

Jets are written with the JetClass branches (float32 unless noted): ``part_px/py/pz/energy`` (GeV),
``part_deta/dphi`` (relative to the jet axis, Delta phi in (-pi, pi]), ``part_charge`` and the particle-type
flags ``part_isChargedHadron/isNeutralHadron/isPhoton/isElectron/isMuon``, all constituents, pT-ordered;
``jet_pt/eta/phi/energy`` (GeV; from the sum of the constituents), ``jet_nparticles``; and the ten
``label_*`` branches (int32, one of them 1).

``make_jets`` runs one Pythia instance per worker process; see its docstring for the seeds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys

import numpy as np

from ..constants import JET_BRANCHES, JETCLASS_LABELS, PART_BRANCHES
from ..errors import ConfigError, MissingDependencyError
from ..kinematics import pt_eta_phi

#: Centre-of-mass energy of the pp collisions, in GeV.
SQRT_S = 13000.0
#: Anti-kT jet radius, and the Delta R of the truth matching.
JET_RADIUS = 0.8
#: Particles with |eta| at or above this are not clustered.
PARTICLE_ETA_MAX = 5.0
#: Default jet selection: pt_min < jet pT < pt_max (GeV), |jet eta| < eta_max.
PT_MIN, PT_MAX, ETA_MAX = 500.0, 1000.0, 2.0
#: pTHatMin = PTHAT_MIN_FRACTION * pt_min (450 GeV for pt_min = 500), and for QCD
#: pTHatMax = PTHAT_MAX_FACTOR * pt_max (1100 GeV for pt_max = 1000).
PTHAT_MIN_FRACTION, PTHAT_MAX_FACTOR = 0.9, 1.1
#: Pythia's largest allowed ``Random:seed``.
MAX_PYTHIA_SEED = 900_000_000
#: Pythia seeds of different processes are this far apart (so at most this many workers).
SEED_STRIDE = 100_000
#: A worker gives up when this many events in a row yield no selected jet.
MAX_EMPTY_EVENTS = 2000
#: A worker gives up after this many failed ``pythia.next()`` calls.
MAX_FAILED_EVENTS = 100
#: Events generated between two clusterings (clustering is vectorised over them).
EVENT_BATCH = 32

INSTALL_HINT = "pip install 'omnijet-weaver[pythia]'  (pythia8mc==8.317.2 and fastjet)"

_COMMON_SETTINGS = (
    "Print:quiet = on",
    "Next:numberCount = 0",
    f"Beams:eCM = {SQRT_S:g}",
    "PartonLevel:MPI = on",
    "HadronLevel:all = on",
    "Random:setSeed = on",
)
_W_TO_QUARKS = ("24:onMode = off", "24:onIfAny = 1 2 3 4 5")


@dataclasses.dataclass(frozen=True)
class Process:
    """One jet type: Pythia settings, label branch and truth matching.

    ``resonance`` is the |PDG id| of the particle the jet must contain (0: no matching, QCD).
    """

    name: str
    label: str
    settings: tuple
    resonance: int
    description: str


#: The jet types, by the names ``--process`` takes. Their order fixes the seeds (see ``make_jets``).
PROCESSES = {
    p.name: p
    for p in (
        Process("qcd", "label_QCD", ("HardQCD:all = on",), 0, "QCD multijets (quark and gluon jets)"),
        Process("top", "label_Tbqq", ("Top:gg2ttbar = on", "Top:qqbar2ttbar = on") + _W_TO_QUARKS, 6,
                "hadronic top quarks, t -> b q q'"),
        Process("wqq", "label_Wqq", ("WeakBosonAndParton:qg2Wq = on", "WeakBosonAndParton:qqbar2Wg = on")
                + _W_TO_QUARKS, 24, "W bosons, W -> q q'"),
        Process("zqq", "label_Zqq", ("WeakBosonAndParton:qg2gmZq = on", "WeakBosonAndParton:qqbar2gmZg = on",
                                     "WeakZ0:gmZmode = 2", "23:onMode = off", "23:onIfAny = 1 2 3 4 5"), 23,
                "Z bosons, Z -> q qbar"),
        Process("hbb", "label_Hbb", ("HiggsSM:gg2Hg(l:t) = on", "HiggsSM:qg2Hq(l:t) = on",
                                     "HiggsSM:qqbar2Hg(l:t) = on", "25:onMode = off", "25:onIfMatch = 5 -5"), 25,
                "Higgs bosons, H -> b bbar"),
    )
}
PROCESS_NAMES = tuple(PROCESSES)

#: Per-constituent branches written (float32): the kinematic ones, then charge and particle type.
PARTICLE_BRANCHES = PART_BRANCHES + (
    "part_charge", "part_isChargedHadron", "part_isNeutralHadron", "part_isPhoton", "part_isElectron", "part_isMuon",
)


class PythiaSettingError(ConfigError):
    """Pythia rejected a setting (unknown name or bad value), or failed to initialise."""


def require_pythia():
    """Import and return ``(pythia8mc, fastjet)``, or raise MissingDependencyError (an ImportError) saying how to
    install them."""
    try:
        import fastjet
        import pythia8mc
    except ImportError as err:
        raise MissingDependencyError(f"making jets needs Pythia8 and FastJet ({err}): {INSTALL_HINT}") from None
    return pythia8mc, fastjet


def parse_processes(names) -> tuple:
    """Process names from a string or a list of strings: ``"top qcd"``, ``"top,qcd"``, ``["all"]``.

    Returns them without repeats, in the order given (``all`` = every process). Raises ValueError for an
    unknown name.
    """
    if isinstance(names, str):
        names = [names]
    out = []
    for item in names:
        for name in str(item).replace(",", " ").split():
            name = name.strip().lower()
            if name == "all":
                candidates = PROCESS_NAMES
            elif name in PROCESSES:
                candidates = (name,)
            else:
                raise ValueError(f"unknown process {name!r}: choose from {', '.join(PROCESS_NAMES)} or all")
            out += [c for c in candidates if c not in out]
    if not out:
        raise ValueError(f"no process given: choose from {', '.join(PROCESS_NAMES)} or all")
    return tuple(out)


def pythia_seed(seed: int, process: str, worker: int) -> int:
    """Pythia's ``Random:seed`` of ``worker`` for ``process``: ``1 + seed + worker + 100000 * k``, k = the
    position of ``process`` in PROCESS_NAMES (Pythia reads 0 as "seed from the clock", hence the 1)."""
    return 1 + seed + worker + SEED_STRIDE * PROCESS_NAMES.index(process)


def pythia_settings(process: str, seed: int, pt_min: float = PT_MIN, pt_max: float = PT_MAX,
                    extra=()) -> list:
    """All ``readString`` lines of one Pythia instance (``seed`` is Pythia's own ``Random:seed``).

    The phase-space cut follows the jet selection: pTHatMin = 0.9 pt_min; for QCD also
    pTHatMax = 1.1 pt_max (GeV). ``extra`` settings come last, so they can override any of these.
    """
    proc = PROCESSES[process]
    lines = list(_COMMON_SETTINGS) + [f"Random:seed = {seed}", f"PhaseSpace:pTHatMin = {PTHAT_MIN_FRACTION * pt_min:g}"]
    if proc.resonance == 0:
        lines.append(f"PhaseSpace:pTHatMax = {PTHAT_MAX_FACTOR * pt_max:g}")
    return lines + list(proc.settings) + list(extra)


@contextlib.contextmanager
def quiet_stdout():
    """Send file descriptor 1 to /dev/null in the block: Pythia's C++ printout (errors, warnings) bypasses
    ``sys.stdout``, and ``Print:quiet`` does not silence all of it."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):  # no usable stdout: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def new_pythia(settings, init: bool = True):
    """A ``pythia8mc.Pythia`` with ``settings``, initialised unless ``init`` is False; PythiaSettingError
    for any line Pythia rejects."""
    pythia8mc, _ = require_pythia()
    with quiet_stdout():
        pythia = pythia8mc.Pythia("", False)
        # quiet first, so that nothing but our own errors reaches the user
        for line in settings:
            if not pythia.readString(line):
                raise PythiaSettingError(f"Pythia does not accept the setting {line!r} "
                                         "(unknown name or bad value)")
        if init and not pythia.init():
            raise PythiaSettingError("Pythia failed to initialise with the settings: " + "; ".join(settings))
    return pythia


# --------------------------------------------------------------------------------------------------------
# one worker: events -> jets
# --------------------------------------------------------------------------------------------------------

def _wrap_phi(x):
    """Angles wrapped to (-pi, pi]."""
    return np.pi - np.mod(np.pi - x, 2 * np.pi)


def _read_event(event, resonance: int):
    """Visible final-state particles of a Pythia event as a (n, 6) float64 array of
    (px, py, pz, E [GeV], PDG id, charge), and the truth points of each resonance: a list of (k, 2) arrays of
    (eta, phi) -- for a top (t, b, q, q'), for a boson (V, q, q')."""
    parts = np.array([(p.px(), p.py(), p.pz(), p.e(), p.id(), p.charge())
                      for p in event if p.isFinal() and p.isVisible()], dtype=np.float64).reshape(-1, 6)
    truth = []
    if resonance:
        # the outgoing particles of the hard 2 -> 2 process sit at 5 and 6 (status -22)
        for i in range(3, min(event.size(), 9)):
            p = event[i]
            if p.idAbs() != resonance or abs(p.status()) != 22:
                continue
            last = event[p.iBotCopyId()]  # the copy that decays, after recoils in the shower
            points = [last]
            for d in last.daughterList():
                dau = event[d]
                if resonance == 6 and dau.idAbs() == 24:
                    w = event[dau.iBotCopyId()]
                    points += [event[k] for k in w.daughterList()]
                else:
                    points.append(dau)
            if len(points) == (4 if resonance == 6 else 3):
                truth.append(np.array([(q.eta(), q.phi()) for q in points]))
    return parts, truth


def _matched(truth, eta: float, phi: float) -> bool:
    """Whether all points of one truth resonance lie within Delta R < JET_RADIUS of (eta, phi)."""
    for points in truth:
        dr2 = (points[:, 0] - eta) ** 2 + _wrap_phi(points[:, 1] - phi) ** 2
        if np.all(dr2 < JET_RADIUS**2):
            return True
    return False


def _jet_record(parts):
    """JetClass quantities of one jet from its constituents ((k, 6) rows as in ``_read_event``)."""
    pt, eta, phi = pt_eta_phi(parts[:, 0], parts[:, 1], parts[:, 2])
    order = np.argsort(-pt, kind="stable")
    parts, eta, phi = parts[order], eta[order], phi[order]
    px, py, pz, e = parts[:, :4].sum(0)
    jet_pt, jet_eta, jet_phi = (float(x) for x in pt_eta_phi(px, py, pz))
    pid = np.abs(parts[:, 4]).astype(np.int64)
    charge = parts[:, 5]
    electron, muon, photon = pid == 11, pid == 13, pid == 22
    charged = charge != 0
    kinematic = (parts[:, 0], parts[:, 1], parts[:, 2], parts[:, 3], eta - jet_eta, _wrap_phi(phi - jet_phi))
    cols = dict(zip(PART_BRANCHES, kinematic))  # part_px/py/pz/energy/deta/dphi
    cols.update({
        "part_charge": charge, "part_isChargedHadron": charged & ~electron & ~muon,
        "part_isNeutralHadron": ~charged & ~photon, "part_isPhoton": photon, "part_isElectron": electron,
        "part_isMuon": muon,
    })
    return cols, (jet_pt, jet_eta, jet_phi, e, len(parts))


def generate_jets(process: str, num_jets: int, seed: int, pt_min: float = PT_MIN, pt_max: float = PT_MAX,
                  eta_max: float = ETA_MAX, extra_settings=(), report=None) -> dict:
    """Run one Pythia instance until ``num_jets`` jets of ``process`` pass the selection.

    Args:
        process: one of PROCESS_NAMES.
        num_jets: jets wanted.
        seed: Pythia's ``Random:seed`` (1 ... 900000000).
        pt_min, pt_max: jet pT window, GeV. eta_max: largest |jet eta|.
        extra_settings: more Pythia ``readString`` lines (applied last).
        report: called with the number of new jets after each batch of events (progress).

    Returns flat float32 arrays: the particle branches (all jets' constituents in a row) and ``counts``
    (constituents per jet, int64), the jet branches, and ``num_events`` (events generated).
    """
    import awkward as ak

    _, fastjet = require_pythia()
    resonance = PROCESSES[process].resonance
    pythia = new_pythia(pythia_settings(process, seed, pt_min, pt_max, extra_settings))
    jet_def = fastjet.JetDefinition(fastjet.antikt_algorithm, JET_RADIUS)
    part_cols = {k: [] for k in PARTICLE_BRANCHES}
    jet_rows = []
    num_events = failed = empty = 0
    with quiet_stdout():
        while len(jet_rows) < num_jets:
            events = []
            for _ in range(int(np.clip(num_jets - len(jet_rows), 1, EVENT_BATCH))):
                if not pythia.next():
                    failed += 1
                    if failed > MAX_FAILED_EVENTS:
                        raise ConfigError(f"Pythia failed to generate {failed} {process} events: check --set")
                    continue
                num_events += 1
                parts, truth = _read_event(pythia.event, resonance)
                pt, eta, _ = pt_eta_phi(parts[:, 0], parts[:, 1], parts[:, 2])
                events.append((parts[(pt > 0) & (np.abs(eta) < PARTICLE_ETA_MAX)], truth))  # pT = 0: |eta| infinite
            if not events:
                continue
            counts = [len(p) for p, _ in events]
            flat = np.concatenate([p for p, _ in events])
            vectors = ak.zip({k: ak.unflatten(flat[:, i], counts) for i, k in enumerate(("px", "py", "pz", "E"))})
            sequence = fastjet.ClusterSequence(vectors, jet_def)
            # the two leading jets above pt_min are the two leading jets that pass pt_min
            jets = sequence.inclusive_jets(min_pt=pt_min)
            index = sequence.constituent_index(min_pt=pt_min)
            before = len(jet_rows)
            for (parts, truth), ev_jets, ev_index in zip(events, jets.to_list(), index.to_list()):
                pts = [np.hypot(j["px"], j["py"]) for j in ev_jets]
                kept = 0
                for k in np.argsort(pts, kind="stable")[::-1][:2]:
                    cols, jet = _jet_record(parts[np.asarray(ev_index[k], dtype=np.int64)])
                    if not (pt_min < jet[0] < pt_max and abs(jet[1]) < eta_max):
                        continue
                    if resonance and not _matched(truth, jet[1], jet[2]):
                        continue
                    for name, v in cols.items():
                        part_cols[name].append(v)
                    jet_rows.append(jet)
                    kept += 1
                    if len(jet_rows) == num_jets:
                        break
                empty = 0 if kept else empty + 1
                if len(jet_rows) == num_jets:
                    break
                if empty >= MAX_EMPTY_EVENTS:
                    raise ConfigError(
                        f"{empty} {process} events in a row gave no jet with {pt_min:g} < pT < {pt_max:g} GeV and "
                        f"|eta| < {eta_max:g}{' matched to the ' + process if resonance else ''}: "
                        "check the jet selection")
            if report is not None and len(jet_rows) > before:
                report(len(jet_rows) - before)
    out = {name: (np.concatenate(v) if v else np.zeros(0)).astype(np.float32) for name, v in part_cols.items()}
    out["counts"] = np.array([len(v) for v in part_cols[PARTICLE_BRANCHES[0]]], dtype=np.int64)
    table = np.array(jet_rows, dtype=np.float64).reshape(-1, 5)
    for i, name in enumerate(JET_BRANCHES):
        out[name] = table[:, i].astype(np.float32)
    out["num_events"] = num_events
    return out


# --------------------------------------------------------------------------------------------------------
# several workers
# --------------------------------------------------------------------------------------------------------

_QUEUE = None


def _init_worker(queue):
    global _QUEUE
    _QUEUE = queue


def _run_task(kwargs):
    report = _QUEUE.put if _QUEUE is not None else None
    return generate_jets(**kwargs, report=report)


def split_evenly(n: int, parts: int) -> list:
    """``n`` split into ``parts`` integers that differ by at most one, the first ``n % parts`` one larger
    (jets over workers here; labelled jets over classes in the transfer study)."""
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def make_jets(processes, num_jets: int, seed: int = 0, workers: int | None = None, pt_min: float = PT_MIN,
              pt_max: float = PT_MAX, eta_max: float = ETA_MAX, extra_settings=(), progress: bool = True) -> dict:
    """Generate ``num_jets`` jets of each of ``processes`` with Pythia8 + FastJet, in the JetClass layout.

    Args:
        processes: process names (see PROCESSES; a string such as ``"top,qcd"`` or ``"all"`` works too).
        num_jets: jets per process.
        seed: base seed (>= 0). Worker w (0-based) of a process runs Pythia with ``Random:seed`` =
            ``1 + seed + w + 100000 * k`` (k: the process's position in PROCESS_NAMES). Same seed and same
            ``workers`` give identical jets; another ``workers`` gives other (equally valid) jets.
        workers: worker processes, each with its own Pythia instance (default: ``os.cpu_count()``); each
            process's jets are split evenly among them. With one worker everything runs in this process.
        pt_min, pt_max: jet pT window, GeV (the Pythia pTHat range follows it, see ``pythia_settings``).
        eta_max: largest |jet eta|.
        extra_settings: more Pythia ``readString`` lines, e.g. ``["Tune:pp = 14"]`` (applied last; a line
            Pythia rejects raises PythiaSettingError).
        progress: show a tqdm bar counting jets over all workers.

    Returns:
        dict of arrays, one entry per jet, processes in the order given: the particle branches (awkward
        jagged float32, pT-ordered constituents), the jet branches (numpy float32) and the ten JetClass
        ``label_*`` branches (numpy int32, one-hot), ready for ``io.write_jets``.
    """
    processes = parse_processes(processes)
    workers = int(workers or os.cpu_count() or 1)
    if num_jets < 1:
        raise ValueError(f"the number of jets must be at least 1, got {num_jets}")
    if workers < 1 or workers > SEED_STRIDE:
        raise ValueError(f"workers must be between 1 and {SEED_STRIDE}, got {workers}")
    max_seed = MAX_PYTHIA_SEED - 1 - SEED_STRIDE * len(PROCESS_NAMES)
    if not 0 <= seed <= max_seed:
        raise ValueError(f"seed must be between 0 and {max_seed}, got {seed}")
    if not 0 <= pt_min < pt_max:
        raise ValueError(f"need 0 <= pt_min < pt_max, got pt_min={pt_min} and pt_max={pt_max}")
    if not eta_max > 0:
        raise ValueError(f"eta_max must be positive, got {eta_max}")
    require_pythia()
    for name in processes:  # rejected settings show up here, before any worker starts
        new_pythia(pythia_settings(name, 1, pt_min, pt_max, extra_settings), init=False)

    tasks = [dict(process=name, num_jets=n, seed=pythia_seed(seed, name, w), pt_min=pt_min, pt_max=pt_max,
                  eta_max=eta_max, extra_settings=tuple(extra_settings))
             for name in processes for w, n in enumerate(split_evenly(num_jets, workers)) if n > 0]
    import tqdm

    with tqdm.tqdm(total=num_jets * len(processes), unit="jet", desc="make-jets", disable=not progress) as bar:
        if workers == 1:
            results = [generate_jets(**t, report=bar.update) for t in tasks]
        else:
            results = _run_pool(tasks, min(workers, len(tasks)), bar)
        bar.update(sum(len(r["counts"]) for r in results) - bar.n)  # counts still in flight

    import awkward as ak

    out = {}
    counts = np.concatenate([r["counts"] for r in results])
    for name in PARTICLE_BRANCHES:
        out[name] = ak.unflatten(np.concatenate([r[name] for r in results]), counts)
    for name in JET_BRANCHES:
        out[name] = np.concatenate([r[name] for r in results])
    which = np.concatenate([np.full(len(r["counts"]), PROCESSES[t["process"]].label) for t, r in zip(tasks, results)])
    for label in JETCLASS_LABELS:
        out[label] = (which == label).astype(np.int32)
    return out


def _run_pool(tasks, num_procs: int, bar):
    """Run ``tasks`` (``generate_jets`` keyword arguments) in worker processes; results in task order.

    Uses the platform's default start method (fork on Linux up to Python 3.13: works from scripts without a
    ``__main__`` guard and from stdin; spawn elsewhere, which needs the guard). A worker that dies breaks the
    pool with an error instead of being restarted forever, as ``multiprocessing.Pool`` would.
    """
    import concurrent.futures as cf
    import multiprocessing as mp
    import queue as queue_module

    ctx = mp.get_context()
    progress = ctx.Queue()
    with cf.ProcessPoolExecutor(num_procs, mp_context=ctx, initializer=_init_worker, initargs=(progress,)) as pool:
        futures = []
        try:
            futures = [pool.submit(_run_task, t) for t in tasks]
            while True:
                try:
                    bar.update(progress.get(timeout=0.2))
                    continue
                except queue_module.Empty:
                    pass
                for f in futures:
                    if f.done() and f.exception() is not None:
                        raise f.exception()
                if all(f.done() for f in futures):
                    return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            for proc in list(getattr(pool, "_processes", {}).values()):  # stop the running workers too
                proc.terminate()
            raise
