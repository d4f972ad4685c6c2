"""The closure autoencoder as a torch module (paper Section 4.1)."""

import torch
from torch import nn

from .closures import batch_jacobian
from .mlp import MLP


class ClosureAutoencoderModule(nn.Module):
    """Encoder ``phi = (phi*, phi_hat)`` with fixed observables and a closure
    network, and an MLP decoder ``psi`` of the closure's reconstruction target.

    Parameters
    ----------
    observables : callable or None
        ``(batch, n_features) -> (batch, n_observables)`` torch function; None
        for a plain autoencoder.
    n_observables : int
        Number d* of fixed observables.
    closure : torch.nn.Module
        A built closure network (see :mod:`skmacro.nn.closures`) with
        ``n_outputs = d - d*``.
    decoder_hidden : sequence of int
        Hidden widths of the decoder.
    activation : str
        Activation of the decoder.

    Attributes
    ----------
    z_mean, z_scale : torch.Tensor of shape (d,)
        Buffers standardising the latent coordinates at the decoder's input.
    """

    def __init__(self, observables, n_observables, closure, decoder_hidden, activation):
        super().__init__()
        self.observables = observables
        self.n_observables = int(n_observables)
        self.closure = closure
        n_components = self.n_observables + closure.n_outputs
        self.decoder = MLP(
            n_components, closure.target_width, tuple(decoder_hidden), activation
        )
        self.register_buffer("z_mean", torch.zeros(n_components))
        self.register_buffer("z_scale", torch.ones(n_components))

    def encode(self, x, jacobian=None):
        """Latent coordinates ``z = (phi*(x), phi_hat(x))``, shape (batch, d).

        A Jacobian of the same rows that carries the closure's values
        (``jacobian.closure.outputs``) saves the closure's forward pass.
        """
        parts = []
        if self.n_observables:
            parts.append(self.observables(x))
        if self.closure.n_outputs:
            known = None if jacobian is None else jacobian.closure
            outputs = getattr(known, "outputs", None)
            parts.append(self.closure(x) if outputs is None else outputs)
        return torch.cat(parts, dim=-1)

    def decode_target(self, z):
        """The decoder's reconstruction of ``closure.target(x)``, shape
        (batch, target_width), in the closure's standardised units."""
        return self.decoder((z - self.z_mean) / self.z_scale)

    def forward(self, x):
        return self.decode_target(self.encode(x))

    # -- a feature closure trained on its features computed once ------------
    def encode_features(self, y):
        """Latent coordinates from rows ``y = (phi*(x), s(x))`` of the
        observables and a feature closure's features (see
        :mod:`skmacro.nn.closures`), (batch, d* + P) -> (batch, d)."""
        d = self.n_observables
        parts = [y[:, :d]] if d else []
        if self.closure.n_outputs:
            parts.append(self.closure.head(y[:, d:]))
        return torch.cat(parts, dim=-1)

    def gram_from_features(self, G, s):
        """Encoder Gram matrices ``J J^T`` of a feature closure from the
        parameter-free Gram matrices of ``[J_o; F]`` (``F = ds/dx``): with
        ``M = diag(I, rho'(s))``, ``J J^T = M G M^T``; differentiable in the
        head's parameters.

        Parameters
        ----------
        G : torch.Tensor of shape (batch, d* + P, d* + P)
        s : torch.Tensor of shape (batch, P)
            The features at the same rows.

        Returns
        -------
        torch.Tensor of shape (batch, d, d)
        """
        d, k = self.n_observables, self.closure.n_outputs
        B, P = s.shape
        if not k:
            return G[:, :d, :d]
        A = batch_jacobian(self.closure.head, s).to(G)  # (B, k, P)
        bottom = torch.cat([A.new_zeros(B, k, d), A], dim=2)
        if d:
            eye = torch.eye(d, dtype=G.dtype, device=G.device).expand(B, d, d)
            top = torch.cat([eye, G.new_zeros(B, d, P)], dim=2)
            M = torch.cat([top, bottom], dim=1)
        else:
            M = bottom
        return M @ G @ M.transpose(1, 2)

    def jacobian(self, x, closure=None):
        """Encoder Jacobians ``phi'(x)`` at the rows of ``x`` as an
        :class:`EncoderJacobian`.

        Only the observables' d* rows are formed with n_features columns (one
        ``torch.func.jacrev`` of the batch sum: the observables act row by
        row); the closure's rows stay in the closure's structured form.
        Works inside or outside ``torch.no_grad``. ``closure`` may be a
        frozen view of the closure (``closure.frozen()``) for many calls at
        fixed parameters.
        """
        closure = self.closure if closure is None else closure
        J_o = batch_jacobian(self.observables, x) if self.n_observables else None
        J_c = closure.jacobian(x) if self.closure.n_outputs else None
        return EncoderJacobian(J_o, J_c, x.shape, x.device)


