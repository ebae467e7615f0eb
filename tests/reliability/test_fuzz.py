"""Fuzzing the numerical entry points (attacks, slices, curvature measures) with hypothesis.

Every drawn case ends in exactly one of two ways: a result that matches an independent reference (per-sample
autograd, direct evaluation of each grid point, the full autograd Hessian), or a clear ``ValueError`` /
``TypeError`` naming the bad value. Never a silently wrong shape, dtype or a NaN.

Inputs cover batch sizes from 1, flat feature vectors and images, float32/float64/uint8 inputs (uint8 is
read as pixels / 255), binary images sitting on the [0,1] box edges, float32 and float64 models, and
eps / step / grid parameters inside and outside their valid ranges.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from landscape import create_model
from landscape.attacks import fgsm, pgd
from landscape.slices import grid, random_direction, slice_1d, slice_2d

FUZZ = settings(max_examples=25, deadline=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SHAPES = [(5,), (1, 4, 4), (3, 2, 2), (2, 4, 4)]
DTYPES = {"float32": torch.float32, "float64": torch.float64, "uint8": torch.uint8}
BAD_EPS = [-1e-3, -1.0, math.nan, math.inf, -math.inf]


# ------------------------------------------------------------------------------------------------ cases


class Case:
    """One drawn batch: the model, the raw input ``x`` (as given to the API), its [0,1] float64 value ``x01``,
    labels ``y`` and the model's dtype."""

    def __init__(self, model, x, y, dtype):
        self.model, self.x, self.y, self.dtype = model, x, y, dtype
        self.x01 = x.double() / 255.0 if x.dtype == torch.uint8 else x.double()

    def __repr__(self) -> str:  # shown by hypothesis on failure
        return (f"Case(model={type(self.model.net if hasattr(self.model, 'net') else self.model).__name__}, "
                f"x={tuple(self.x.shape)} {self.x.dtype}, model dtype={self.dtype})")

    @property
    def xm(self) -> torch.Tensor:
        """The input in [0,1] in the model's dtype (what the library computes with)."""
        if self.x.dtype == torch.uint8:  # documented: pixels / 255 in the model's dtype
            return self.x.to(self.dtype) / 255.0
        return self.x.to(self.dtype)


def _build_model(shape, k, dtype, seed, arch) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if arch == "small_cnn":
            model = create_model("small_cnn", in_channels=shape[0], num_classes=k, input_size=shape[-1], width=4,
                                 activation="softplus")
        else:
            model = create_model("mlp", input_shape=shape, hidden=(8,), num_classes=k, activation="softplus")
    return model.to(dtype).eval()


@st.composite
def cases(draw, shapes=SHAPES, model_dtypes=("float32", "float64")) -> Case:
    b = draw(st.integers(1, 6))
    shape = draw(st.sampled_from(shapes))
    in_dtype = draw(st.sampled_from(list(DTYPES)))
    model_dtype = DTYPES[draw(st.sampled_from(list(model_dtypes)))]
    k = draw(st.integers(2, 5))
    seed = draw(st.integers(0, 2**16))
    arch = "small_cnn" if len(shape) == 3 and shape[-1] % 2 == 0 and draw(st.booleans()) else "mlp"
    binary = draw(st.booleans())  # pixels exactly on the box edges 0 and 1
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((b, *shape), generator=g, dtype=torch.float64)
    if binary:
        x = (x > 0.5).double()
    x = (x * 255).round().to(torch.uint8) if in_dtype == "uint8" else x.to(DTYPES[in_dtype])
    y = torch.randint(0, k, (b,), generator=g)
    return Case(_build_model(shape, k, model_dtype, seed, arch), x, y, model_dtype)


def _tol(dtype) -> float:
    return 1e-5 if dtype == torch.float32 else 1e-10


def _grad_per_sample(case: Case) -> torch.Tensor:
    """Reference input gradient, one sample at a time (never batched)."""
    grads = []
    for i in range(case.x.shape[0]):
        xi = case.xm[i:i + 1].clone().requires_grad_(True)
        loss = F.cross_entropy(case.model(xi), case.y[i:i + 1])
        (g,) = torch.autograd.grad(loss, xi)
        grads.append(g)
    return torch.cat(grads)


