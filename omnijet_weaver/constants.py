"""The facts every module shares, defined once.

Feature transform (SPEC "data path"), per constituent, with pT in GeV and angles relative to the jet axis::

    f_eta = ETA_PHI_SCALE * eta_rel
    f_phi = ETA_PHI_SCALE * phi_rel
    f_pt  = ln(pT / GeV) + LOG_PT_SHIFT

The reference OmniJet-alpha code multiplies the angles by 3 (whatever the paper's wording says); we do
the same so that its checkpoints' conventions carry over.
"""

#: Constituents with |eta_rel| >= ANGLE_CUT or |phi_rel| >= ANGLE_CUT are masked out (the jet radius R = 0.8).
ANGLE_CUT = 0.8
#: At most this many constituents per jet (pT-leading ones are kept).
MAX_PARTICLES = 128
#: Multiplier of eta_rel and phi_rel in the tokenizer features.
ETA_PHI_SCALE = 3.0
#: Added to ln(pT / GeV) in the tokenizer features.
LOG_PT_SHIFT = -1.8
#: Number of tokenizer features per constituent: (f_eta, f_phi, f_pt).
NUM_FEATURES = 3

# --- weaver inputs (ParT kin data configs) -----------------------------------------------------------------
#: Input names of ParT's kin data configs, in the order our models' forward() takes them.
INPUT_NAMES = ("pf_points", "pf_features", "pf_vectors", "pf_mask")
#: Input names of the token-file data config (data_configs/tokens.yaml), written by omnijet-weaver-tokenize.
TOKEN_INPUT_NAMES = ("tokens", "token_mask")
#: Column of the token ids in token files, and branch of the generated tokens in generated jet files.
TOKEN_COLUMN = "tokens"
GENERATED_TOKEN_BRANCH = "part_token"

# --- JetClass ROOT layout ----------------------------------------------------------------------------------
#: Per-constituent kinematic branches of the JetClass layout (GeV, and relative angles).
PART_BRANCHES = ("part_px", "part_py", "part_pz", "part_energy", "part_deta", "part_dphi")
#: Jet-level branches of the JetClass layout.
JET_BRANCHES = ("jet_pt", "jet_eta", "jet_phi", "jet_energy", "jet_nparticles")
#: The ten JetClass label branches, in JetClass's order.
JETCLASS_LABELS = (
    "label_QCD", "label_Hbb", "label_Hcc", "label_Hgg", "label_H4q",
    "label_Hqql", "label_Zqq", "label_Wqq", "label_Tbqq", "label_Tbl",
)
#: Name of the TTree in JetClass files.
TREE_NAME = "tree"

# --- token ids of the generative model ---------------------------------------------------------------------
# A tokenizer with K codes emits ids 0..K-1. The GPT vocabulary adds three special tokens after them.


def start_token(codebook_size: int) -> int:
    """Id of the start token, which opens every sequence."""
    return codebook_size


def stop_token(codebook_size: int) -> int:
    """Id of the stop token, which follows the last constituent."""
    return codebook_size + 1


def pad_token(codebook_size: int) -> int:
    """Id of the padding token after the stop token (ignored by the loss, never sampled)."""
    return codebook_size + 2


def vocab_size(codebook_size: int) -> int:
    """Size of the GPT vocabulary: codes + start + stop + pad (what the next-token head predicts over)."""
    return codebook_size + 3


def class_token(codebook_size: int, index: int) -> int:
    """Id of the start token of class ``index`` (0-based) of a class-conditional GPT: after pad, one per class.
    It opens a sequence in place of :func:`start_token` (which stays the unconditional start); it is an input
    only, never predicted nor sampled (the head's vocabulary is :func:`vocab_size`)."""
    return codebook_size + 3 + index


#: Prefix of the JetClass label branches; a class name of a conditional GPT is the branch name without it.
LABEL_PREFIX = "label_"
