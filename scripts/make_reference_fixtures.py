"""Make the reference fixtures of tests/test_reference.py with the reference OmniJet-alpha code itself.

Not run by the tests (they need none of this). It builds the reference models at small sizes with random
weights on the CPU, through the reference's own hydra configs and LightningModules, trains each for one step
(so the files hold optimizer, scheduler, loop and callback states like real training checkpoints), writes
them with ``trainer.save_checkpoint``, loads them back with the reference's ``load_from_checkpoint`` and
records the reference's outputs on real JetClass jets:

- tokenizers (``model_type`` VQVAENormFormer, Transformer, MLP): token ids (``tokenize_ak_array``), the
  decoded constituents (``reconstruct_ak_tokens``: pT, eta_rel, phi_rel) and the reconstruction of the full
  forward pass (features);
- generative model (``BackboneNextTokenPredictionLightning``): next-token logits of (start, tokens...);
- classifier (``BackboneClassificationLightning``, summation head): class logits of (start, tokens..., stop).

Reference code used (record these when you remake the fixtures):

- https://github.com/uhh-pd-ml/omnijet_alpha at commit 1c8d4429dcd11a9f56355d4d05c4ed2f908b00ed
- https://github.com/minyoungg/vqtorch at commit 02e60a19bd742c17b0bf3e1925f23796d54cbeac
- lightning 2.6.6, omegaconf 2.3.1, hydra-core 1.3.8, torch 2.13 (CPU)

Setup (a separate virtual environment; never the one omnijet-weaver is developed in)::

    python -m venv /tmp/refenv --system-site-packages
    /tmp/refenv/bin/pip install lightning omegaconf hydra-core vector
    /tmp/refenv/bin/pip install --no-deps -e /path/to/vqtorch
    # vqtorch imports `stringcolor` (coloured warnings) only; where it cannot be installed, a stand-in:
    echo 'def cs(text, *a, **k): return text' > $(/tmp/refenv/bin/python -c 'import site; print(site.getsitepackages()[0])')/stringcolor.py
    /tmp/refenv/bin/python scripts/make_reference_fixtures.py --reference /path/to/omnijet_alpha \
        --jets ../shared/data/real/JetClass_mixed500.root --output tests/data/reference

Two changes to the reference's behaviour, both outside what is compared: the k-means initialisation of the
codebook is marked done before the training step (it needs torchpq / cupy, CUDA only), and the classifier's
``model_step`` is run with its ``.to("cuda")`` calls pointed at the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REFERENCE_COMMIT = "1c8d4429dcd11a9f56355d4d05c4ed2f908b00ed"
VQTORCH_COMMIT = "02e60a19bd742c17b0bf3e1925f23796d54cbeac"

#: small sizes (CPU, fixtures of a few hundred kB)
CODES = 64
TOKENIZERS = {
    # name: (experiment, overrides)
    "tokenizer_normformer": ("experiment_tokenization_transformer", [
        "model.model_type=VQVAENormFormer", "model.model_kwargs.hidden_dim=16", "model.model_kwargs.num_blocks=2",
        "model.model_kwargs.num_heads=2", f"model.model_kwargs.vq_kwargs.num_codes={CODES}",
    ]),
    "tokenizer_transformer": ("experiment_tokenization_transformer", [
        "model.model_type=Transformer", "model.model_kwargs.hidden_dim=16", "model.model_kwargs.num_blocks=2",
        "model.model_kwargs.num_heads=4", "model.model_kwargs.latent_dim=16",
        f"model.model_kwargs.vq_kwargs.num_codes={CODES}", "model.model_kwargs.vq_kwargs.affine_lr=0.0",
        "model.model_kwargs.vq_kwargs.sync_nu=2", "model.model_kwargs.vq_kwargs.replace_freq=20",
    ]),
    "tokenizer_mlp": ("experiment_tokenization_mlp", [
        "model.model_kwargs.encoder_layers=[16,16,16]", "model.model_kwargs.decoder_layers=[16,16,16]",
        f"model.model_kwargs.vq_kwargs.num_codes={CODES}",
    ]),
}
GPT_SIZES = ["model.model_kwargs.embedding_dim=32", "model.model_kwargs.n_heads=4", "model.model_kwargs.n_GPT_blocks=2",
             f"model.model_kwargs.vocab_size={CODES + 2}"]


def compose(reference: Path, experiment: str, overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(reference / "configs"), version_base="1.3"):
        # hydra's colorlog plugin is not needed to compose (it only colours logs)
        return hydra_compose("train.yaml", overrides=[f"experiment={experiment}", "hydra/job_logging=default",
                                                      "hydra/hydra_logging=default", *overrides])


def randomize(module, seed: int):
    """Random weights everywhere (the reference zero-initialises parts of its blocks, which would hide them)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.endswith("weight") and "norm" in name.split(".")[-2] or ".mlp.0." in name or "layernorm" in name:
                p.copy_(1 + 0.3 * noise if name.endswith("weight") else 0.1 * noise)
            elif "affine_transform" in name:
                p.copy_(0.1 * noise)
            elif "codebook" in name:
                p.copy_(noise)
            else:
                p.copy_(noise / max(1, p.shape[-1]) ** 0.5 if p.dim() > 1 else 0.1 * noise)


