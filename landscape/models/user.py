"""Your own architecture by spec: ``path/to/file.py:ClassName`` or ``package.module:ClassName``.

The spec is a plain string, so it travels through settings to process and Ray workers, which import the class
themselves (see :mod:`landscape._spec`, shared with user datasets).
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

from .._spec import absolute_spec, import_spec, split_spec

__all__ = ["absolute_spec", "import_architecture", "split_spec"]


def import_architecture(spec: str) -> Callable[..., nn.Module]:
    """The class (or factory function) named by ``spec``.

    Args:
        spec: ``path/to/file.py:ClassName`` (a file, relative to the working folder or absolute) or
            ``package.module:ClassName`` (importable from ``sys.path``); ``ClassName`` may be dotted.

    Returns:
        The callable; calling it with the ``--arch-arg`` keywords builds the model.

    Raises:
        ValueError: the file or module is missing or fails to import, or has no such attribute, or the
            attribute is not callable. The message names the spec.
    """
    return import_spec(spec, "architecture", "ClassName")
