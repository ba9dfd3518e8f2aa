"""JetClass-layout I/O helpers: TTree writing, splitting, conversion."""

import awkward as ak
import numpy as np
import uproot
from conftest import toy_jets

from omnijet_weaver.io.files import convert_to_ttree, split_root, write_root


def test_split_root_keeps_every_jet_once(tmp_path):
    jets = toy_jets(25, seed=2)
    src = tmp_path / "all.root"
    write_root(src, jets)
    assert split_root(src, tmp_path / "a.root", tmp_path / "b.root", fraction=0.8) == (20, 5)
    a, b = (uproot.open(tmp_path / f)["tree"].arrays() for f in ("a.root", "b.root"))
    np.testing.assert_array_equal(np.concatenate([a["jet_pt"], b["jet_pt"]]), jets["jet_pt"])
    assert ak.all(ak.concatenate([a["part_px"], b["part_px"]]) == jets["part_px"])


def test_convert_parquet_to_ttree(tmp_path):
    jets = toy_jets(7, seed=3)
    pq = tmp_path / "jets.parquet"
    ak.to_parquet(ak.zip({k: ak.Array(v) for k, v in jets.items()}, depth_limit=1), pq)
    assert convert_to_ttree(pq, tmp_path / "jets.root") == 7
    t = uproot.open(tmp_path / "jets.root")["tree"]
    assert type(t).__name__.startswith("Model_TTree")
    np.testing.assert_allclose(t["jet_pt"].array().to_numpy(), jets["jet_pt"])