def fit_save_reload(model, batches, path: Path, workdir: Path, before_reload=None):
    """One training step through a real Lightning Trainer (with a ModelCheckpoint callback), save it at ``path``
    (its folder made), call ``before_reload()`` if given, and return the checkpoint loaded back with the
    reference's own ``load_from_checkpoint``, in eval mode."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    trainer = L.Trainer(max_steps=1, accelerator="cpu", devices=1, logger=False, limit_val_batches=0,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(workdir),
                        callbacks=[ModelCheckpoint(dirpath=str(workdir / "ckpts"))], num_sanity_val_steps=0)
    from torch.utils.data import DataLoader

    n = len(next(iter(batches.values())))
    samples = [{k: v[i] for k, v in batches.items()} for i in range(n)]
    trainer.fit(model, train_dataloaders=DataLoader(samples, batch_size=n))
    path.parent.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(str(path))
    if before_reload is not None:
        before_reload()
    return type(model).load_from_checkpoint(path, map_location="cpu", weights_only=False).eval()


def read_jets(path: str, num_jets: int, max_len: int = 128):
    """Real jets as weaver's ParT kin inputs (float32, pT-ordered as in JetClass) + per-jet reference features."""
    import awkward as ak
    import uproot

    tree = uproot.open(path)["tree"]
    arrays = tree.arrays(["part_px", "part_py", "part_pz", "part_energy", "part_deta", "part_dphi"])
    labels = tree.arrays([k for k in tree.keys() if k.startswith("label_")], library="np")
    n_all = len(arrays)
    pick = np.linspace(0, n_all - 1, num_jets).round().astype(int)
    arrays = arrays[pick]
    label_names = sorted(labels)
    label = np.stack([labels[k][pick] for k in label_names], 1).argmax(1)
    n = ak.num(arrays.part_px)
    points = np.zeros((num_jets, 2, max_len), np.float32)
    vectors = np.zeros((num_jets, 4, max_len), np.float32)
    mask = np.zeros((num_jets, 1, max_len), np.float32)
    for i in range(num_jets):
        k = min(int(n[i]), max_len)
        for j, f in enumerate(["part_deta", "part_dphi"]):
            points[i, j, :k] = ak.to_numpy(arrays[f][i])[:k]
        for j, f in enumerate(["part_px", "part_py", "part_pz", "part_energy"]):
            vectors[i, j, :k] = ak.to_numpy(arrays[f][i])[:k]
        mask[i, 0, :k] = 1
    # the reference's particle features, from the very same numbers: pT = hypot(px, py), eta_rel = deta, ...
    pt = np.hypot(vectors[:, 0], vectors[:, 1])
    feats = ak.Array({
        "part_pt": [pt[i, : int(mask[i, 0].sum())] for i in range(num_jets)],
        "part_etarel": [points[i, 0, : int(mask[i, 0].sum())] for i in range(num_jets)],
        "part_phirel": [points[i, 1, : int(mask[i, 0].sum())] for i in range(num_jets)],
    })
    feats = ak.values_astype(feats, np.float32)
    return {"points": points, "vectors": vectors, "mask": mask, "label": label}, feats, label_names


def padded(jagged, length: int, dtype):
    import awkward as ak

    out = np.zeros((len(jagged), length), dtype)
    m = np.zeros((len(jagged), length), bool)
    for i, row in enumerate(jagged):
        row = ak.to_numpy(row)
        out[i, : len(row)] = row
        m[i, : len(row)] = True
    return out, m


