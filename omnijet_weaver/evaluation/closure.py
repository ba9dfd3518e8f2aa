"""Closure test of a generator: a tagger trained on real jets classifies generated jets of each class.

    result = closure_test(TaggerSpec("tagger_best_epoch_state.pt"), {"real": real_by_class,
                          "generated": gen_by_class}, work / "closure")
    result["accuracy"]["generated"]["all"]      # its accuracy on the generated jets of the classes it knows

The tagger is any weaver classifier (ours, ``network_configs/omnijet_cls.py``, or ParT's network config) with
``simple`` labels; it runs through the real ``weaver --predict`` on the jets written as ROOT files in the
JetClass layout (massless constituents around a nominal axis, :func:`omnijet_weaver.io.jetclass.jetclass_arrays`),
so its data config may read only kinematic branches. A generator that makes what it is asked for gives the same
accuracy on its jets of a class as on real jets of that class.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import torch

from ..constants import LABEL_PREFIX
from ..errors import ConfigError, InputFileError
from .reconstruction import JetSample


@dataclasses.dataclass
class TaggerSpec:
    """A weaver classifier: its weights (``--model-prefix`` of ``weaver --predict``), network config, data
    config (None: the study's) and network options (weaver ``-o NAME VALUE``)."""

    weights: str
    network_config: str | None = None  # None: the shipped omnijet_cls.py
    data_config: str | None = None
    options: tuple = ()

    def resolved(self, data_config) -> "TaggerSpec":
        """This spec with every path filled in and checked (one-line errors naming the option)."""
        from ..weaver.runner import repo_configs

        network = self.network_config or repo_configs()["network"]
        data = self.data_config or data_config
        for what, path in (("--tagger", self.weights), ("--tagger-network-config", network),
                           ("--tagger-data-config", data)):
            if path is None or not os.path.isfile(path):
                raise ConfigError(f"{what} {path!r} is not a file: give the path of an existing file")
        return dataclasses.replace(self, network_config=str(network), data_config=str(data))


def tagger_classes(spec: TaggerSpec) -> list[str]:
    """Class names of the tagger's data config (its ``simple`` labels without ``label_``), in its order."""
    from ..weaver.dataset import label_classes, read_data_config

    known = label_classes(read_data_config(spec.data_config))
    if not known:
        raise ConfigError(f"--tagger-data-config {spec.data_config!r} has no simple labels (label_QCD, ...): the "
                          "closure test needs a classifier of jet classes")
    return known


def sample_arrays(sample: JetSample, labels) -> dict:
    """The jets of ``sample`` as JetClass-layout branches, jet i with the label branch ``labels[i]`` set."""
    from ..io.jetclass import jetclass_arrays

    pt, eta, phi = (torch.from_numpy(a) for a in sample.constituents())
    mask = torch.from_numpy(sample.mask)
    return jetclass_arrays(torch.where(mask, pt, 0.0), eta, phi, mask, labels=labels)


def write_samples(path, samples: dict) -> None:
    """``{class: JetSample}`` into one ROOT file (TTree ``tree``), the classes one after the other."""
    from ..io.files import write_jets

    together = JetSample(np.concatenate([s.features for s in samples.values()]),
                         np.concatenate([s.mask for s in samples.values()]))
    labels = [LABEL_PREFIX + c for c, s in samples.items() for _ in range(len(s))]
    write_jets(path, sample_arrays(together, labels))


def check_tagger_inputs(spec: TaggerSpec, path) -> None:
    """The tagger's data config reads only branches the written jets have (before ``weaver`` runs)."""
    from ..weaver.dataset import check_branches, check_data_config

    try:
        check_branches([os.fspath(path)], spec.data_config, config=check_data_config(spec.data_config, "tagger"))
    except InputFileError as err:
        raise ConfigError(f"the closure test's tagger reads inputs that generated jets do not have ({err}); use a "
                          "tagger trained with kinematic inputs only (e.g. data_configs/jetclass.yaml or "
                          "qg_top.yaml)") from None


def closure_test(spec: TaggerSpec, samples: dict, work: Path, device="cpu", log=None) -> dict:
    """Run the tagger on every sample and report its accuracy per class.

    Args:
        spec: a resolved :class:`TaggerSpec`.
        samples: ``{sample name: {class name: JetSample}}`` (e.g. ``real``, ``real reconstructed``,
            ``generated``); only the classes the tagger knows are used.
        work: folder for the jets as ROOT files (``<sample>.root``, spaces as ``_``), weaver's predictions
            (``pred_<sample>.root``) and its log (created).
        device: where weaver runs (``cuda:N`` -> ``--gpus N``).
    Returns:
        ``{"tagger": ..., "classes": [...], "accuracy": {sample: {class: acc, "all": acc}},
        "jets": {sample: {class: n}}, "confusion": {sample: {class: {predicted class: fraction}}}}``.
    """
    from ..weaver.runner import WeaverJob, WeaverRunner, read_class_predictions

    known = tagger_classes(spec)
    classes = [c for c in next(iter(samples.values())) if c in known]
    if not classes:
        raise ConfigError(f"the tagger's classes ({', '.join(known)}) include none of the generated classes")
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    groups = []
    for i, (name, by_class) in enumerate(samples.items()):
        tag = name.replace(" ", "_")
        path = work / f"{tag}.root"
        write_samples(path, {c: by_class[c] for c in classes})
        if i == 0:
            check_tagger_inputs(spec, path)
        groups.append((name, tag, path))
    dev = torch.device(device)
    gpus = str(dev.index or 0) if dev.type == "cuda" else ""
    args = ["--predict", "--data-test", *[f"{tag}:{path}" for _, tag, path in groups],
            "--data-config", spec.data_config, "--network-config", spec.network_config,
            "--model-prefix", spec.weights, "--predict-output", work / "pred.root", "--gpus", gpus,
            "--batch-size", "256", "--num-workers", "0", "--fetch-step", "1"]
    for key, value in spec.options:
        args += ["-o", key, value]
    runner = WeaverRunner(1, torch.get_num_threads(), cwd=work, display=os.fspath)
    runner.run([WeaverJob("closure test", args, work / "weaver.log")])
    label_names = [LABEL_PREFIX + c for c in known]
    out = {"tagger": dataclasses.asdict(spec), "classes": classes, "accuracy": {}, "jets": {}, "confusion": {}}
    for name, tag, _ in groups:
        truth, scores = read_class_predictions(work / f"pred_{tag}.root", label_names)
        pred = scores.argmax(1)
        idx = [known.index(c) for c in classes]
        ok = np.isin(truth, idx)
        out["accuracy"][name] = {c: float(np.mean(pred[truth == k] == k)) for c, k in zip(classes, idx)}
        out["accuracy"][name]["all"] = float(np.mean(pred[ok] == truth[ok]))
        out["jets"][name] = {c: int((truth == k).sum()) for c, k in zip(classes, idx)}
        out["confusion"][name] = {c: {p: float(np.mean(pred[truth == k] == j)) for j, p in enumerate(known)}
                                  for c, k in zip(classes, idx)}
        if log is not None:
            acc = out["accuracy"][name]
            per_class = ", ".join(f"{c} {acc[c]:.3f}" for c in classes)
            log(f"closure test, {name}: accuracy {acc['all']:.4f} ({per_class})")
    return out


__all__ = ["TaggerSpec", "closure_test", "sample_arrays", "tagger_classes", "write_samples"]
