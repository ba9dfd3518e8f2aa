"""omnijet-weaver-make-jets: Pythia8 + FastJet jets in the JetClass layout (skipped without the pythia extra)."""

from __future__ import annotations

import subprocess
import sys

import awkward as ak
import numpy as np
import pytest

pytest.importorskip("pythia8mc")
pytest.importorskip("fastjet")

from conftest import DATA_CONFIG  # noqa: E402

from omnijet_weaver.constants import JET_BRANCHES, JETCLASS_LABELS, TREE_NAME  # noqa: E402
from omnijet_weaver.io.jetclass import jet_masses  # noqa: E402
from omnijet_weaver.io.pythia import (  # noqa: E402
    PARTICLE_BRANCHES,
    PythiaSettingError,
    make_jets,
    parse_processes,
)

N_FILE = 5  # jets per process in the command-line file
N_PHYSICS = 40  # jets per process in the physics sample


def run_cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "omnijet_weaver.cli.make_jets", *map(str, args)],
                          capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"make-jets failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def read_tree(path) -> dict:
    import uproot

    with uproot.open(path) as f:
        return {k: f[TREE_NAME][k].array() for k in f[TREE_NAME].keys()}


@pytest.fixture(scope="module")
def cli_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("make_jets") / "jets.root"
    proc = run_cli("--process", "top", "qcd", "--num-jets", N_FILE, "--workers", 2, "--seed", 7,
                   "--output", path, "--no-progress")
    return path, proc


@pytest.fixture(scope="module")
def physics():
    return make_jets(["top", "qcd"], N_PHYSICS, seed=11, workers=2, progress=False)


def test_cli_file_is_a_jetclass_ttree(cli_file):
    from omnijet_weaver.io.files import root_tree_kinds

    path, proc = cli_file
    assert proc.stdout == ""  # Pythia's printout is silenced
    assert root_tree_kinds(path) == {TREE_NAME: "TTree"}
    arrays = read_tree(path)
    for name in PARTICLE_BRANCHES + JET_BRANCHES + JETCLASS_LABELS:
        assert name in arrays, name
    assert len(arrays["jet_pt"]) == 2 * N_FILE
    assert arrays["part_px"].type.content.content.primitive == "float32"
    assert str(arrays["label_Tbqq"].type.content) == "int32"
    labels = np.stack([arrays[k].to_numpy() for k in JETCLASS_LABELS], 1)
    assert (labels.sum(1) == 1).all()
    assert arrays["label_Tbqq"].to_numpy().tolist() == [1] * N_FILE + [0] * N_FILE
    assert arrays["label_QCD"].to_numpy().tolist() == [0] * N_FILE + [1] * N_FILE
    np.testing.assert_array_equal(ak.num(arrays["part_px"]).to_numpy(), arrays["jet_nparticles"].to_numpy())


def test_weaver_reads_the_file_with_qg_top(cli_file):
    from omnijet_weaver.weaver.dataset import jet_loader

    path, _ = cli_file
    truth = read_tree(path)
    labels, masks, nparticles = [], [], []
    for X, y, Z in jet_loader(DATA_CONFIG, [path], batch_size=4):
        labels.append(y["_label_"].numpy())
        masks.append(X["pf_mask"].numpy().sum((1, 2)))
        nparticles.append(Z["jet_nparticles"].numpy())
        assert X["pf_points"].shape[1:] == (2, 128) and X["pf_vectors"].shape[1:] == (4, 128)
    labels, masks, nparticles = map(np.concatenate, (labels, masks, nparticles))
    assert len(labels) == 2 * N_FILE
    assert labels.tolist() == truth["label_Tbqq"].to_numpy().tolist()  # 1 for top, 0 for QCD
    np.testing.assert_array_equal(masks, np.minimum(nparticles, 128))
    np.testing.assert_array_equal(nparticles, truth["jet_nparticles"].to_numpy())


def test_same_seed_same_file_other_seed_other_jets(cli_file, tmp_path):
    path, _ = cli_file
    again = tmp_path / "again.root"
    run_cli("--process", "top", "qcd", "--num-jets", N_FILE, "--workers", 2, "--seed", 7, "--output", again,
            "--no-progress")
    a, b = read_tree(path), read_tree(again)
    assert a.keys() == b.keys()
    for k in a:
        assert ak.all(ak.ravel(a[k]) == ak.ravel(b[k])), k  # ROOT headers carry a time stamp; contents equal
    other = make_jets("qcd", 3, seed=8, workers=2, progress=False)
    assert not np.array_equal(other["jet_pt"], a["jet_pt"].to_numpy()[N_FILE:N_FILE + 3])


