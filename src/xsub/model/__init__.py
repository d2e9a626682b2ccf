"""Models: architecture adapters (`arch`), head/MLP gates (`gates`) and loading (`load`).

`from xsub.model import X` works for every public name of the three modules.
"""

from xsub.model.arch import (
    MODEL_FAMILIES,
    GateShape,
    LayerModules,
    encoder_layers,
    gate_shape,
    model_family,
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
    "load_finetuned",
    "load_model",
    "model_family",
    "model_signature",
    "reinit_weights",
]
