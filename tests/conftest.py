"""Shared fixtures: toy jets written as real JetClass-layout TTrees, and the shared real samples."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import awkward as ak
import numpy as np
import pytest

from omnijet_weaver.io.files import write_root

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
DATA_CONFIG = ROOT / "data_configs" / "qg_top.yaml"
NETWORK_CONFIGS = ROOT / "network_configs"


def toy_jets(n: int, seed: int = 0, top_fraction: float = 0.5, max_particles: int = 60) -> dict:
    """Toy jets in the JetClass layout: 1-prong "QCD" and 3-prong "top" jets of 500-1000 GeV.

    Constituents are spread around the prong axes (a few with |delta| > 0.8, outside the jet cone), so
    every path of the feature transform is exercised. Returns the branches as numpy / awkward arrays.
    """
    rng = np.random.default_rng(seed)
    is_top = rng.random(n) < top_fraction
    jet_pt = rng.uniform(500, 1000, n)
    jet_eta = rng.uniform(-2, 2, n)
    jet_phi = rng.uniform(-np.pi, np.pi, n)
    counts = np.clip(rng.poisson(np.where(is_top, 40, 25)), 2, max_particles)
    cols = {k: [] for k in ("px", "py", "pz", "energy", "deta", "dphi")}
    for i in range(n):
        k = counts[i]
        prongs = 3 if is_top[i] else 1
        axes = rng.normal(0, 0.25 if prongs == 3 else 0.0, (prongs, 2))
        which = rng.integers(0, prongs, k)
        d = axes[which] + rng.normal(0, 0.05, (k, 2))
        d[rng.random(k) < 0.05] *= 8  # a few outside the cone
        frac = rng.dirichlet(np.full(k, 0.6))
        pt = frac * jet_pt[i] + rng.uniform(0.05, 0.5, k)  # no exact ties in pT
        order = np.argsort(-pt)
        pt, d = pt[order], d[order]
        eta, phi = jet_eta[i] + d[:, 0], jet_phi[i] + d[:, 1]
        cols["px"].append(pt * np.cos(phi))
        cols["py"].append(pt * np.sin(phi))
        cols["pz"].append(pt * np.sinh(eta))
        cols["energy"].append(pt * np.cosh(eta))
        cols["deta"].append(d[:, 0])
        cols["dphi"].append(d[:, 1])
    parts = {f"part_{k}": ak.Array([np.asarray(x, dtype=np.float32) for x in v]) for k, v in cols.items()}
    px, py, pz, e = (ak.sum(parts[f"part_{k}"], axis=1).to_numpy() for k in ("px", "py", "pz", "energy"))
    pt_sum = np.hypot(px, py)
    return {
        **parts,
        "jet_pt": pt_sum.astype(np.float32),
        "jet_eta": np.arcsinh(pz / pt_sum).astype(np.float32),
        "jet_phi": np.arctan2(py, px).astype(np.float32),
        "jet_energy": e.astype(np.float32),
        "jet_nparticles": counts.astype(np.float32),
        "label_QCD": (~is_top).astype(np.int32),
        "label_Tbqq": is_top.astype(np.int32),
    }


@pytest.fixture(scope="session")
def toy_root_files(tmp_path_factory):
    """Two small toy TTrees (train, val) in the JetClass layout."""
    folder = tmp_path_factory.mktemp("toy")
    paths = []
    for i, n in enumerate((384, 128)):
        path = folder / f"toy_{i}.root"
        write_root(path, toy_jets(n, seed=i))
        paths.append(path)
    return paths


def shared_file(*parts) -> pathlib.Path:
    """A file of ../shared/data, or skip the test when it is absent (a user's clone has none)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not available")
    return path


def run_weaver(args, cwd, timeout=600):
    """Run the real ``weaver`` command line; returns the completed process (output captured)."""
    cmd = [os.path.join(os.path.dirname(sys.executable), "weaver")]
    env = dict(os.environ, OMP_NUM_THREADS="2")
    proc = subprocess.run(cmd + [str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)
    if proc.returncode != 0:
        raise AssertionError(f"weaver failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc
