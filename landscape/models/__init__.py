"""Architectures by name: ``create_model("preact_resnet18", num_classes=10)``."""
from ._registry import create_model, list_models, register_model
from . import preact_resnet, small, wide_resnet  # noqa: F401  (registers the models)
from .normalized import Normalized

__all__ = ["create_model", "list_models", "register_model", "Normalized"]