def _assert_no_param_grad(model: nn.Module) -> None:
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())


def _assert_in_ball(delta: torch.Tensor, eps: float, norm: str, dtype) -> None:
    slack = 4 * torch.finfo(dtype).eps
    if norm == "linf":
        assert float(delta.abs().max()) <= eps + slack
    else:
        assert float(delta.flatten(1).norm(dim=1).max()) <= eps * (1 + 1e-5) + slack


# ------------------------------------------------------------------------------------------------ attacks


@FUZZ
@given(case=cases(), eps=st.one_of(st.floats(0.0, 0.5), st.sampled_from([0, 1])),
       norm=st.sampled_from(["linf", "l2"]))
def test_fgsm_matches_per_sample_reference(case, eps, norm):
    x_adv, delta = fgsm(case.model, case.x, case.y, eps, norm=norm)

    assert x_adv.shape == delta.shape == case.x.shape
    assert x_adv.dtype == delta.dtype == case.dtype
    assert torch.isfinite(x_adv).all() and torch.isfinite(delta).all()
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert torch.equal(x_adv, case.xm + delta)
    _assert_in_ball(delta, eps, norm, case.dtype)
    _assert_no_param_grad(case.model)

    g = _grad_per_sample(case).double()
    if norm == "linf":
        ref = (case.x01 + eps * g.sign()).clamp(0, 1)
        # where the gradient is tiny its sign may differ between batched and single-sample float32 sums
        scale = g.flatten(1).abs().amax(1).reshape(-1, *[1] * (g.dim() - 1))
        sure = g.abs() > 1e-4 * scale
    else:
        norms = g.flatten(1).norm(dim=1).clamp_min(1e-12).reshape(-1, *[1] * (g.dim() - 1))
        ref = (case.x01 + eps * g / norms).clamp(0, 1)
        sure = torch.ones_like(g, dtype=torch.bool)
    err = (x_adv.double() - ref).abs()[sure]
    assert err.numel() == 0 or float(err.max()) <= 1e3 * _tol(case.dtype) * max(1.0, eps)


@FUZZ
@given(case=cases(), eps=st.one_of(st.floats(0.0, 0.5), st.just(0)), norm=st.sampled_from(["linf", "l2"]),
       steps=st.integers(1, 4), step_size=st.one_of(st.none(), st.floats(0.0, 0.3)), random_start=st.booleans(),
       seed=st.integers(0, 1000))
def test_pgd_stays_in_ball_and_box_and_is_per_sample(case, eps, norm, steps, step_size, random_start, seed):
    kw = dict(steps=steps, step_size=step_size, norm=norm, random_start=random_start, seed=seed)
    x_adv, delta = pgd(case.model, case.x, case.y, eps, **kw)

    assert x_adv.shape == delta.shape == case.x.shape
    assert x_adv.dtype == case.dtype
    assert torch.isfinite(x_adv).all()
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert torch.equal(x_adv, case.xm + delta)
    _assert_in_ball(delta, eps, norm, case.dtype)
    _assert_no_param_grad(case.model)
    if eps == 0:
        assert torch.equal(x_adv, case.xm)
    # seeded: a second call gives the same answer
    x_again, _ = pgd(case.model, case.x, case.y, eps, **kw)
    assert torch.equal(x_adv, x_again)
    if not random_start and case.dtype == torch.float64:
        # in eval mode each sample is attacked on its own: the batch equals one call per sample
        for i in range(case.x.shape[0]):
            xi, _ = pgd(case.model, case.x[i:i + 1], case.y[i:i + 1], eps, **kw)
            assert torch.allclose(xi, x_adv[i:i + 1], atol=1e-9)


@FUZZ
@given(case=cases(model_dtypes=("float64",)), eps=st.floats(1e-3, 0.3))
def test_pgd_one_full_step_without_random_start_is_fgsm(case, eps):
    x_pgd, _ = pgd(case.model, case.x, case.y, eps, steps=1, step_size=eps, random_start=False)
    x_fgsm, _ = fgsm(case.model, case.x, case.y, eps)
    assert torch.allclose(x_pgd, x_fgsm, atol=1e-12)


