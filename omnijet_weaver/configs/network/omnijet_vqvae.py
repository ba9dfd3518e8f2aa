"""weaver network config: train the OmniJet-alpha VQ-VAE tokenizer on ParT's kin inputs.

    weaver --data-config data_configs/qg_top.yaml --network-config network_configs/omnijet_vqvae.py \
        --data-train ... --data-val ... --model-prefix out/vqvae --optimizer adamw --start-lr 1e-3

Options (``-o name value``) are the arguments of ``omnijet_weaver.models.tokenizer.VQVAE``, e.g.
``-o codebook_size 512 -o conditional False``. The saved ``out/vqvae_best_epoch_state.pt`` describes itself.
"""

from omnijet_weaver.weaver.loops import evaluate, train
from omnijet_weaver.weaver.networks import vqvae_model


def get_model(data_config, **kwargs):
    return vqvae_model(data_config, **kwargs)


def get_loss(data_config, **kwargs):
    return None  # the loss is computed inside the model (reconstruction + alpha * VQ)


def get_train_fn(data_config, **kwargs):
    return train


def get_evaluate_fn(data_config, **kwargs):
    return evaluate