def make_tokenizer(reference: Path, name: str, jets, feats, out: Path, work: Path, seed: int):
    import awkward as ak
    import hydra
    import torch
    import torch.nn.functional as F
    from gabbro.utils.arrays import ak_pad, ak_select_and_preprocess, ak_to_np_stack
    from omegaconf import OmegaConf

    experiment, overrides = TOKENIZERS[name]
    cfg = compose(reference, experiment, overrides)
    model = hydra.utils.instantiate(cfg.model)
    randomize(model, seed)
    model.model.vqlayer.data_initialized.fill_(1)  # k-means init needs torchpq (CUDA): mark it done
    model.on_train_start = lambda: None  # reads the datamodule's feature dict, which this script has none of
    pp_dict = OmegaConf.to_container(cfg.data.dataset_kwargs_common.feature_dict)

    x = ak_select_and_preprocess(feats, pp_dict=json.loads(json.dumps(pp_dict)))
    xp, m = ak_pad(x, maxlen=128, return_mask=True)
    xt = torch.from_numpy(ak_to_np_stack(xp, names=list(pp_dict))).float()
    mt = torch.from_numpy(m.to_numpy()).float()
    batch = {"part_features": xt[:16], "part_mask": mt[:16], "jet_type_labels": torch.zeros(16, dtype=torch.long)}
    folder = out / name

    def save_config():  # as gabbro/train.py writes it beside the checkpoints
        with open(folder / "config.yaml", "w") as f:
            OmegaConf.save(cfg, f)

    ref = fit_save_reload(model, batch, folder / "model_ckpt.ckpt", work / name, before_reload=save_config)
    tokens = ref.tokenize_ak_array(feats, json.loads(json.dumps(pp_dict)), hide_pbar=True)
    with torch.no_grad():
        x_reco, vq_out = ref(xt, mt)
    if name == "tokenizer_transformer":
        # the reference's reconstruct_ak_tokens calls decoder(z_q) without the mask its Transformer needs (a
        # TypeError): decode exactly as its forward pass does instead
        tok, tm = padded(tokens, 128, np.int64)
        vq = ref.model.vqlayer
        codebook = vq.affine_transform(vq.codebook.weight) if hasattr(vq, "affine_transform") else vq.codebook.weight
        with torch.no_grad():
            f = ref.model.decoder(F.embedding(torch.from_numpy(tok), codebook), mask=torch.from_numpy(tm).float())
        names = list(pp_dict)
        reco_feats = ak.Array({k: [f[i, : int(tm[i].sum()), j].numpy() for i in range(len(tok))]
                               for j, k in enumerate(names)})
        decoded = ak_select_and_preprocess(reco_feats, json.loads(json.dumps(pp_dict)), inverse=True)
    else:
        decoded = ref.reconstruct_ak_tokens(tokens, json.loads(json.dumps(pp_dict)), hide_pbar=True)
    tok, tm = padded(tokens, 128, np.int64)
    expected = {
        "tokens": tok, "token_mask": tm,
        "decoded_pt": padded(decoded["part_pt"], 128, np.float32)[0],
        "decoded_eta_rel": padded(decoded["part_etarel"], 128, np.float32)[0],
        "decoded_phi_rel": padded(decoded["part_phirel"], 128, np.float32)[0],
        # full forward pass in the reference's feature order (pp_dict's keys)
        "forward_reco": x_reco.numpy(), "forward_mask": mt.numpy().astype(bool),
        "forward_tokens": vq_out["q"].numpy(),
    }
    np.savez_compressed(folder / "expected.npz", feature_order=np.array(list(pp_dict)), **expected)
    return tokens, ref


def sequences(tokens, codes: int, length: int = 130):
    """(start 0, tokens + 1, stop codes + 1) per jet, padded with 0 as the reference's dataset pads."""
    seq = np.zeros((len(tokens), length), np.int64)
    m = np.zeros((len(tokens), length), bool)
    for i, row in enumerate(tokens):
        row = [0, *(np.asarray(row) + 1).tolist(), codes + 1]
        seq[i, : len(row)] = row
        m[i, : len(row)] = True
    return seq, m


