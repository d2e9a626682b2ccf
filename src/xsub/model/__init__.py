"""Models: architecture adapters (`arch`), head/MLP gates (`gates`) and loading (`load`).

`from xsub.model import X` works for every public name of the three modules.
"""

from xsub.model.arch import (
    DECODER_FAMILIES,
    MODEL_FAMILIES,
    GateShape,
    LayerModules,
    encoder_layers,
    gate_shape,
    in_features,
    is_decoder,
    kv_group_of_heads,
    model_family,
    num_kv_heads,
)
from xsub.model.gates import GATE_NAMES, Gates, attach_gates, get_gates
from xsub.model.load import (
    AUTO_CLASSES,
    config_hash,
    default_tokenizer_dir,
    load_finetuned,
    load_model,
    model_signature,
    reinit_weights,
)

__all__ = [
    "AUTO_CLASSES",
    "DECODER_FAMILIES",
    "GATE_NAMES",
    "MODEL_FAMILIES",
    "GateShape",
    "Gates",
    "LayerModules",
    "attach_gates",
    "config_hash",
    "default_tokenizer_dir",
    "encoder_layers",
    "gate_shape",
    "get_gates",
    "in_features",
    "is_decoder",
    "kv_group_of_heads",
    "load_finetuned",
    "load_model",
    "model_family",
    "model_signature",
    "num_kv_heads",
    "reinit_weights",
]