# ------------------------------------------------------------------------------------------------ slices


def _normalise_ref(d: torch.Tensor, normalization) -> torch.Tensor:
    """Independent per-sample normalisation in float64 (a zero direction stays zero)."""
    out = d.double().clone()
    for i in range(out.shape[0]):
        if normalization == "linf":
            size = out[i].abs().max()
        elif normalization == "unit":
            size = out[i].norm()
        else:
            continue
        if size > 0:
            out[i] = out[i] / size
    return out


def _point_ref(case: Case, i: int, point: torch.Tensor) -> tuple[float, bool, float]:
    """Loss, correct and margin of one input point of sample i, evaluated on its own."""
    with torch.no_grad():
        logits = case.model(point.to(case.dtype)[None]).double()[0]
    label = int(case.y[i])
    others = logits.clone()
    others[label] = -math.inf
    margin = float(logits[label] - others.max())
    loss = float(F.cross_entropy(logits[None], case.y[i:i + 1]))
    return loss, margin > 0, margin


def _check_rows(case, rows, expected, clip) -> None:
    """``rows``: (loss, correct, margin) arrays; ``expected``: list of (sample, point) in row order."""
    loss, correct, margin = rows
    tol = _tol(case.dtype)
    for r, (i, point) in enumerate(expected):
        if clip:
            point = point.clamp(0, 1)
        l_ref, c_ref, m_ref = _point_ref(case, i, point)
        assert math.isfinite(loss[r]) and math.isfinite(margin[r])
        assert loss[r] == pytest.approx(l_ref, rel=1e2 * tol, abs=1e2 * tol)
        assert margin[r] == pytest.approx(m_ref, rel=1e2 * tol, abs=1e2 * tol)
        if abs(m_ref) > 1e-4:  # a near-tie may be decided either way by rounding
            assert bool(correct[r]) == c_ref


