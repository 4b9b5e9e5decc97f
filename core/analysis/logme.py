"""LogME: how well a linear model on frozen features can explain the labels (You et al., 2021).

"LogME: Practical Assessment of Pre-trained Models for Transfer Learning", ICML 2021. Each class
is a 0/1 target ``y``; a Bayesian linear model ``y = F w + noise`` with prior ``w ~ N(0, I/alpha)``
and noise ``N(0, 1/beta)`` gives ``y`` a Gaussian marginal likelihood (the evidence). LogME
maximises it over ``alpha`` and ``beta`` by the paper's fixed-point iteration, in the basis of
``F``'s singular vectors where every quantity is a sum over singular values, and reports the
maximised log evidence per sample, averaged over classes. Higher is better; the value is
comparable between feature extractors on the same images and labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

MAX_ITERATIONS = 100
TOLERANCE = 1e-5  # relative change of alpha / beta that counts as converged


@dataclass(frozen=True)
class Spectrum:
    """The features ``F`` (n x d) as LogME needs them: the squared singular values, and a way
    to write targets in the left singular basis; computed once, shared by every class.

    Whichever of ``F F^T`` (n x n) and ``F^T F`` (d x d) is smaller is diagonalised: the
    same singular values, at a fraction of a full SVD's cost.
    """

    n: int
    d: int
    sigma2: torch.Tensor  # [r] squared singular values, r = min(n, d)
    u: torch.Tensor | None  # [n, r] left singular vectors (when n <= d)
    features: torch.Tensor | None  # F, to project through V when n > d
    v: torch.Tensor | None  # [d, r] right singular vectors (when n > d)

    @classmethod
    def of(cls, features: torch.Tensor) -> Spectrum:
        f = features.double()
        n, d = f.shape
        if n <= d:
            sigma2, u = torch.linalg.eigh(f @ f.T)
            return cls(n, d, sigma2.clamp_min(0), u, None, None)
        sigma2, v = torch.linalg.eigh(f.T @ f)
        return cls(n, d, sigma2.clamp_min(0), None, f, v)

    def project(self, targets: torch.Tensor) -> torch.Tensor:
        """``U^T Y``: via ``U = F V / sigma`` when only V is known (zero where sigma is)."""
        if self.u is not None:
            return self.u.T @ targets
        sigma = self.sigma2.sqrt()
        scale = torch.where(sigma > sigma.max() * 1e-10, 1 / sigma, torch.zeros_like(sigma))
        return scale.view(-1, 1) * (self.v.T @ (self.features.T @ targets))


def log_evidence(
    spectrum: Spectrum, targets: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor
) -> torch.Tensor:
    """``log p(y | F, alpha, beta)`` per sample for each column ``y`` of ``targets`` [n, k], in
    closed form (the paper's equation 2); ``alpha`` and ``beta`` hold one value per column."""
    n, d = spectrum.n, spectrum.d
    z, outside = _projected(spectrum, targets)
    s = spectrum.sigma2.view(-1, 1)
    t = alpha + beta * s
    m2 = (beta**2 * s * z**2 / t**2).sum(dim=0)
    residual = ((alpha * z / t) ** 2).sum(dim=0) + outside
    # log det(alpha I + beta F^T F) over all d dimensions: those F does not span add log alpha.
    log_det = torch.log(t).sum(dim=0) + (d - len(s)) * torch.log(alpha)
    evidence = (
        n / 2 * torch.log(beta)
        + d / 2 * torch.log(alpha)
        - n / 2 * math.log(2 * math.pi)
        - beta / 2 * residual
        - alpha / 2 * m2
        - log_det / 2
    )
    return evidence / n


def fit(spectrum: Spectrum, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per column of ``targets`` [n, k], the ``(alpha, beta)`` that maximise its evidence, by
    MacKay's fixed point, all columns at once."""
    z, outside = _projected(spectrum, targets)
    s = spectrum.sigma2.view(-1, 1)
    alpha = torch.ones(targets.shape[1], dtype=torch.float64)
    beta = torch.ones_like(alpha)
    for _ in range(MAX_ITERATIONS):
        t = alpha + beta * s
        gamma = (beta * s / t).sum(dim=0)
        m2 = (beta**2 * s * z**2 / t**2).sum(dim=0)
        residual = ((alpha * z / t) ** 2).sum(dim=0) + outside
        new_alpha = gamma / m2.clamp_min(1e-12)
        new_beta = (spectrum.n - gamma) / residual.clamp_min(1e-12)
        change = torch.maximum((new_alpha / alpha - 1).abs(), (new_beta / beta - 1).abs())
        alpha, beta = new_alpha, new_beta
        if float(change.max()) <= TOLERANCE:
            break
    return alpha, beta


def logme(features: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> float:
    """LogME of ``features`` [n, d] for integer ``labels`` [n]: the mean over classes of the
    maximised log evidence per sample of that class's one-vs-rest target."""
    spectrum = Spectrum.of(features)
    classes = num_classes or int(labels.max()) + 1
    targets = torch.nn.functional.one_hot(labels.long(), classes).double()
    return float(log_evidence(spectrum, targets, *fit(spectrum, targets)).mean())


def _projected(spectrum: Spectrum, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The targets in the singular basis, and the squared part of each no linear map of F reaches."""
    targets = targets.double()
    z = spectrum.project(targets)
    outside = ((targets**2).sum(dim=0) - (z**2).sum(dim=0)).clamp_min(0)
    return z, outside
