"""Sound float64 arithmetic for the rules: singular values rounded outward, products of
nonnegative bounds, and the norm interval of an affine map."""

from __future__ import annotations

import math

import torch

__all__ = ["U64", "linear_interval", "mul", "sigma", "sigma_min", "vnorm"]

U64 = 2.0**-53  # unit roundoff of float64


def svd_slack(w: torch.Tensor) -> float:
    """Relative slack covering a float64 SVD's error.

    A backward-stable SVD returns the exact singular values of ``A + E`` with
    ``‖E‖₂ <= p(m, n)·u·‖A‖₂``; by Weyl's inequality each computed value is within ``‖E‖₂`` of
    the true one. ``p = 16·max(m, n)`` is generous for LAPACK's one-sided methods.
    """
    return 16.0 * max(w.shape[-2:]) * U64


def sigma(w: torch.Tensor) -> float:
    """An upper bound on the largest singular value: the float64 SVD's value rounded outward.

    With ``γ`` the slack of :func:`svd_slack`, ``σ <= σ̂ + γσ``, so ``σ <= σ̂/(1 − γ)``.
    """
    w = w.detach().double()
    value = float(torch.linalg.matrix_norm(w, ord=2))
    return math.nextafter(value / (1.0 - svd_slack(w)), math.inf)


def sigma_min(w: torch.Tensor) -> float:
    """A lower bound on the smallest singular value of a square matrix (0 for a wide or tall
    one): ``σ̂_min − γ·σ_max``, rounded down and clamped at 0."""
    w = w.detach().double()
    if w.shape[0] != w.shape[1]:
        return 0.0
    sv = torch.linalg.svdvals(w)
    gamma = svd_slack(w)
    low = float(sv[-1]) - gamma * float(sv[0]) / (1.0 - gamma)
    return max(0.0, math.nextafter(low, -math.inf))


def vnorm(b: torch.Tensor | None) -> float:
    return 0.0 if b is None else float(b.detach().double().norm())


def mul(a: float, b: float) -> float:
    """Product of nonnegative bounds with ``0 · inf = 0`` (a zero map sends everything to 0)."""
    return 0.0 if a == 0 or b == 0 else a * b


def linear_interval(
    w: torch.Tensor, b: torch.Tensor | None, lo: float, hi: float
) -> tuple[float, float]:
    s, smin, bn = sigma(w), sigma_min(w), vnorm(b)
    return max(0.0, mul(smin, lo) - bn), mul(s, hi) + bn
