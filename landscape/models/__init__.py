"""Architectures by name: ``create_model("preact_resnet18", num_classes=10)``; your own as ``"file.py:Class"``."""
from ._registry import (ARCH_ATTR, Family, ModelInfo, create_model, data_kwargs, family, is_spec,
                        kwargs_text, list_models, model_info, register_family, register_model, unregister)
from . import preact_resnet, small, wide_resnet  # noqa: F401  (registers the models)
from .normalized import Normalized
from .user import absolute_spec, import_architecture

__all__ = ["ARCH_ATTR", "Family", "ModelInfo", "Normalized", "absolute_spec", "create_model", "data_kwargs",
           "family", "import_architecture", "is_spec", "kwargs_text", "list_models", "model_info", "register_family",
           "register_model", "unregister"]
