"""The closure autoencoder as a torch module (paper Section 4.1)."""

import torch
from torch import nn

from .mlp import MLP


class ClosureAutoencoderModule(nn.Module):
    """Encoder ``phi = (phi*, phi_hat)`` with fixed observables and an MLP
    closure, and an MLP decoder ``psi``.

    Inputs are centred and scaled inside the networks by the buffers
    ``x_mean`` and ``x_scale`` (so Jacobians are taken with respect to the raw
    coordinates).

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
        """Reconstruction in the scaled units ``(x - x_mean) / x_scale``,
        shape (batch, n_features)."""
        return self.decoder((z - self.z_mean) / self.z_scale)

    def decode(self, z):
        """Reconstruction ``psi(z)`` in the units of ``x``."""
        return self.decode_standardized(z) * self.x_scale + self.x_mean

    def forward(self, x):
        return self.decode_standardized(self.encode(x))

    def jacobian(self, x):
        """Per-sample encoder Jacobians ``phi'(x)``, shape (batch, d, n_features).

        Works inside or outside ``torch.no_grad``; see
        :meth:`jacobian_factors` for the cheaper factored form.
        """
        return self.jacobian_factors(x).dense()

    def gram(self, x):
        """Per-sample Gram matrices ``J J^T`` of ``J = phi'(x)``, shape
        (batch, d, d), without forming the closure rows of ``J`` (see
        :meth:`jacobian_factors`), which makes the condition-number loss
        cheap for large N."""
        return self.jacobian_factors(x).gram()

    def jacobian_factors(self, x):
        """Encoder Jacobians at the rows of ``x`` as a :class:`FactoredJacobian`.

        The closure network's first layer is linear, ``a = W x_s + c`` with
        ``x_s = (x - mean) / scale``, so its Jacobian rows are ``K W S^-1``
        with ``K`` the (d - d*, width) Jacobian of the remaining layers in
        ``a`` and ``S = diag(scale)``. Only the observables' d* rows are
        computed with n_features columns. The encoder acts row by row, so each
        part is one ``torch.func.jacrev`` of the batch sum (d vector-Jacobian
        products over the batch) rather than a vmapped per-sample ``jacrev``.
        """
        J_o = _batch_jacobian(self.observables, x) if self.n_observables else None
        if self.closure is None:
            return FactoredJacobian(J_o, None, None)
        first, rest = self.closure[0], nn.Sequential(*list(self.closure)[1:])
        K = _batch_jacobian(rest, first((x - self.x_mean) / self.x_scale))
        return FactoredJacobian(J_o, K, first.weight / self.x_scale)


class FactoredJacobian:
    """A batch of encoder Jacobians ``J = [J_o; K W]`` kept in factors.

    Products with ``J`` cost O(d* N + (d - d*) width) per sample for sparse
    or low-rank operands instead of O(d N), and ``J`` itself (batch, d, N) is
    formed only on request.

    Parameters
    ----------
    observable_rows : torch.Tensor of shape (batch, d*, N) or None
        Jacobian of the fixed observables (None when d* = 0).
    K : torch.Tensor of shape (batch, d - d*, width) or None
        Jacobian of the closure after its first layer (None without closure).
    W : torch.Tensor of shape (width, N) or None
        The closure's first-layer weight in the units of ``x``.
    """

    def __init__(self, observable_rows, K, W):
        self.observable_rows, self.K, self.W = observable_rows, K, W

    def to(self, *args, **kwargs):
        """The factors moved or cast with ``torch.Tensor.to``."""
        return self._map(lambda t: t.to(*args, **kwargs))

    def detach(self):
        """The factors detached from the autograd graph."""
        return self._map(torch.Tensor.detach)

    def _map(self, fn):
        return FactoredJacobian(*(None if t is None else fn(t) for t in self._parts()))

    def _parts(self):
        return self.observable_rows, self.K, self.W

    @staticmethod
    def _stack(*blocks):
        """Row blocks (observables', closure's) stacked, absent ones skipped."""
        return torch.cat([b for b in blocks if b is not None], dim=1)

    def dense(self):
        """``J``, shape (batch, d, N)."""
        K, W = self.K, self.W
        return self._stack(self.observable_rows, None if K is None else K @ W)

    def gram(self):
        """``J J^T``, shape (batch, d, d): ``J_c J_c^T = K (W W^T) K^T``."""
        J_o, K, W = self._parts()
        if K is None:
            return J_o @ J_o.transpose(1, 2)
        G_cc = K @ (W @ W.T) @ K.transpose(1, 2)
        if J_o is None:
            return G_cc
        G_oc = (J_o @ W.T) @ K.transpose(1, 2)
        top = torch.cat([J_o @ J_o.transpose(1, 2), G_oc], dim=2)
        return torch.cat([top, torch.cat([G_oc.transpose(1, 2), G_cc], dim=2)], dim=1)

    def matvec(self, v):
        """``J v`` for one vector per sample.

        Parameters
        ----------
        v : torch.Tensor of shape (batch, N)

        Returns
        -------
        torch.Tensor of shape (batch, d)
        """
        J_o, K, W = self._parts()
        return self._stack(
            None if J_o is None else (J_o @ v.unsqueeze(-1)).squeeze(-1),
            None if K is None else (K @ (v @ W.T).unsqueeze(-1)).squeeze(-1),
        )

    def columns(self, index):
        """Selected columns ``J[b, :, index[b]]`` of each sample's Jacobian.

        Parameters
        ----------
        index : torch.Tensor of shape (batch, m), int64
            Coordinates to take, per sample.

        Returns
        -------
        torch.Tensor of shape (batch, d, m)
        """
        J_o, K, W = self._parts()
        return self._stack(
            None
            if J_o is None
            else torch.gather(J_o, 2, index.unsqueeze(1).expand(-1, J_o.shape[1], -1)),
            None if K is None else K @ W.T[index].transpose(1, 2),
        )


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

    ``L_rec`` is the mean squared reconstruction error in the scaled units
    of ``x``; ``L_cond`` the mean of ``(kappa(J J^T) - 1)^2``.
    """

    def __init__(self, lambda_cond=1e-6):
        super().__init__()
        self.lambda_cond = lambda_cond

    def forward(self, x_hat_std, x_std, kappa=None):
        loss = torch.mean((x_hat_std - x_std) ** 2)
        if kappa is not None and self.lambda_cond:
            loss = loss + self.lambda_cond * torch.mean((kappa - 1.0) ** 2)
        return loss
