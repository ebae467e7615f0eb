"""The *weight* loss landscape: filter-normalised 1D/2D slices L(w + a·d + b·e) and the PCA training path.

Following Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets" (NeurIPS; arXiv:1712.09913):

* **Directions** are dicts ``{parameter name: tensor}`` shaped like ``model.named_parameters()``.
  :func:`random_direction` draws a Gaussian tensor per parameter from a seeded CPU generator and, with
  ``norm="filter"``, rescales each *filter* — each slice along the output (first) dimension: a conv filter, a
  row of a linear weight — to the norm of the same filter of the weights, ``d_f ← d_f · ‖w_f‖ / ‖d_f‖``.
  **BN and biases**: parameters with at most one dimension (biases, BatchNorm/LayerNorm scales and shifts)
  get a zero direction by default (``ignore="biasbn"``, the default of the reference implementation, so they
  stay at their trained values); with ``ignore=None`` their direction is the parameter itself (``d = w``), as
  the reference implementation does. **Buffers** (BN running mean/var, counters) are never perturbed, and the
  model is evaluated in eval mode, so BN uses the checkpoint's running statistics.
  :func:`eigen_directions` gives the top weight-Hessian eigenvectors (Lanczos on exact Hessian-vector
  products of the probe set's mean loss, restricted to the perturbed parameters), unit norm by default.
* **Slices** :func:`weight_slice_1d` / :func:`weight_slice_2d` evaluate the probe set's mean cross-entropy and
  accuracy at every grid point, clean or robust. Robust: ``x_adv`` is attacked once at the centre weights and
  kept fixed (``reattack=False``, default), or attacked afresh at every grid point (``reattack=True``). The
  perturbed weights are ``w + (a·d)`` (then ``+ (b·e)``), in the parameter's dtype.
* **Training path** :func:`training_path`: PCA of the matrix of ``w_e − w_final`` over the epochs (the final
  epoch excluded: it is the origin). As the reference implementation (scikit-learn's PCA) the matrix is
  centred before the SVD; the coordinates are the projections of the *uncentred* ``w_e − w_final`` on the two
  unit components, so the final weights sit at (0, 0). :func:`path_surface` is the loss on that plane.
* **Exports** :func:`to_parquet` (always), :func:`to_h5` (needs ``h5py``) and :func:`to_vtp` (ParaView XML
  PolyData, written by hand: no dependency).

Safety: every function runs under :func:`landscape.measures.weight_hessian.preserved` (eval mode inside), so
parameters and buffers come back bit-identical (also when an error is raised midway), each module's train/eval
mode and ``requires_grad``/``.grad`` are restored; no ``.grad`` is written and the global RNG is never drawn
from (every random draw has its own generator seeded from ``seed``).

Example:
    >>> import torch
    >>> from landscape import create_model
    >>> from landscape.weight_slices import random_direction, weight_slice_1d
    >>> model = create_model("small_cnn")
    >>> x, y = torch.rand(8, 1, 8, 8), torch.arange(8) % 10
    >>> df = weight_slice_1d(model, x, y, random_direction(model, seed=0), [-1.0, 0.0, 1.0])
    >>> list(df.columns)
    ['direction', 'alpha', 'kind', 'loss', 'acc']
"""
from __future__ import annotations

from .directions import (IGNORES, LOSSES, NORMS, Direction, eigen_directions, normalize_direction, perturbed,
                         random_direction)
from .export import to_h5, to_parquet, to_vtp
from .path import TrainingPath, path_surface, training_path
from .slicing import weight_slice_1d, weight_slice_2d

__all__ = [
    "IGNORES", "LOSSES", "NORMS", "Direction", "TrainingPath", "eigen_directions", "normalize_direction",
    "path_surface", "perturbed", "random_direction", "to_h5", "to_parquet", "to_vtp", "training_path",
    "weight_slice_1d", "weight_slice_2d",
]
