"""The Frechet distance between two sets of feature vectors, each summarised as a Gaussian.

``d^2 = |mu_a - mu_b|^2 + Tr(S_a) + Tr(S_b) - 2 Tr((S_a S_b)^(1/2))``: the formula of FID, in whatever feature
space the vectors come from. Here the trace of the matrix square root is computed exactly without
``scipy.linalg.sqrtm``: ``S_a S_b`` has the eigenvalues of the symmetric positive semi-definite
``S_a^(1/2) S_b S_a^(1/2)``, so ``Tr((S_a S_b)^(1/2))`` is the sum of the square roots of those (two symmetric
eigendecompositions in float64, no complex parts to discard, no dependency).

With few samples the estimate is biased upwards (the covariances are noisy, and rank-deficient when there are
fewer samples than dimensions): compare distances only at equal sample counts, and report the counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vislang.errors import VislangError

METHOD = "eigh (exact trace of the matrix square root via symmetric eigendecompositions, float64)"
"""How the matrix square root is computed, for reports."""


@dataclass(frozen=True)
class Gaussian:
    """Mean ``(D,)`` and covariance ``(D, D)`` of a set of ``n`` feature vectors (float64)."""

    mean: np.ndarray
    cov: np.ndarray
    n: int


def _as_features(x: object, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().double().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or len(a) < 1:
        raise VislangError(f"Frechet distance: {name} must be a non-empty (N, D) array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise VislangError(f"Frechet distance: {name} holds NaN or infinite values")
    return a


def gaussian_stats(features: object, name: str = "features") -> Gaussian:
    """Mean and covariance (``N - 1`` normalisation; zero for a single vector) of ``features`` ``(N, D)``."""
    a = _as_features(features, name)
    mean = a.mean(axis=0)                                                     # (D,)
    centred = a - mean                                                        # (N, D)
    cov = centred.T @ centred / max(len(a) - 1, 1)                            # (D, D)
    return Gaussian(mean, cov, len(a))


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix (negative rounding clipped)."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(a: np.ndarray, b: np.ndarray) -> float:
    """``Tr((A B)^(1/2))`` of two symmetric positive semi-definite matrices (the eigenvalues of ``A B`` are those
    of ``A^(1/2) B A^(1/2)``, real and non-negative)."""
    root = _psd_sqrt(a)
    inner = root @ b @ root
    w = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def frechet_from_stats(a: Gaussian, b: Gaussian) -> float:
    """The Frechet distance (squared, as FID reports it) between two Gaussians; never negative."""
    if a.mean.shape != b.mean.shape:
        raise VislangError(f"Frechet distance: features of different widths ({a.mean.shape[0]} and "
                           f"{b.mean.shape[0]})")
    diff = a.mean - b.mean
    d = float(diff @ diff) + float(np.trace(a.cov)) + float(np.trace(b.cov)) - 2.0 * trace_sqrt_product(a.cov, b.cov)
    return max(d, 0.0)


def frechet_distance(features_a: object, features_b: object) -> float:
    """The Frechet distance between feature sets ``(N_a, D)`` and ``(N_b, D)`` (numpy or torch).

    Raises:
        VislangError: A set is empty, not 2-D, holds NaN, or the widths differ.
    """
    return frechet_from_stats(gaussian_stats(features_a, "the first set"), gaussian_stats(features_b, "the second set"))
