"""Crop/flip augmentation against a per-sample reference written with plain slicing."""
import pytest
import torch
import torch.nn.functional as F

from landscape.augmentation import augment


def _reference(x, pad, flip, generator):
    """The same draws, applied one image at a time with slicing (torchvision's RandomCrop semantics)."""
    b, _, h, w = x.shape
    offsets = torch.randint(0, 2 * pad + 1, (2, b), generator=generator)
    flips = torch.rand(b, generator=generator) < 0.5
    out = []
    for i in range(b):
        img = F.pad(x[i], (pad, pad, pad, pad))[:, offsets[0, i]:offsets[0, i] + h, offsets[1, i]:offsets[1, i] + w]
        out.append(img.flip(-1) if flip and flips[i] else img)
    return torch.stack(out)


@pytest.mark.parametrize("mode, pad", [("crop_flip", 4), ("crop", 1), ("crop_flip", 0)])
def test_augment_matches_per_sample_slicing(mode, pad):
    x = torch.rand(16, 3, 8, 6, generator=torch.Generator().manual_seed(0))
    got = augment(x, mode, pad=pad, generator=torch.Generator().manual_seed(7))
    want = _reference(x, pad, mode == "crop_flip", torch.Generator().manual_seed(7))
    assert torch.equal(got, want)


def test_augment_shifts_flips_and_zero_fills():
    x = torch.zeros(200, 1, 5, 5)
    x[:, :, 2, 0] = 1.0  # one lit pixel on the left edge of the middle row
    out = augment(x, "crop_flip", pad=1, generator=torch.Generator().manual_seed(1))
    lit = out.flatten(1).sum(1)
    assert set(lit.tolist()) <= {0.0, 1.0} and (lit == 0).any()  # shifted out of view sometimes
    cols = out[lit == 1].squeeze(1).nonzero()[:, 2]
    assert set(cols.tolist()) == {0, 1, 3, 4}  # left edge or its flip, shifted by at most one pixel
    assert torch.equal(augment(x, "none"), x)


def test_augment_rejects_bad_arguments():
    with pytest.raises(ValueError, match="none, crop, crop_flip"):
        augment(torch.zeros(1, 1, 4, 4), "rotate")
    with pytest.raises(ValueError, match="padding"):
        augment(torch.zeros(1, 1, 4, 4), "crop", pad=-1)
    with pytest.raises(ValueError, match="B, C, H, W"):
        augment(torch.zeros(4, 16), "crop")
