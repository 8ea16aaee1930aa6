"""Trivial maps that know nothing about the image: the floor any method must beat.

- uniform: a constant map. The metrics treat it as uninformative: no predicted pixel,
  pointing game and relevance mass equal to the mask's area share, PxAP = defect share.
- centre Gaussian: ``exp(-r^2 / (2 sigma^2))`` around the tile centre, sigma a share of
  the side; it wins whenever defects sit near tile centres (a dataset bias check).
"""

from __future__ import annotations

import numpy as np

__all__ = ["uniform_maps", "centre_gaussian_maps", "trivial_maps"]


def uniform_maps(batch: int, size: int) -> np.ndarray:
    """(batch, size, size) of ones."""
    return np.ones((batch, size, size), np.float32)


def centre_gaussian_maps(batch: int, size: int, sigma: float = 0.25) -> np.ndarray:
    """(batch, size, size) centred Gaussians with standard deviation ``sigma * size``."""
    c = (np.arange(size) + 0.5) - size / 2
    g = np.exp(-(c[:, None] ** 2 + c[None, :] ** 2) / (2 * (sigma * size) ** 2))
    return np.broadcast_to(g.astype(np.float32), (batch, size, size))


def trivial_maps(batch: int, size: int) -> dict[str, np.ndarray]:
    """Both trivial baselines, keyed by their report names."""
    return {"Uniform": uniform_maps(batch, size), "Centre Gaussian": centre_gaussian_maps(batch, size)}
