"""weaver network config: the OmniJet-alpha tagger, a drop-in replacement for ParT's network config.

    weaver --data-config data_configs/qg_top.yaml --network-config network_configs/omnijet_cls.py ...

Fine-tunes the packaged generative backbone by default. Options: ``-o pretrained "'out/gpt.pt'"`` (another
generative checkpoint), ``-o pretrained None`` (from scratch), ``-o freeze_backbone True`` (train the head only).
weaver's ``--load-model-weights out/gpt_best_epoch_state.pt`` works too.
"""

from omnijet_weaver.networks import tagger_model


def get_model(data_config, **kwargs):
    return tagger_model(data_config, **kwargs)


def get_loss(data_config, **kwargs):
    import torch

    return torch.nn.CrossEntropyLoss()
