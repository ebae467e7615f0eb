"""landscape: input loss-landscape analysis for diagnosing and combating robust overfitting."""
from ._base import LandscapeError
from .measures import MEASURES, measure
from .models import Normalized, create_model, list_models

__version__ = "0.1.0"

__all__ = ["LandscapeError", "MEASURES", "Normalized", "create_model", "list_models", "measure", "__version__"]
