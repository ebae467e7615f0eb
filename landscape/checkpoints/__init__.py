"""Checkpoints: read weights safely from the common formats into the exact architecture; write them atomically.

Formats are recognised by content, not by extension (``.pt .pth .tar .ckpt .bin`` are all the same to the loader;
a ``.safetensors`` file must really be one); see ``formats``. Nothing in a file runs unless ``trusted=True``.
Wrappers are unwrapped (``state_dict``/``model_state_dict``/``model``/``net``, nested; ``{'last', 'best'}``),
``module.`` and ``_orig_mod.`` prefixes stripped; scalar entries (``epoch``, ``best_pgd``, ...) are kept as
metadata; see ``keys``. ``load_model`` builds the wiring the file was trained with (its architecture record, its
layout, its keys and shapes, then evidence: the clean accuracy of each candidate wiring on a labelled batch; a
stderr note where only a default could be taken), and returns a trusted whole pickled model as itself; see ``load``.

Modules: ``keys`` (key rewriting, layouts, wiring inference), ``evidence`` (the "clearly better" rule),
``header`` (a file's structure without its weights), ``formats`` (sniffing and the readers), ``safe_pickle``
(restricted unpickling, shared with ``landscape.datasets``), ``load``, ``save``.
"""
from .formats import TORCH_EXTENSIONS
from .keys import (ARCH_KEY, ENTRIES, OFFICIAL_KEYS, PREFIXES, WRAPPER_KEYS, read_epoch, require_tensors,
                   strip_prefix, strip_prefixes, unwrap_state_dict)
from .load import load_checkpoint, load_model, load_state_dict
from .record import Checkpoint, CheckpointError, WiringError
from .save import save_checkpoint

__all__ = [
    "ARCH_KEY", "Checkpoint", "CheckpointError", "ENTRIES", "OFFICIAL_KEYS", "PREFIXES", "TORCH_EXTENSIONS",
    "WRAPPER_KEYS", "WiringError", "load_checkpoint", "load_model", "load_state_dict", "read_epoch",
    "require_tensors", "save_checkpoint", "strip_prefix", "strip_prefixes", "unwrap_state_dict",
]
