"""``weaver --export-onnx`` of the tagger: onnxruntime gives the torch model's outputs on real jets.

weaver traces the model with all-ones dummy inputs (every particle outside the 0.8 cone) and declares the batch
size and the number of particles dynamic, so the exported graph must not depend on the dummy's values or sizes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import DATA_CONFIG, run_weaver, shared_file
from test_tagger import CLS_CONFIG, CONFIGS, INPUTS, load_data_config, make_checkpoints, mode_options

from omnijet_weaver.weaver.dataset import jet_loader
from omnijet_weaver.weaver.networks import tagger_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

#: The largest |onnxruntime - torch| allowed on the softmax outputs.
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def tagger(toy_root_files, tmp_path_factory):
    """A tagger checkpoint as weaver writes it (state dict of the fine-tuning model; a head off its init)."""
    folder = tmp_path_factory.mktemp("onnx")
    tok, gpt = make_checkpoints(folder, toy_root_files[0])
    model, _ = tagger_model(load_data_config(DATA_CONFIG), pretrained=str(gpt))
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(0.5 * torch.randn_like(p))  # spread the scores
    torch.save(model.state_dict(), folder / "cls_best_epoch_state.pt")
    return folder, gpt, folder / "cls_best_epoch_state.pt"


def export(tagger, data_config, name, extra=()):
    folder, gpt, state = tagger
    path = folder / name
    proc = run_weaver(
        ["--export-onnx", path, "--data-config", data_config, "--network-config", CLS_CONFIG,
         *mode_options("finetune", None, gpt), "--model-prefix", state, *extra],
        cwd=folder,
    )
    assert path.exists(), proc.stdout[-2000:] + proc.stderr[-2000:]
    onnx.checker.check_model(onnx.load(str(path)))
    return path


def torch_model(tagger, data_config):
    """The model as weaver builds it for the export (softmax outputs), with the checkpoint's weights."""
    _, gpt, state = tagger
    model, _ = tagger_model(load_data_config(data_config), pretrained=str(gpt), for_inference=True)
    model.load_state_dict(torch.load(state, weights_only=True))
    return model.eval()


def compare(session, model, X, length=None) -> float:
    """max |onnxruntime - torch| on the inputs X (cut to ``length`` particles)."""
    xs = {k: X[k][..., :length].contiguous() if length else X[k] for k in INPUTS}
    feed = {i.name: xs[i.name].numpy() for i in session.get_inputs()}
    (out,) = session.run(None, feed)
    with torch.no_grad():
        ref = model(*[xs[k] for k in INPUTS]).numpy()
    assert out.shape == ref.shape == (len(X["pf_mask"]), ref.shape[1])
    np.testing.assert_allclose(out.sum(1), 1, atol=1e-5)
    return float(np.abs(out - ref).max())


def check_session(path, model, loader_args, batch_sizes=(1, 7, 64), lengths=(None, 48, 5)) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    # pf_features is not used by the tagger (it tokenizes points, vectors and mask), so the exporter drops it,
    # as it drops ParT's unused pf_points
    assert {"pf_points", "pf_vectors", "pf_mask"} <= set(names) <= set(INPUTS)
    for i in session.get_inputs():
        assert isinstance(i.shape[0], str) and isinstance(i.shape[2], str), i.shape  # dynamic N and n_pf
    worst = 0.0
    for bs in batch_sizes:
        X, _, _ = next(iter(jet_loader(*loader_args, batch_size=bs)))
        for length in lengths:
            worst = max(worst, compare(session, model, X, length))
    # jets whose particles are all outside the cone (weaver's all-ones trace input) and empty jets
    ones = {k: torch.ones(3, *X[k].shape[1:]) for k in INPUTS}
    empty = {k: torch.zeros(2, *X[k].shape[1:]) for k in INPUTS}
    worst = max(worst, compare(session, model, ones), compare(session, model, empty))
    return worst


def test_export_onnx_matches_torch_on_toy_jetclass(tagger, toy_root_files):
    path = export(tagger, DATA_CONFIG, "toy.onnx")
    worst = check_session(path, torch_model(tagger, DATA_CONFIG), (DATA_CONFIG, [toy_root_files[1]]))
    print(f"ONNX vs torch, toy JetClass-layout jets: max |diff| = {worst:.3g}")
    assert worst <= TOLERANCE


def test_export_onnx_matches_torch_on_real_top_landscape(tagger):
    sample = shared_file("real", "TopLandscape_test_2000.parquet")
    config = CONFIGS / "toplandscape.yaml"
    path = export(tagger, config, "top.onnx", extra=["--onnx-opset", "17"])
    worst = check_session(path, torch_model(tagger, config), (config, [sample]), batch_sizes=(1, 33, 256))
    print(f"ONNX vs torch, real Top-landscape jets: max |diff| = {worst:.3g}")
    assert worst <= TOLERANCE