class EncoderJacobian:
    """A batch of encoder Jacobians ``J = [J_o; J_c]`` (d x N each): the
    observables' dense rows stacked on a closure's structured Jacobian.

    This is the Jacobian object of the encoder protocol
    (:mod:`skmacro.encoders`): ``columns``, ``matvec`` and ``gram`` cost what
    the closure's structure allows, and the dense ``J`` is formed only on
    request.

    Parameters
    ----------
    observable_rows : torch.Tensor of shape (batch, d*, N) or None
    closure : closure Jacobian or None
        See :mod:`skmacro.nn.closures`.
    shape : tuple of int
        ``(batch, N)``, the shape of the states.
    device : torch.device
        Where the states live.
    """

    def __init__(self, observable_rows, closure, shape, device):
        self.observable_rows, self.closure = observable_rows, closure
        self.shape, self.device = tuple(shape), device

    def _map(self, name, *args, **kwargs):
        rows, closure = self.observable_rows, self.closure
        # Where an empty tensor on this device would go.
        device = getattr(torch.empty(0, device=self.device), name)(*args, **kwargs)
        return EncoderJacobian(
            None if rows is None else getattr(rows, name)(*args, **kwargs),
            None if closure is None else getattr(closure, name)(*args, **kwargs),
            self.shape,
            device.device,
        )

    def to(self, *args, **kwargs):
        """The Jacobians moved or cast with ``torch.Tensor.to``."""
        return self._map("to", *args, **kwargs)

    def detach(self):
        """The Jacobians detached from the autograd graph."""
        return self._map("detach")

    @staticmethod
    def _stack(*blocks):
        """Row blocks (observables', closure's) stacked, absent ones skipped."""
        return torch.cat([b for b in blocks if b is not None], dim=1)

    def columns(self, index):
        """Selected columns ``J[b, :, index[b]]`` of each sample's Jacobian.

        Parameters
        ----------
        index : torch.Tensor of shape (batch, m), int64

        Returns
        -------
        torch.Tensor of shape (batch, d, m)
        """
        J_o = self.observable_rows
        return self._stack(
            None
            if J_o is None
            else torch.gather(J_o, 2, index.unsqueeze(1).expand(-1, J_o.shape[1], -1)),
            None if self.closure is None else self.closure.columns(index),
        )

    def matvec(self, v):
        """``J v`` for one vector per sample.

        Parameters
        ----------
        v : torch.Tensor of shape (batch, N)

        Returns
        -------
        torch.Tensor of shape (batch, d)
        """
        J_o = self.observable_rows
        return self._stack(
            None if J_o is None else (J_o @ v.unsqueeze(-1)).squeeze(-1),
            None if self.closure is None else self.closure.matvec(v),
        )

    def gram(self):
        """``J J^T``, shape (batch, d, d); the cross block ``J_c J_o^T`` comes
        from the closure's ``matvec`` on the observables' rows."""
        J_o, J_c = self.observable_rows, self.closure
        if J_c is None:
            return J_o @ J_o.transpose(1, 2)
        G_cc = J_c.gram()
        if J_o is None:
            return G_cc
        G_oc = J_c.matvec(J_o.transpose(1, 2)).transpose(1, 2)
        top = torch.cat([J_o @ J_o.transpose(1, 2), G_oc], dim=2)
        return torch.cat([top, torch.cat([G_oc.transpose(1, 2), G_cc], dim=2)], dim=1)

    def dense(self):
        """``J``, shape (batch, d, N): memory grows as ``batch * d * N``."""
        J_o, J_c = self.observable_rows, self.closure
        if J_c is None:
            return J_o
        batch, n_features = self.shape
        every = torch.arange(n_features, device=self.device).expand(batch, -1)
        return self.columns(every)


def condition_number(G):
    """Condition number ``kappa(J J^T)`` per sample (paper Eq. 46).

    Parameters
    ----------
    G : torch.Tensor of shape (batch, d, d)
        Gram matrices ``J J^T`` (see :meth:`EncoderJacobian.gram`).

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