def test_physics(physics):
    j = physics
    top = j["label_Tbqq"] == 1
    qcd = j["label_QCD"] == 1
    assert top.sum() == N_PHYSICS and qcd.sum() == N_PHYSICS
    px, py, pz, e = (ak.sum(ak.values_astype(j[f"part_{k}"], np.float64), axis=1).to_numpy()
                     for k in ("px", "py", "pz", "energy"))
    mass = np.sqrt(np.maximum(e**2 - px**2 - py**2 - pz**2, 0))
    # the demo's physics check sums the float32 branches: E^2 - p^2 cancels, so 1e-7 becomes up to 1e-3 on m
    np.testing.assert_allclose(jet_masses(j), mass, rtol=1e-3)
    assert 140 < np.median(mass[top]) < 200, np.median(mass[top])
    assert np.median(mass[qcd]) < np.median(mass[top]) - 30
    n = j["jet_nparticles"]
    assert 20 < np.median(n[top]) < 150 and 20 < np.median(n[qcd]) < 150
    np.testing.assert_array_equal(n, ak.num(j["part_px"]).to_numpy())
    assert ((j["jet_pt"] > 500) & (j["jet_pt"] < 1000)).all()
    assert (np.abs(j["jet_eta"]) < 2).all()
    np.testing.assert_allclose(np.hypot(px, py), j["jet_pt"], rtol=1e-3)
    np.testing.assert_allclose(e, j["jet_energy"], rtol=1e-3)
    # constituents pT-ordered, relative angles consistent with the 4-vectors
    pt = np.hypot(j["part_px"], j["part_py"])
    assert ak.all(pt[:, :-1] >= pt[:, 1:])
    eta = np.arcsinh(j["part_pz"] / pt)
    phi = np.arctan2(j["part_py"], j["part_px"])
    deta = eta - j["jet_eta"]
    dphi = np.mod(phi - j["jet_phi"] + np.pi, 2 * np.pi) - np.pi
    assert ak.max(np.abs(deta - j["part_deta"])) < 1e-3
    assert ak.max(np.abs(np.mod(dphi - j["part_dphi"] + np.pi, 2 * np.pi) - np.pi)) < 1e-3
    assert ak.all((j["part_dphi"] > -np.pi) & (j["part_dphi"] <= np.pi))
    # most of the jet within the cone
    assert np.median(ak.mean(np.hypot(j["part_deta"], j["part_dphi"]) < 0.8, axis=1)) > 0.95
    # exactly one particle type per constituent, consistent with the charge
    types = sum(j[k] for k in ("part_isChargedHadron", "part_isNeutralHadron", "part_isPhoton",
                               "part_isElectron", "part_isMuon"))
    assert ak.all(types == 1)
    charged = j["part_charge"] != 0
    assert ak.all(charged == ((j["part_isChargedHadron"] + j["part_isElectron"] + j["part_isMuon"]) == 1))
    assert ak.all(j["part_energy"] > 0)


def test_jet_record_by_hand():
    """Two constituents (px, py, pz, E, PDG id, charge): pT-ordered, relative angles to the summed axis, the jet
    four-momentum sums; pid and charge give the type flags."""
    from omnijet_weaver.io.pythia import _jet_record

    soft = (3.0, 4.0, 0.0, 5.0, 22, 0)  # a photon, pT 5, eta 0, phi atan2(4, 3)
    hard = (0.0, 12.0, 5.0, 13.0, 211, 1)  # a pi+, pT 12, eta asinh(5 / 12), phi pi / 2
    cols, (jpt, jeta, jphi, e, n) = _jet_record(np.array([soft, hard], dtype=np.float64))
    assert (jpt, e, n) == (pytest.approx(np.hypot(3, 16)), 18.0, 2)
    assert jeta == pytest.approx(np.arcsinh(5 / np.hypot(3, 16))) and jphi == pytest.approx(np.arctan2(16, 3))
    np.testing.assert_array_equal(cols["part_px"], [0.0, 3.0])  # the hard one first
    np.testing.assert_allclose(cols["part_deta"], [np.arcsinh(5 / 12) - jeta, -jeta])
    np.testing.assert_allclose(cols["part_dphi"], [np.pi / 2 - jphi, np.arctan2(4, 3) - jphi])
    assert list(cols)[:6] == list(PARTICLE_BRANCHES[:6])
    assert cols["part_isChargedHadron"].tolist() == [True, False] and cols["part_isPhoton"].tolist() == [False, True]


def test_boson_jets():
    j = make_jets(["wqq", "zqq", "hbb"], 2, seed=3, workers=2, progress=False)
    for label in ("label_Wqq", "label_Zqq", "label_Hbb"):
        assert j[label].sum() == 2
    assert j["label_QCD"].sum() == 0 and j["label_Tbqq"].sum() == 0
    assert ((j["jet_pt"] > 500) & (j["jet_pt"] < 1000) & (np.abs(j["jet_eta"]) < 2)).all()


def test_process_names():
    assert parse_processes(["top", "qcd,top"]) == ("top", "qcd")
    assert parse_processes("all") == ("qcd", "top", "wqq", "zqq", "hbb")
    with pytest.raises(ValueError, match="unknown process 'tt'"):
        parse_processes("tt")


def test_unknown_pythia_setting_is_an_error():
    with pytest.raises(PythiaSettingError, match="Foo:bar"):
        make_jets("qcd", 1, workers=1, extra_settings=["Foo:bar = 1"], progress=False)


def test_cli_errors(tmp_path):
    out = tmp_path / "jets.root"
    proc = run_cli("--process", "ttbar", "--num-jets", 1, "--output", out, check=False)
    assert proc.returncode != 0 and "unknown process 'ttbar'" in proc.stderr
    out.write_bytes(b"")
    proc = run_cli("--process", "qcd", "--num-jets", 1, "--output", out, check=False)
    assert proc.returncode != 0 and "exists" in proc.stderr and "--overwrite" in proc.stderr
    proc = run_cli("--process", "qcd", "--num-jets", 1, "--output", tmp_path / "missing" / "jets.root", check=False)
    assert proc.returncode != 0 and "does not exist" in proc.stderr
    proc = run_cli("--process", "qcd", "--num-jets", 1, "--output", tmp_path / "x.root", "--set", "Foo:bar = 1",
                   check=False)
    assert proc.returncode != 0 and "Foo:bar" in proc.stderr


def test_missing_pythia_says_how_to_install(monkeypatch, tmp_path, capsys):
    from omnijet_weaver.cli import make_jets as cli

    monkeypatch.setitem(sys.modules, "pythia8mc", None)  # import fails as when not installed
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--process", "qcd", "--num-jets", "1", "--output", str(tmp_path / "jets.root")])
    assert exit_info.value.code != 0
    assert "pip install 'omnijet-weaver[pythia]'" in capsys.readouterr().err
