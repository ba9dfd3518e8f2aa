"""weaver network config: the OmniJet-alpha tagger, a drop-in replacement for ParT's network config.

    weaver --data-config data_configs/qg_top.yaml --network-config network_configs/omnijet_cls.py ...

Fine-tunes the packaged generative backbone by default. Options: ``-o pretrained "'out/gpt.pt'"`` (another
generative checkpoint), ``-o pretrained None`` (from scratch), ``-o freeze_backbone True`` (train the head only),
``-o seed N`` (seeds the initialisation and weaver's shuffling), ``-o early_stopping N`` (best epoch on the
validation loss, stop after N epochs without improvement; off by default: weaver's own loops passed through, best
epoch on the validation accuracy). Every epoch is recorded in ``<model-prefix>_history.jsonl``. weaver's
``--load-model-weights out/gpt_best_epoch_state.pt`` works too (the sizes and tokenizer then come from that
checkpoint; weights that match no parameter, e.g. a ParT checkpoint, are an error). ParT's fine-tuning recipe
``--optimizer-option lr_mult '("fc.*",50)'`` becomes ``'("head.*",50)'`` (our head is ``head.*``).
"""

from omnijet_weaver.weaver.networks import tagger_evaluate_fn, tagger_model, tagger_train_fn


def get_model(data_config, **kwargs):
    return tagger_model(data_config, **kwargs)


def get_loss(data_config, **kwargs):
    import torch

    return torch.nn.CrossEntropyLoss()


def get_train_fn(data_config, **kwargs):
    return tagger_train_fn(data_config, **kwargs)  # ours always: weaver's loops passed through, recorded


def get_evaluate_fn(data_config, **kwargs):
    return tagger_evaluate_fn(data_config, **kwargs)
