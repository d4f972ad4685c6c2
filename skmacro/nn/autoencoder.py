"""The closure autoencoder as a torch module (paper Section 4.1)."""

import torch
from torch import nn

from .mlp import MLP


class ClosureAutoencoderModule(nn.Module):
    """Encoder ``phi = (phi*, phi_hat)`` with fixed observables and an MLP
    closure, and an MLP decoder ``psi``.

    Inputs are standardised feature-wise inside the networks (the statistics
    are buffers, so Jacobians are taken with respect to the raw coordinates).

    Parameters
    ----------
    observables : callable or None
        ``(batch, n_features) -> (batch, n_observables)`` torch function; None
        for a plain autoencoder.
    n_features : int
        Microscopic dimension N.
    n_observables : int
        Number d* of fixed observables.
    n_components : int
        Total latent size d >= d*.
    hidden : sequence of int
        Hidden widths of the closure encoder; the decoder mirrors them.
    activation : str
        Activation name (smooth ones keep the Jacobian continuous).
    """

    def __init__(
        self,
        observables,
        n_features,
        n_observables,
        n_components,
        hidden=(64, 64),
        activation="softplus",
    ):
        super().__init__()
        self.observables = observables
        self.n_observables = n_observables
        n_closure = n_components - n_observables
        self.closure = (
            MLP(n_features, n_closure, hidden, activation) if n_closure else None
        )
        self.decoder = MLP(n_components, n_features, tuple(hidden)[::-1], activation)
        self.register_buffer("x_mean", torch.zeros(n_features))
        self.register_buffer("x_scale", torch.ones(n_features))
        self.register_buffer("z_mean", torch.zeros(n_components))
        self.register_buffer("z_scale", torch.ones(n_components))

    def encode(self, x):
        """Latent coordinates ``z = (phi*(x), phi_hat(x))``, shape (batch, d)."""
        parts = []
        if self.n_observables:
            parts.append(self.observables(x))
        if self.closure is not None:
            parts.append(self.closure((x - self.x_mean) / self.x_scale))
        return torch.cat(parts, dim=-1)

    def decode_standardized(self, z):
        """Reconstruction in standardised units, shape (batch, n_features)."""
        return self.decoder((z - self.z_mean) / self.z_scale)

    def decode(self, z):
        """Reconstruction ``psi(z)`` in the units of ``x``."""
        return self.decode_standardized(z) * self.x_scale + self.x_mean

    def forward(self, x):
        return self.decode_standardized(self.encode(x))

    def jacobian(self, x):
        """Per-sample encoder Jacobians ``phi'(x)``, shape (batch, d, n_features).

        Uses ``torch.func`` (reverse mode, one vector-Jacobian product per
        latent coordinate), so it works inside or outside ``torch.no_grad``.
        """

        def encode_one(row):
            return self.encode(row.unsqueeze(0)).squeeze(0)

        return torch.func.vmap(torch.func.jacrev(encode_one))(x)


def condition_number(J):
    """Condition number ``kappa(J J^T)`` per sample (paper Eq. 46).

    Parameters
    ----------
    J : torch.Tensor of shape (batch, d, n_features)

    Returns
    -------
    torch.Tensor of shape (batch,)
    """
    eig = torch.linalg.eigvalsh(J @ J.transpose(1, 2))
    return eig[:, -1].abs() / eig[:, 0].abs()


class ClosureAutoencoderLoss(nn.Module):
    """``L_AE = L_rec + lambda_cond * L_cond`` (paper Eq. 5-7).

    ``L_rec`` is the mean squared reconstruction error in standardised units;
    ``L_cond`` the mean of ``(kappa(J J^T) - 1)^2``.
    """

    def __init__(self, lambda_cond=1e-6):
        super().__init__()
        self.lambda_cond = lambda_cond

    def forward(self, x_hat_std, x_std, kappa=None):
        loss = torch.mean((x_hat_std - x_std) ** 2)
        if kappa is not None and self.lambda_cond:
            loss = loss + self.lambda_cond * torch.mean((kappa - 1.0) ** 2)
        return loss
