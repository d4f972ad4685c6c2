"""Training criteria of the two estimators."""

import torch
from torch import nn


class ClosureAutoencoderLoss(nn.Module):
    """``L_AE = L_rec + lambda_cond * L_cond`` (paper Eq. 5-7).

    ``L_rec`` is the mean squared error between the decoder's output and the
    closure's reconstruction target (both in the closure's standardised
    units); ``L_cond`` the mean of ``(kappa(J J^T) - 1)^2``.

    Parameters
    ----------
    lambda_cond : float, default=1e-6
    """

    def __init__(self, lambda_cond=1e-6):
        super().__init__()
        self.lambda_cond = lambda_cond

    def forward(self, target_hat, target, kappa=None):
        loss = torch.mean((target_hat - target) ** 2)
        if kappa is not None and self.lambda_cond:
            loss = loss + self.lambda_cond * torch.mean((kappa - 1.0) ** 2)
        return loss


class QuadraticFormLoss(nn.Module):
    """Mean over configurations of ``c - 2 g^T b + g^T A g``.

    Every training loss of :class:`~skmacro.PartialForceDynamics` has this
    form (see :func:`skmacro.statistics.partial_force_statistics`), so
    training costs O(d^2) per configuration whatever the microscopic
    dimension N.

    Shapes: ``g`` and ``b`` (..., batch, d), ``A`` (..., batch, d, d), ``c``
    (..., batch,), broadcast against each other; the mean is over the batch
    axis only, so leading axes (the members of an ensemble) are kept: the
    output has shape (...,), a scalar for a single model.
    """

    def forward(self, g, b, A, c):
        # A batched matrix-vector product is cheaper than a three-operand
        # einsum at the batch sizes used here.
        Ag = torch.matmul(A, g.unsqueeze(-1)).squeeze(-1)
        return torch.mean(c + torch.sum(g * (Ag - 2.0 * b), dim=-1), dim=-1)
