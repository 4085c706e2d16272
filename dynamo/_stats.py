"""Small statistics used by estimates: exact binomial intervals and species-richness estimators."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .errors import InvalidArgumentError

__all__ = ["UnseenEstimate", "chao1", "clopper_pearson"]


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper–Pearson) two-sided interval for a binomial proportion ``k / n``.

    The interval inverts two one-sided binomial tests, so its coverage is at least ``confidence``
    for every true proportion (conservative, never below). Clopper & Pearson, Biometrika 26
    (1934); computed from beta quantiles with scipy.

    Parameters
    ----------
    k : int
        Successes, ``0 <= k <= n``.
    n : int
        Trials, at least 1.
    confidence : float
        In ``(0, 1)``.

    Returns
    -------
    (float, float)
        Lower and upper end; 0 when ``k = 0`` and 1 when ``k = n``.

    Examples
    --------
    >>> from dynamo import clopper_pearson
    >>> lo, hi = clopper_pearson(32, 32)
    >>> round(lo, 4), hi
    (0.8911, 1.0)
    """
    if n < 1 or not 0 <= k <= n:
        raise InvalidArgumentError(f"clopper_pearson(k={k}, n={n}): need 0 <= k <= n and n >= 1")
    if not 0 < confidence < 1:
        raise InvalidArgumentError(
            f"clopper_pearson(k={k}, n={n}, confidence={confidence}): confidence must be in (0, 1)"
        )
    from scipy import stats  # imported on use: scipy.stats costs ~0.3 s at `import dynamo`

    alpha = 1 - confidence
    lo = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


@dataclass(frozen=True)
class UnseenEstimate:
    """How many attractors a multi-start search may have missed (an estimate).

    Attributes
    ----------
    observed : int
        Distinct attractors seen.
    f1, f2 : int
        Attractors seen from exactly one / exactly two starts.
    chao1 : float
        Chao1 estimate of the total ``observed + f1²/(2 f2)`` (bias-corrected
        ``observed + f1(f1 − 1)/2`` when ``f2 = 0``).
    unseen : float
        ``chao1 − observed``.
    unseen_upper : float
        Upper end of the 95% log-normal interval for the unseen count (Chao 1987).
    min_detectable_fraction : float
        Any attractor whose basin holds at least this fraction of the start distribution would
        have been hit with probability 0.95 by ``n`` independent starts: ``1 − 0.05^(1/n)``.
    n : int
        Starts.

    Examples
    --------
    >>> from dynamo import chao1
    >>> print(chao1([50, 30, 1, 1, 2], n=84))  # doctest: +ELLIPSIS
    5 found; estimated <= ... unseen at 95% (Chao1 ...); any attractor with basin >= ...
    """

    observed: int
    f1: int
    f2: int
    chao1: float
    unseen: float
    unseen_upper: float
    min_detectable_fraction: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe.

        >>> from dynamo import chao1
        >>> d = chao1([50, 30, 1, 1, 2], n=84).to_dict()
        >>> d["observed"], d["f1"], d["f2"], d["n"]
        (5, 2, 1, 84)
        """
        return {
            "observed": self.observed,
            "f1": self.f1,
            "f2": self.f2,
            "chao1": self.chao1,
            "unseen": self.unseen,
            "unseen_upper_95": self.unseen_upper,
            "min_detectable_fraction_95": self.min_detectable_fraction,
            "n": self.n,
        }

    def __str__(self) -> str:
        return (
            f"{self.observed} found; estimated <= {math.ceil(self.unseen_upper - 1e-9)} unseen at "
            f"95% (Chao1 {self.chao1:.1f}); any attractor with basin >= "
            f"{100 * self.min_detectable_fraction:.2g}% of starts would have been seen with "
            f"95% probability"
        )


def chao1(
    counts: list[int] | tuple[int, ...], n: int, *, draws: int | None = None
) -> UnseenEstimate:
    """Chao1 estimate of unseen classes from per-class counts, with its 95% upper bound.

    Parameters
    ----------
    counts : sequence of int
        How many starts reached each attractor that was seen (positive integers).
    n : int
        Number of starts (including those that reached nothing).
    draws : int, optional
        Independent starts from one start distribution, for the detectable basin size (default
        ``n``; with several inputs searched separately, the starts per input).

    References
    ----------
    A. Chao, "Estimating the population size for capture-recapture data with unequal
    catchability", Biometrics 43(4), 1987.

    Examples
    --------
    >>> from dynamo import chao1
    >>> est = chao1([50, 30, 1, 1, 2], n=84)
    >>> est.observed, est.f1, est.f2, round(est.chao1, 3)
    (5, 2, 1, 7.0)
    """
    if any((not isinstance(c, int)) or c < 1 for c in counts):
        raise InvalidArgumentError("chao1(counts, n): counts must be positive integers")
    if n < max(1, sum(counts)):
        raise InvalidArgumentError(f"chao1(counts, n={n}): n must be >= sum(counts) and >= 1")
    s_obs = len(counts)
    f1 = sum(1 for c in counts if c == 1)
    f2 = sum(1 for c in counts if c == 2)
    if f2 > 0:
        f0 = f1 * f1 / (2 * f2)
        r = f1 / f2
        var = f2 * (0.5 * r**2 + r**3 + 0.25 * r**4)
    else:
        f0 = f1 * (f1 - 1) / 2
        var = f1 * (f1 - 1) / 2 + f1 * (2 * f1 - 1) ** 2 / 4 - f1**4 / (4 * max(f0 + s_obs, 1))
        var = max(var, 0.0)
    if f0 > 0 and var > 0:
        c = math.exp(1.96 * math.sqrt(math.log(1 + var / f0**2)))
        upper = f0 * c
    else:
        upper = f0
    return UnseenEstimate(
        observed=s_obs,
        f1=f1,
        f2=f2,
        chao1=s_obs + f0,
        unseen=f0,
        unseen_upper=upper,
        min_detectable_fraction=1 - 0.05 ** (1 / (n if draws is None else draws)),
        n=n,
    )