def _direction_for(kind: str, case: Case, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(case.x.shape, generator=g, dtype=torch.float64)
    if kind == "zeros":
        return torch.zeros_like(d)
    if kind == "shared":  # one (...) direction broadcast to every sample
        return d[0]
    if kind == "nan":
        d[0].view(-1)[0] = math.nan
    return d


@FUZZ
@given(case=cases(), radius=st.floats(1e-3, 2.0), n=st.integers(1, 6),
       normalization=st.sampled_from(["linf", "unit", None]), clip=st.booleans(),
       kind=st.sampled_from(["tensor", "shared", "zeros"]), seed=st.integers(0, 1000), max_batch=st.integers(1, 7))
def test_slice_1d_matches_direct_evaluation(case, radius, n, normalization, clip, kind, seed, max_batch):
    alphas = grid(radius, n)
    d = _direction_for(kind, case, seed)
    df = slice_1d(case.model, case.x, case.y, d, alphas, normalization=normalization, clip=clip, max_batch=max_batch)
    B, A = case.x.shape[0], alphas.numel()
    assert list(df.columns) == ["sample", "direction", "a", "loss", "correct", "margin"]
    assert len(df) == B * A
    assert df["sample"].tolist() == [i for i in range(B) for _ in range(A)]
    assert df["a"].tolist() == alphas.tolist() * B
    assert not df[["loss", "margin"]].isna().any().any()

    full = d.expand(case.x.shape) if kind == "shared" else d
    dn = _normalise_ref(full, normalization)
    expected = [(i, case.x01[i] + float(a) * dn[i]) for i in range(B) for a in alphas]
    _check_rows(case, (df["loss"].to_numpy(), df["correct"].to_numpy(), df["margin"].to_numpy()), expected, clip)
    if n % 2 == 1:  # the centre of an odd grid is the clean input itself
        centre = df[df["a"] == 0.0]
        for i in range(B):
            assert centre["loss"].iloc[i] == pytest.approx(_point_ref(case, i, case.x01[i])[0],
                                                           rel=1e2 * _tol(case.dtype), abs=1e2 * _tol(case.dtype))


@FUZZ
@given(case=cases(), na=st.integers(1, 4), nb=st.integers(1, 4), radius=st.floats(1e-3, 1.0),
       orthogonal=st.booleans(), normalization=st.sampled_from(["linf", "unit", None]), clip=st.booleans(),
       seed=st.integers(0, 1000))
def test_slice_2d_matches_direct_evaluation(case, na, nb, radius, orthogonal, normalization, clip, seed):
    alphas, betas = grid(radius, na), grid(radius / 2, nb)
    g = torch.Generator().manual_seed(seed)
    d1 = torch.randn(case.x.shape, generator=g, dtype=torch.float64)
    d2 = torch.randn(case.x.shape, generator=g, dtype=torch.float64)
    df = slice_2d(case.model, case.x, case.y, d1, d2, alphas, betas, orthogonal=orthogonal,
                  normalization=normalization, clip=clip, max_batch=5)
    B = case.x.shape[0]
    assert list(df.columns) == ["sample", "direction1", "direction2", "a", "b", "loss", "correct", "margin"]
    assert len(df) == B * na * nb

    e2 = d2.clone()
    if orthogonal:  # Gram-Schmidt, one sample at a time
        for i in range(B):
            u, v = d1[i].flatten(), e2[i].flatten()
            e2[i] = (v - (u @ v) / (u @ u) * u).reshape(e2[i].shape)
    n1, n2 = _normalise_ref(d1, normalization), _normalise_ref(e2, normalization)
    expected = [(i, case.x01[i] + float(a) * n1[i] + float(b) * n2[i])
                for i in range(B) for a in alphas for b in betas]
    assert df["a"].tolist() == [float(a) for _ in range(B) for a in alphas for _ in betas]
    assert df["b"].tolist() == [float(b) for _ in range(B) for _ in alphas for b in betas]
    _check_rows(case, (df["loss"].to_numpy(), df["correct"].to_numpy(), df["margin"].to_numpy()), expected, clip)


@FUZZ
@given(case=cases(), seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(["rademacher", "gaussian", "uniform"]))
def test_random_direction_is_seeded_finite_and_shaped_or_rejects(case, seed, kind):
    if kind == "uniform":
        with pytest.raises(ValueError, match="rademacher"):
            random_direction(case.xm, kind=kind, seed=seed)
        return
    d = random_direction(case.xm, kind=kind, seed=seed)
    assert d.shape == case.x.shape and d.dtype == case.dtype
    assert torch.isfinite(d).all()
    assert torch.equal(d, random_direction(case.xm, kind=kind, seed=seed))
    if kind == "rademacher":
        assert set(d.unique().tolist()) <= {-1.0, 1.0}


# ------------------------------------------------------------------------------------------------ curvature


def _hessians(case: Case) -> list[torch.Tensor]:
    """Reference: the full (D, D) input Hessian of each sample's cross-entropy, by autograd."""
    out = []
    for i in range(case.x.shape[0]):
        def loss(flat, i=i):
            return F.cross_entropy(case.model(flat.reshape(1, *case.x.shape[1:])), case.y[i:i + 1])

        out.append(torch.autograd.functional.hessian(loss, case.xm[i].flatten()).double())
    return out


@FUZZ
@given(case=cases(shapes=[(5,), (1, 2, 2), (3, 2, 2)]), seed=st.integers(0, 1000),
       method=st.sampled_from(["auto", "func", "double_backprop"]))
def test_curvature_matches_autograd_hessian(case, seed, method):
    from landscape.measures.curvature import directional_curvature, hvp, top_eigenvalue

    g = torch.Generator().manual_seed(seed)
    v = torch.randn(case.x.shape, generator=g, dtype=torch.float64).to(case.dtype)
    v[0] = 0.0  # a zero direction has curvature 0, not NaN
    hv = hvp(case.model, case.x, case.y, v, method=method)
    curv = directional_curvature(case.model, case.x, case.y, v, method=method)
    values, vectors = top_eigenvalue(case.model, case.x, case.y, iters=50, tol=1e-10, seed=seed, method=method)
    _assert_no_param_grad(case.model)
    B = case.x.shape[0]
    assert hv.shape == v.shape and curv.shape == (B,) and values.shape == (B,) and vectors.shape == v.shape
    for t in (hv, curv, values, vectors):
        assert t.dtype == case.dtype and torch.isfinite(t).all()

    tol = 1e3 * _tol(case.dtype)
    for i, H in enumerate(_hessians(case)):
        vi = v[i].flatten().double()
        scale = max(1.0, float(H.abs().max()))
        assert torch.allclose(hv[i].flatten().double(), H @ vi, atol=tol * scale * max(1.0, float(vi.norm())))
        ref = 0.0 if i == 0 else float(vi @ H @ vi / (vi @ vi))
        assert float(curv[i]) == pytest.approx(ref, abs=tol * scale)
        eig = torch.linalg.eigvalsh(H)
        u = vectors[i].flatten().double()
        assert float(u.norm()) == pytest.approx(1.0, abs=1e-4) or float(H.abs().max()) == 0.0
        assert float(values[i]) == pytest.approx(float(u @ H @ u), abs=tol * scale)  # a Rayleigh pair
        assert abs(float(values[i])) <= float(eig.abs().max()) + tol * scale
        top = eig[eig.abs().argmax()]
        second = eig.abs().sort(descending=True).values[1] if eig.numel() > 1 else torch.tensor(0.0)
        if float(second) < 0.5 * abs(float(top)):  # clear spectral gap: 50 iterations converge
            assert float(values[i]) == pytest.approx(float(top), rel=1e-3, abs=tol * scale)


# ------------------------------------------------------------------------------------------------ rejections


def _bad_batch(kind: str, case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = case.x.clone(), case.y.clone()
    if kind in ("nan_x", "inf_x"):
        x = x.double() / (255.0 if x.dtype == torch.uint8 else 1.0)
        x.view(-1)[-1] = math.nan if kind == "nan_x" else math.inf
    elif kind == "int_x":
        x = x.to(torch.int32)
    elif kind == "empty":
        x, y = x[:0], y[:0]
    elif kind == "flat_1d":
        x = x.reshape(-1)
    elif kind == "label_range":
        y[0] = 99
    elif kind == "label_count":
        y = torch.cat([y, y[:1]])
    elif kind == "label_float":
        y = y.double()
    elif kind == "label_negative":
        y[0] = -1
    return x, y


BAD_BATCHES = {  # kind -> (exception, words the message must contain)
    "nan_x": (ValueError, "NaN/Inf"), "inf_x": (ValueError, "NaN/Inf"), "int_x": (TypeError, "uint8"),
    "empty": (ValueError, "non-empty"), "flat_1d": (ValueError, "shape"), "label_range": (ValueError, "out of range"),
    "label_count": (ValueError, "labels"), "label_float": (TypeError, "integer"),
    "label_negative": (ValueError, "non-negative"),
}


def _entry_points():
    from landscape.measures import curvature

    return {
        "fgsm": lambda m, x, y: fgsm(m, x, y, 0.1),
        "pgd": lambda m, x, y: pgd(m, x, y, 0.1, steps=1),
        "slice_1d": lambda m, x, y: slice_1d(m, x, y, "random", grid(0.1, 3)),
        "slice_2d": lambda m, x, y: slice_2d(m, x, y, "random", "random", grid(0.1, 2), grid(0.1, 2)),
        "hvp": lambda m, x, y: curvature.hvp(m, x, y, torch.ones(x.shape, dtype=torch.float32)),
        "directional_curvature": lambda m, x, y: curvature.directional_curvature(
            m, x, y, torch.ones(x.shape, dtype=torch.float32)),
        "top_eigenvalue": lambda m, x, y: curvature.top_eigenvalue(m, x, y, iters=2),
    }


@FUZZ
@given(case=cases(), kind=st.sampled_from(sorted(BAD_BATCHES)), entry=st.sampled_from(sorted(_entry_points())))
def test_bad_batches_are_rejected_with_a_clear_error(case, kind, entry):
    x, y = _bad_batch(kind, case)
    exc, words = BAD_BATCHES[kind]
    if entry in ("hvp", "directional_curvature") and kind in ("label_count", "label_float", "label_negative",
                                                             "label_range"):
        pass  # the batch check happens before v is compared, so the label error still comes first
    with pytest.raises(exc, match=words.replace("(", r"\(").replace("/", "/")):
        _entry_points()[entry](case.model, x, y)
    _assert_no_param_grad(case.model)
    assert not case.model.training


BAD_PARAMETERS = [  # (name, call(case), exception, words in the message)
    *[(f"fgsm eps={e}", lambda c, e=e: fgsm(c.model, c.x, c.y, e), ValueError, "eps") for e in BAD_EPS],
    ("fgsm eps='0.1'", lambda c: fgsm(c.model, c.x, c.y, "0.1"), TypeError, "eps"),
    ("fgsm norm='l1'", lambda c: fgsm(c.model, c.x, c.y, 0.1, norm="l1"), ValueError, "norm"),
    *[(f"pgd eps={e}", lambda c, e=e: pgd(c.model, c.x, c.y, e), ValueError, "eps") for e in BAD_EPS],
    ("pgd steps=0", lambda c: pgd(c.model, c.x, c.y, 0.1, steps=0), ValueError, "steps"),
    ("pgd steps=-2", lambda c: pgd(c.model, c.x, c.y, 0.1, steps=-2), ValueError, "steps"),
    ("pgd steps=1.5", lambda c: pgd(c.model, c.x, c.y, 0.1, steps=1.5), TypeError, "steps"),
    ("pgd step_size=-0.01", lambda c: pgd(c.model, c.x, c.y, 0.1, step_size=-0.01), ValueError, "step_size"),
    ("pgd step_size=nan", lambda c: pgd(c.model, c.x, c.y, 0.1, step_size=math.nan), ValueError, "step_size"),
    ("pgd x>1", lambda c: pgd(c.model, c.xm + 1.5, c.y, 0.1), ValueError, r"\[0,1\]"),
    ("pgd x<0", lambda c: pgd(c.model, c.xm - 1.5, c.y, 0.1), ValueError, r"\[0,1\]"),
    ("grid n=0", lambda c: grid(0.1, 0), ValueError, "n must"),
    ("grid n=-1", lambda c: grid(0.1, -1), ValueError, "n must"),
    ("grid n=2.0", lambda c: grid(0.1, 2.0), TypeError, "n must"),
    *[(f"grid radius={r}", lambda c, r=r: grid(r, 3), ValueError, "radius") for r in (0.0, -0.1, math.nan, math.inf)],
    ("slice alphas=[]", lambda c: slice_1d(c.model, c.x, c.y, "random", []), ValueError, "alphas"),
    ("slice alphas=nan", lambda c: slice_1d(c.model, c.x, c.y, "random", [0.0, math.nan]), ValueError, "alphas"),
    ("slice alphas 2-D", lambda c: slice_1d(c.model, c.x, c.y, "random", [[0.0, 1.0]]), ValueError, "alphas"),
    ("slice betas=inf", lambda c: slice_2d(c.model, c.x, c.y, "random", "random", [0.0], [math.inf]), ValueError,
     "betas"),
    ("slice normalization='l2'", lambda c: slice_1d(c.model, c.x, c.y, "random", [0.1], normalization="l2"),
     ValueError, "normalization"),
    ("slice max_batch=0", lambda c: slice_1d(c.model, c.x, c.y, "random", [0.1], max_batch=0), ValueError,
     "max_batch"),
    ("slice max_bytes=0", lambda c: slice_1d(c.model, c.x, c.y, "random", [0.1], max_bytes=0), ValueError,
     "max_bytes"),
    ("slice direction='up'", lambda c: slice_1d(c.model, c.x, c.y, "up", [0.1]), ValueError, "direction"),
    ("slice direction NaN", lambda c: slice_1d(c.model, c.x, c.y, torch.full(c.x.shape, math.nan), [0.1]),
     ValueError, "NaN"),
    ("slice direction shape", lambda c: slice_1d(c.model, c.x, c.y, torch.ones(7, 3), [0.1]), ValueError, "shape"),
    ("slice direction list", lambda c: slice_1d(c.model, c.x, c.y, [1.0], [0.1]), TypeError, "direction"),
    ("slice random kind", lambda c: slice_1d(c.model, c.x, c.y, "random", [0.1], kind="uniform"), ValueError,
     "kind"),
    ("slice attack", lambda c: slice_1d(c.model, c.x, c.y, "adversarial", [0.1], attack="cw"), ValueError, "attack"),
    ("slice2d same", lambda c: slice_2d(c.model, c.x, c.y, "gradient", "gradient", [0.1], [0.1]), ValueError,
     "different"),
    ("hvp method", lambda c: __import__("landscape.measures.curvature", fromlist=["hvp"]).hvp(
        c.model, c.x, c.y, torch.ones(c.x.shape), method="newton"), ValueError, "method"),
    ("hvp v shape", lambda c: __import__("landscape.measures.curvature", fromlist=["hvp"]).hvp(
        c.model, c.x, c.y, torch.ones(1, 1)), ValueError, "shape"),
    ("hvp v NaN", lambda c: __import__("landscape.measures.curvature", fromlist=["hvp"]).hvp(
        c.model, c.x, c.y, torch.full(c.x.shape, math.nan)), ValueError, "NaN"),
    ("top_eigenvalue iters=0", lambda c: __import__("landscape.measures.curvature", fromlist=["x"]).top_eigenvalue(
        c.model, c.x, c.y, iters=0), ValueError, "iters"),
    ("top_eigenvalue tol=-1", lambda c: __import__("landscape.measures.curvature", fromlist=["x"]).top_eigenvalue(
        c.model, c.x, c.y, tol=-1.0), ValueError, "tol"),
]


@FUZZ
@given(case=cases(), bad=st.sampled_from(BAD_PARAMETERS))
def test_bad_parameters_are_rejected_with_a_clear_error(case, bad):
    name, call, exc, words = bad
    with pytest.raises(exc, match=words):
        call(case)
    _assert_no_param_grad(case.model)
    assert not case.model.training


# ------------------------------------------------------------------------------------------------ measure()


def _topk_sum(diff: torch.Tensor, top: float = 0.1) -> float:
    """Reference AdvLC per-sample quantity: sum of the largest ceil(10% of K) (at least one) |differences|."""
    k = max(1, math.ceil(round(top * diff.numel(), 12)))
    return float(diff.abs().sort(descending=True).values[:k].sum())


@FUZZ
@given(case=cases(shapes=[(5,), (1, 2, 2), (3, 2, 2)]), eps=st.floats(0.0, 0.3), norm=st.sampled_from(["linf", "l2"]),
       batch_size=st.integers(1, 7), subset=st.sets(st.sampled_from(["grad", "curv_adv", "taylor_gap", "logit_var"])),
       float64=st.booleans())
def test_measure_matches_per_sample_references(case, eps, norm, batch_size, subset, float64):
    from landscape.measures import measure

    measures = sorted(subset)
    df = measure(case.model, case.x, case.y, eps=eps, attack="fgsm", norm=norm, measures=measures,
                 batch_size=batch_size, dtype=torch.float64 if float64 else None)
    dtype = torch.float64 if float64 else case.dtype
    B = case.x.shape[0]
    assert len(df) == B and df["sample"].tolist() == list(range(B)) and df["label"].tolist() == case.y.tolist()
    assert df.attrs["nonfinite"] == 0 and df.attrs["dtype"] == str(dtype).replace("torch.", "")
    floats = df.select_dtypes("floating")
    assert not floats.isna().any().any()
    _assert_no_param_grad(case.model)
    assert next(case.model.parameters()).dtype == case.dtype  # float64 mode works on a copy

    model = case.model if not float64 else copy.deepcopy(case.model).double()
    x = case.x.to(dtype) / 255.0 if case.x.dtype == torch.uint8 else case.x.to(dtype)
    tol = 1e3 * _tol(dtype)
    hessians = None
    for i in range(B):
        xi = x[i:i + 1].clone().requires_grad_(True)
        logits = model(xi)
        loss = F.cross_entropy(logits, case.y[i:i + 1])
        (g,) = torch.autograd.grad(loss, xi)
        loss, logits = loss.detach(), logits.detach()
        x_adv, _ = fgsm(model, x[i:i + 1], case.y[i:i + 1], eps, norm=norm)  # the attack on its own
        delta = (x_adv - x[i:i + 1]).detach()
        with torch.no_grad():
            logits_adv = model(x_adv)
            loss_adv = F.cross_entropy(logits_adv, case.y[i:i + 1])
        row = df.iloc[i]
        assert row["loss_clean"] == pytest.approx(float(loss), rel=tol, abs=tol)
        if "grad" in measures:
            assert row["grad_l1"] == pytest.approx(float(g.abs().sum()), rel=tol, abs=tol)
            assert row["grad_l2"] == pytest.approx(float(g.norm()), rel=tol, abs=tol)
            assert row["grad_linf"] == pytest.approx(float(g.abs().max()), rel=tol, abs=tol)
        if norm == "linf" and dtype == torch.float32 and bool((g.abs() <= 1e-4 * g.abs().max()).any()):
            continue  # a near-zero gradient entry may take either sign in batched float32: x_adv is ambiguous
        assert row["loss_adv"] == pytest.approx(float(loss_adv), rel=tol, abs=tol)
        assert bool(row["correct_clean"]) == bool(logits.argmax(1) == case.y[i]) or \
            float(logits.topk(2).values.diff().abs()) < 1e-4
        if "logit_var" in measures:
            assert row["logit_var"] == pytest.approx(_topk_sum((logits_adv - logits)[0]), rel=tol, abs=tol)
        if "taylor_gap" in measures:
            ref = float(loss_adv - loss - (g * delta).sum()) if float(delta.abs().max()) > 0 else 0.0
            assert row["taylor_gap"] == pytest.approx(ref, rel=1e2 * tol, abs=1e2 * tol)
        if "curv_adv" in measures:
            if hessians is None:
                hessians = _hessians(Case(model, x, case.y, dtype))
            d = delta.flatten().double()
            ref = float(d @ hessians[i] @ d / (d @ d)) if float(d.norm()) > 0 else 0.0
            assert row["curv_adv"] == pytest.approx(ref, rel=1e2 * tol, abs=1e2 * tol)


BAD_MEASURE_CALLS = [
    ("eps=-0.1", dict(eps=-0.1), ValueError, "eps"),
    ("eps=nan", dict(eps=math.nan), ValueError, "eps"),
    ("eps=inf", dict(eps=math.inf), ValueError, "eps"),
    ("unknown measure", dict(measures=["grad", "hessian"]), ValueError, "hessian"),
    ("unknown attack", dict(attack="cw"), ValueError, "attack"),
    ("norm", dict(norm="l0"), ValueError, "norm"),
    ("steps=0", dict(steps=0), ValueError, "steps"),
    ("batch_size=0", dict(batch_size=0), ValueError, "batch_size"),
    ("batch_size=-3", dict(batch_size=-3), ValueError, "batch_size"),
    ("batch_size=2.5", dict(batch_size=2.5), ValueError, "batch_size"),
    ("eig_iters=0", dict(eig_iters=0), ValueError, "eig_iters"),
    ("hvp_method", dict(hvp_method="lanczos"), ValueError, "hvp_method"),
    ("dtype int", dict(dtype=torch.int32), TypeError, "dtype"),
]


@FUZZ
@given(case=cases(), bad=st.sampled_from(BAD_MEASURE_CALLS), batch=st.sampled_from(sorted(BAD_BATCHES) + ["ok"]))
def test_measure_rejects_bad_arguments_and_batches(case, bad, batch):
    from landscape.measures import measure

    name, kwargs, exc, words = bad
    kwargs = {"eps": 0.1, "measures": ["grad"], **kwargs}
    if batch != "ok":  # a bad batch with good arguments
        x, y = _bad_batch(batch, case)
        exc, words = BAD_BATCHES[batch]
        kwargs = {"eps": 0.1, "measures": ["grad"]}
    else:
        x, y = case.x, case.y
    with pytest.raises(exc, match=words.replace("(", r"\(")):
        measure(case.model, x, y, **kwargs)
    _assert_no_param_grad(case.model)
    assert not case.model.training