def make_generative(reference: Path, tokens, out: Path, work: Path, seed: int):
    import hydra
    import torch

    cfg = compose(reference, "example_experiment_generative", GPT_SIZES)
    model = hydra.utils.instantiate(cfg.model)
    randomize(model, seed)
    model.on_train_start = lambda: None  # reads the datamodule's feature dict, which this script has none of
    seq, m = sequences(tokens, CODES)
    inp, tgt, im = seq[:, :-1], seq[:, 1:], m[:, 1:]  # part_token_id_without_last / _without_first, their mask
    feats = torch.from_numpy(np.stack([inp, tgt], -1)[:, :128]).float()
    batch = {"part_features": feats[:16], "part_mask": torch.from_numpy(im[:, :128][:16]).float()}
    folder = out / "generative"
    ref = fit_save_reload(model, batch, folder / "generative.ckpt", work / "generative")
    x = torch.from_numpy(inp[:, :128])
    xm = torch.from_numpy(im[:, :128])
    with torch.no_grad():
        logits = ref(x, xm.float())
    np.savez_compressed(folder / "expected.npz", inputs=x.numpy(), input_mask=xm.numpy(), logits=logits.numpy())


def make_classifier(reference: Path, tokens, labels, out: Path, work: Path, seed: int):
    import hydra
    import torch
    import torch.nn.functional as F
    from gabbro.models.backbone import BackboneClassificationLightning

    def model_step_on_cpu(self, batch):  # the reference's model_step with .to("cuda") pointed at the CPU
        X, mask = batch["part_features"].squeeze().long(), batch["part_mask"]
        logits = self.forward(X, mask)
        labels = F.one_hot(batch["jet_type_labels"].squeeze(), num_classes=self.head.n_out_nodes).float()
        return self.criterion(logits, labels), logits, labels

    BackboneClassificationLightning.model_step = model_step_on_cpu
    cfg = compose(reference, "example_experiment_classification",
                  [*GPT_SIZES, "model.model_kwargs.backbone_weights_path=null", "model.model_kwargs.n_out_nodes=3"])
    model = hydra.utils.instantiate(cfg.model)
    randomize(model, seed)
    model.on_train_start = lambda: None
    seq, m = sequences(tokens, CODES, 128)
    x, xm = torch.from_numpy(seq), torch.from_numpy(m)
    batch = {"part_features": x[:16].float(), "part_mask": xm[:16].float(),
             "jet_type_labels": torch.from_numpy(labels[:16] % 3)}
    folder = out / "classifier"
    ref = fit_save_reload(model, batch, folder / "classifier.ckpt", work / "classifier")
    with torch.no_grad():
        logits = ref(x, xm.float())
    np.savez_compressed(folder / "expected.npz", inputs=x.numpy(), input_mask=xm.numpy(), logits=logits.numpy())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", required=True, type=Path, help="checkout of uhh-pd-ml/omnijet_alpha")
    p.add_argument("--jets", required=True, help="JetClass-layout ROOT file (real jets)")
    p.add_argument("--output", required=True, type=Path)
    p.add_argument("--num-jets", type=int, default=32)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    sys.path.insert(0, str(args.reference))
    os.environ.setdefault("PROJECT_ROOT", str(args.reference))
    import lightning as L
    import torch

    torch.manual_seed(args.seed)
    L.seed_everything(args.seed, verbose=False)
    args.output.mkdir(parents=True, exist_ok=True)
    jets, feats, label_names = read_jets(args.jets, args.num_jets)
    np.savez_compressed(args.output / "jets.npz", **jets, label_names=np.array(label_names))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tokens = None
        for i, name in enumerate(TOKENIZERS):
            t, _ = make_tokenizer(args.reference, name, jets, feats, args.output, work, args.seed + i)
            tokens = t if name == "tokenizer_normformer" else tokens
        make_generative(args.reference, tokens, args.output, work, args.seed + 10)
        make_classifier(args.reference, tokens, jets["label"], args.output, work, args.seed + 20)
    import lightning
    import omegaconf

    with open(args.output / "PROVENANCE.json", "w") as f:
        json.dump({"omnijet_alpha_commit": REFERENCE_COMMIT, "vqtorch_commit": VQTORCH_COMMIT,
                   "lightning": lightning.__version__, "omegaconf": omegaconf.__version__, "torch": torch.__version__,
                   "jets": os.path.basename(args.jets), "num_jets": args.num_jets, "seed": args.seed,
                   "generative_and_classifier_tokens": "tokenizer_normformer"}, f, indent=1)
    print(f"wrote fixtures to {args.output}")


if __name__ == "__main__":
    main()
