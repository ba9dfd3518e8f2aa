"""weaver network config: generative pre-training of OmniJet-alpha (GPT on the frozen tokenizer's tokens).

    weaver --data-config data_configs/qg_top.yaml --network-config network_configs/omnijet_gpt.py \
        -o tokenizer "'out/vqvae_best_epoch_state.pt'" --data-train ... --model-prefix out/gpt \
        --optimizer adam --start-lr 1e-3

Reads ParT kin inputs (tokenized on the fly) or token files (``--data-config data_configs/tokens.yaml``).
Options: ``tokenizer`` (path, required), ``embed_dim``, ``num_blocks``, ``num_heads``, ``ff_dim``.
"""

from omnijet_weaver.weaver.loops import evaluate, train
from omnijet_weaver.weaver.networks import gpt_model


def get_model(data_config, **kwargs):
    return gpt_model(data_config, **kwargs)


def get_loss(data_config, **kwargs):
    return None  # the next-token loss is computed inside the model


def get_train_fn(data_config, **kwargs):
    return train


def get_evaluate_fn(data_config, **kwargs):
    return evaluate
