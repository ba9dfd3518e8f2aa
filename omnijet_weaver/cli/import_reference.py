"""``omnijet-weaver-import-reference``: the published OmniJet-alpha checkpoints -> omnijet-weaver checkpoints.

    omnijet-weaver-import-reference --tokenizer checkpoints/vqvae_8192_tokens/model_ckpt.ckpt \\
        --output omnijet_tokenizer.pt
    omnijet-weaver-import-reference --tokenizer checkpoints/vqvae_8192_tokens/model_ckpt.ckpt \\
        --generative checkpoints/generative_8192_tokens/OmniJet_generative_model_UnintentionalPinscher_59.ckpt \\
        --output omnijet_gpt.pt
    omnijet-weaver-import-reference --tokenizer .../model_ckpt.ckpt --classifier my_classifier.ckpt \\
        --output omnijet_tagger.pt

Reads the PyTorch Lightning checkpoints of the reference code (github.com/uhh-pd-ml/omnijet_alpha, package
gabbro) safely (only tensors, OmegaConf hyper-parameters and optimizer settings; anything else is refused) and
writes one self-describing omnijet-weaver checkpoint: the tokenizer alone, the generative model holding it
(--generative; for omnijet-weaver-generate --checkpoint and weaver's omnijet_cls.py -o pretrained), or the
tagger holding it (--classifier). The tokenizer's feature scaling and cuts are read from the config.yaml its
training wrote (--config; default: config.yaml beside the checkpoint, or two folders up as the reference looks
for it). An option omnijet-weaver cannot represent exactly is refused, naming it. Nothing here needs the
reference code, Lightning or OmegaConf.
"""

from __future__ import annotations

import os
import sys

from . import command, command_parser
from . import options as opt

PROG = "omnijet-weaver-import-reference"


def parse_args(argv=None):
    p = command_parser(PROG, __doc__)
    p.add_argument("--tokenizer", required=True, type=opt.existing_file, metavar="CKPT",
                   help="the reference tokenizer checkpoint (VQVAELightning, e.g. vqvae_8192_tokens/model_ckpt.ckpt)")
    p.add_argument("--config", type=opt.existing_file, default=None, metavar="YAML",
                   help="the config.yaml of the tokenizer's training (feature scaling and cuts); default: "
                        "config.yaml beside --tokenizer, or two folders up")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--generative", type=opt.existing_file, default=None, metavar="CKPT",
                      help="a reference generative checkpoint (BackboneNextTokenPredictionLightning) trained on "
                           "this tokenizer's tokens: write the generative model")
    kind.add_argument("--classifier", type=opt.existing_file, default=None, metavar="CKPT",
                      help="a reference classifier checkpoint (BackboneClassificationLightning, summation head) "
                           "trained on this tokenizer's tokens: write the tagger")
    opt.add_output_options(p, suffixes=(".pt",))
    return p.parse_args(argv)


def default_config(tokenizer: str) -> str:
    """The config.yaml of a reference tokenizer checkpoint: beside it, or two folders up (as gabbro looks)."""
    from ..errors import ConfigError

    folder = os.path.dirname(os.path.abspath(tokenizer))
    candidates = [os.path.join(folder, "config.yaml"), os.path.join(os.path.dirname(os.path.dirname(folder)),
                                                                   "config.yaml")]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise ConfigError(f"no config.yaml beside {tokenizer!r} nor two folders up: the reference keeps the tokenizer's "
                      f"feature scaling and cuts there; pass it with --config")


def read_config(path: str) -> dict:
    """A reference config.yaml (OmegaConf.save output) as plain values."""
    import yaml

    from ..errors import ConfigError

    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path!r} is not a readable YAML file ({type(err).__name__}: "
                          f"{' '.join(str(err).split())[:200]})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path!r} holds a {type(config).__name__}, not a training config")
    return config


@command(PROG)
def main(argv=None):
    args = parse_args(argv)

    import torch

    from ..atomic import atomic_output
    from ..io.files import check_output_path
    from ..models import reference

    output = check_output_path(args.output, args.overwrite, suffixes=(".pt",))  # before the work
    config_path = args.config or default_config(args.tokenizer)
    config = read_config(config_path)
    tok_ckpt = reference.read_reference_checkpoint(args.tokenizer)
    other = args.generative or args.classifier
    other_ckpt = reference.read_reference_checkpoint(other) if other else None  # every file checked first
    tokenizer, notes = reference.import_tokenizer(tok_ckpt, config, source=repr(args.tokenizer),
                                                  config_source=repr(config_path))
    model, what = tokenizer, "tokenizer"
    if args.generative:
        model, more = reference.import_generative(other_ckpt, tokenizer, source=repr(args.generative))
        notes, what = notes + more, "generative model"
    elif args.classifier:
        model, more = reference.import_classifier(other_ckpt, tokenizer, source=repr(args.classifier))
        notes, what = notes + more, "tagger"
    with atomic_output(output, overwrite=args.overwrite) as tmp:
        torch.save(model.state_dict(), tmp)
    for line in notes:
        print(f"  {line}", file=sys.stderr)
    print(f"wrote the {what} ({model.kind}, from reference {reference.REFERENCE_REPOSITORY} checked at "
          f"{reference.REFERENCE_COMMIT[:10]}) to {output}", file=sys.stderr)


if __name__ == "__main__":
    main()
