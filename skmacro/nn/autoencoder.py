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

        The encoder acts row by row, so the Jacobian of the batch sum of ``z``
        holds every sample's Jacobian: one ``torch.func.jacrev`` (d
        vector-Jacobian products over the batch), which is cheaper than
        vmapping a per-sample ``jacrev``. Works inside or outside
        ``torch.no_grad``.
        """
        return _batch_jacobian(self.encode, x)

    def gram(self, x):
        """Per-sample Gram matrices ``J J^T`` of ``J = phi'(x)``, shape
        (batch, d, d), without forming the closure rows of ``J``.

        The closure network's first layer is linear, ``a = W x_s + c`` with
        ``x_s = (x - mean) / scale``, so its rows are ``K W S^-1`` with ``K``
        the (d - d*, width) Jacobian of the remaining layers in ``a`` and
        ``S = diag(scale)``; then ``J_c J_c^T = K (W S^-2 W^T) K^T`` and the
        cross block with the observables' rows ``J_o`` is
        ``J_o S^-1 W^T K^T``. Only ``J_o`` (d* rows) has n_features columns,
        which makes the condition-number loss cheap for large N.
        """
        if self.closure is None:
            J_o = _batch_jacobian(self.observables, x)
            return J_o @ J_o.transpose(1, 2)
        first, rest = self.closure[0], nn.Sequential(*list(self.closure)[1:])
        K = _batch_jacobian(rest, first((x - self.x_mean) / self.x_scale))
        W_s = first.weight / self.x_scale
        G_cc = K @ (W_s @ W_s.T) @ K.transpose(1, 2)
        if not self.n_observables:
            return G_cc
        J_o = _batch_jacobian(self.observables, x)
        G_oc = (J_o @ W_s.T) @ K.transpose(1, 2)
        top = torch.cat([J_o @ J_o.transpose(1, 2), G_oc], dim=2)
        return torch.cat([top, torch.cat([G_oc.transpose(1, 2), G_cc], dim=2)], dim=1)


def _batch_jacobian(fn, x):
    """``(batch, out, in)`` Jacobians of a row-wise ``fn`` at the rows of ``x``."""
    return torch.func.jacrev(lambda rows: fn(rows).sum(0))(x).movedim(0, 1)


def condition_number(G):
    """Condition number ``kappa(J J^T)`` per sample (paper Eq. 46).

    Parameters
    ----------
    G : torch.Tensor of shape (batch, d, d)
        Gram matrices ``J J^T`` (see ``ClosureAutoencoderModule.gram``).

    Returns
    -------
    torch.Tensor of shape (batch,)
        NaN where ``G`` is not finite (a diverging network), so that the
        loss reports the divergence instead of LAPACK failing on it.
    """
    finite = torch.isfinite(G).all(dim=(1, 2))
    eye = torch.eye(G.shape[-1], dtype=G.dtype, device=G.device)
    eig = torch.linalg.eigvalsh(torch.where(finite[:, None, None], G, eye))
    kappa = eig[:, -1].abs() / eig[:, 0].abs()
    return torch.where(finite, kappa, torch.nan)


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
