#!/usr/bin/env python
"""Token quality of a tokenizer checkpoint on held-back jets: codebook usage and jet-mass resolution.

    python scripts/eval_tokenizer.py --tokenizer out/vqvae_best_epoch_state.pt \
        --data-config data_configs/qg_top.yaml top_test.root qcd_test.root
"""

import argparse
import json

from omnijet_weaver.evaluation.reconstruction import reconstruct_jets, reconstruction_summary
from omnijet_weaver.models.tokenizer import load_tokenizer


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+")
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--data-config", required=True)
    p.add_argument("--max-jets", type=int, default=None)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    tok = load_tokenizer(args.tokenizer)
    from weaver.utils.dataset import SimpleIterDataset

    names = SimpleIterDataset({}, args.data_config, for_training=False).config.label_value
    rec = reconstruct_jets(tok, args.data_config, args.files, device=args.device, max_jets=args.max_jets)
    print(json.dumps({"tokenizer": tok.config, **reconstruction_summary(rec, class_names=names)}, indent=2))


if __name__ == "__main__":
    main()
