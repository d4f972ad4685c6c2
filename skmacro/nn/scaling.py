"""Unit handling around a latent vector field."""

import torch
from torch import nn


class ScaledVectorField(nn.Module):
    """``g(z) = (s / tau) * h((z - mu) / s)`` for a network ``h`` that works on
    standardised coordinates.

    This is the exact change of variables ``z_n = (z - mu) / s`` plus a time
    unit ``tau``, so a structure that ``h`` guarantees in ``z_n`` (a
    non-increasing Onsager potential, GENERIC degeneracy) carries over to
    ``z``: ``-(M + W) grad V`` becomes ``-(S (M + W) S / tau) grad_z V`` with
    ``S = diag(s)``, still symmetric-PSD plus antisymmetric. With a
    :class:`~skmacro.nn.VectorFieldEnsemble` as ``h`` the same change of
    variables applies to every member, so each keeps its own structure.

    Parameters
    ----------
    field : torch.nn.Module
        ``(batch, d) -> (batch, d)`` on standardised coordinates, or an
        ensemble ``(batch, d) or (k, batch, d) -> (k, batch, d)``.
    n_components : int
        Latent size d.

    Shapes: input (..., d) as ``field`` accepts it, output the shape
    ``field`` returns, (batch, d) or (k, batch, d).
    """

    def __init__(self, field, n_components):
        super().__init__()
        self.field = field
        self.register_buffer("z_mean", torch.zeros(n_components))
        self.register_buffer("z_scale", torch.ones(n_components))
        self.register_buffer("time_scale", torch.ones(()))

    def forward(self, z):
        z_n = (z - self.z_mean) / self.z_scale
        return self.field(z_n) * (self.z_scale / self.time_scale)
