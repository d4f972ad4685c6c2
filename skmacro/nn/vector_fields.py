"""Latent vector fields ``g_θ(z) = dz/dt``: a plain MLP and two structured models.

The paper (Chen & Li, section 5.2 and appendix C) learns the macroscopic
dynamics with three latent models: an MLP, OnsagerNet (Yu et al., 2021) and
GFINNs (Zhang et al., 2022). The two structured ones are built so that a
thermodynamic law holds for *every* value of the weights, not only after
training:

* :class:`OnsagerNet` dissipates a potential bounded below, which keeps long
  rollouts bounded;
* :class:`GFINN` conserves an energy and produces an entropy (GENERIC).

All three map ``(batch, n_components) -> (batch, n_components)``, can be
trained by back-propagation through ``forward`` (the structured models
differentiate a learned scalar inside ``forward`` with ``create_graph=True``)
and can be called under ``torch.no_grad()`` for rollouts. They never modify
their input.

References
----------
.. [1] H. Yu, X. Tian, W. E and Q. Li, "OnsagerNet: Learning stable and
   interpretable dynamics using a generalized Onsager principle",
   Phys. Rev. Fluids 6, 114402 (2021).
.. [2] Z. Zhang, Y. Shin and G. E. Karniadakis, "GFINNs: GENERIC formalism
   informed neural networks for deterministic and stochastic dynamical
   systems", Phil. Trans. R. Soc. A 380, 20210207 (2022).
"""

import math

import torch
from torch import nn

from .._validation import check_choice
from .mlp import MLP

__all__ = [
    "MLPVectorField",
    "OnsagerNet",
    "GFINN",
    "LATENT_MODELS",
    "resolve_latent_model",
]


def _input_gradients(z, *scalar_fns):
    """Gradients of per-sample scalar functions with respect to ``z``.

    Parameters
    ----------
    z : torch.Tensor of shape (batch, d)
    *scalar_fns : callables mapping (batch, d) to (batch,)

    Returns
    -------
    list of torch.Tensor of shape (batch, d)
        One gradient per function. They carry a graph (so that a loss on them
        can be back-propagated to the weights, a second derivative) exactly
        when gradient recording was on at the call, and not under
        ``torch.no_grad()``, where rollouts need no graph.
    """
    create_graph = torch.is_grad_enabled()
    # ``inference_mode(False)`` lets ``torch.inference_mode()`` rollouts work
    # too: the clone below is then an ordinary tensor that autograd accepts.
    with torch.inference_mode(False), torch.enable_grad():
        # Differentiate through ``z`` itself when it is already part of a
        # graph (higher derivatives in z stay available); otherwise on a
        # detached copy, so the caller's tensor is never flagged or changed.
        zg = z if z.requires_grad else z.detach().clone().requires_grad_(True)
        grads = []
        for fn in scalar_fns:
            # Samples are independent, so the gradient of the batch sum is
            # the batch of per-sample gradients: one backward pass, no vmap.
            (g,) = torch.autograd.grad(fn(zg).sum(), zg, create_graph=create_graph)
            grads.append(g)
    return grads


def _apply(matrix, vector):
    """Batched matrix-vector product, (B, d, d) @ (B, d) -> (B, d)."""
    return torch.matmul(matrix, vector.unsqueeze(-1)).squeeze(-1)


class MLPVectorField(nn.Module):
    """Unstructured latent vector field ``dz/dt = MLP(z)``.

    The baseline of the paper's section 5.2 (its reference code used two
    hidden layers of 256 ReLU units and Xavier-uniform weights; here the
    width and activation are hyper-parameters and PyTorch's default
    initialisation is kept).

    Parameters
    ----------
    n_components : int
        Latent dimension d.
    hidden : sequence of int, default=(64, 64)
        Hidden layer widths.
    activation : str, default="softplus"
        Name from :data:`skmacro.nn.mlp.ACTIVATIONS`. Softplus is smooth
        and grows linearly away from the data, so the learned field
        extrapolates linearly where tanh units would saturate into a
        constant drift; rollouts that leave the training states (few
        training trajectories) stay closer to the truth.

    Examples
    --------
    >>> import torch
    >>> g = MLPVectorField(3)
    >>> g(torch.zeros(5, 3)).shape
    torch.Size([5, 3])
    """

    def __init__(self, n_components, *, hidden=(64, 64), activation="softplus"):
        super().__init__()
        self.n_components = int(n_components)
        self.net = MLP(self.n_components, self.n_components, hidden, activation)

    def forward(self, z):
        """Return ``dz/dt`` of shape (batch, n_components) for ``z`` of the
        same shape."""
        return self.net(z)


class OnsagerNet(nn.Module):
    """Generalised Onsager vector field (Yu et al. 2021, Eq. 2.6 there).

    .. math::

        \\dot z = -\\bigl(M(z) + W(z)\\bigr)\\nabla V(z) + f(z),

    with

    * ``M = A Aᵀ + alpha I``, ``A`` the lower triangle of an MLP output, so
      ``M`` is symmetric positive definite;
    * ``W = U - Uᵀ``, ``U`` the strict upper triangle of the same output, so
      ``W`` is antisymmetric;
    * ``V(z) = beta |z|² + ½ |h(z) + Γ z|²`` with ``h`` an MLP and ``Γ`` a
      linear map: bounded below by ``beta |z|²``;
    * ``f`` an optional external force (an MLP), off by default.

    Without forcing, ``dV/dt = -∇Vᵀ M ∇V ≤ -alpha |∇V|²`` for any weights,
    and since ``V`` grows like ``beta |z|²`` latent trajectories stay
    bounded. This is the structure the paper uses for its predator-prey,
    Allen-Cahn and Lennard-Jones latent models (appendix C).

    Parameters
    ----------
    n_components : int
        Latent dimension d.
    hidden : sequence of int, default=(64, 64)
        Hidden widths of each sub-network (potential, matrices, forcing).
    activation : str, default="tanh"
        Name from :data:`skmacro.nn.mlp.ACTIVATIONS`. It must be
        differentiable (the loss involves ``∇V``, so training needs second
        derivatives); "relu" gives a piecewise-constant ``∇h``.
    n_potential : int, optional
        Output width of ``h`` and ``Γ``; defaults to ``n_components``.
    alpha : float, default=0.01
        Added to the diagonal of ``M``; the minimum dissipation rate.
    beta : float, default=0.1
        Weight of the confining term ``beta |z|²`` of ``V``.
    forcing : bool, default=False
        Add a learned external force ``f(z)``; the dissipation law then no
        longer holds.

    Notes
    -----
    Differences from the paper's reference code: its predator-prey model
    uses the same ``V``, ``alpha=0.01`` and ``beta=0.1`` but separate fixed
    32/64-wide networks and a ``vmap(jacrev)`` gradient; its Lennard-Jones
    variant (adapted from Yu et al.'s code) shares hidden layers between
    ``V`` and the matrices, uses ResNet layers, a ReLU²-type activation,
    ``V = |h + Γz|² + beta|z|²`` without the ½, ``alpha=0.1`` and forcing on,
    and sets ``requires_grad`` on its input in place. Here the sub-networks
    are separate, the gradient is one backward pass of the summed potential,
    and the input is left untouched.

    Examples
    --------
    >>> import torch
    >>> g = OnsagerNet(2)
    >>> z = torch.randn(4, 2)
    >>> g(z).shape, g.potential(z).shape
    (torch.Size([4, 2]), torch.Size([4]))
    """

    def __init__(
        self,
        n_components,
        *,
        hidden=(64, 64),
        activation="tanh",
        n_potential=None,
        alpha=0.01,
        beta=0.1,
        forcing=False,
    ):
        super().__init__()
        d = self.n_components = int(n_components)
        n_potential = d if n_potential is None else int(n_potential)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.potential_net = MLP(d, n_potential, hidden, activation)
        self.gamma = nn.Linear(d, n_potential, bias=False)
        self.matrix_net = MLP(d, d * d, hidden, activation)
        self.force_net = MLP(d, d, hidden, activation) if forcing else None

    def potential(self, z):
        """Potential ``V(z) = beta |z|² + ½ |h(z) + Γ z|²``.

        Parameters
        ----------
        z : torch.Tensor of shape (batch, n_components)

        Returns
        -------
        torch.Tensor of shape (batch,)
        """
        u = self.potential_net(z) + self.gamma(z)
        return self.beta * z.square().sum(-1) + 0.5 * u.square().sum(-1)

    def matrices(self, z):
        """Dissipative and conservative matrices at ``z``.

        Parameters
        ----------
        z : torch.Tensor of shape (batch, n_components)

        Returns
        -------
        M : torch.Tensor of shape (batch, n_components, n_components)
            Symmetric positive definite (eigenvalues ≥ ``alpha``).
        W : torch.Tensor of shape (batch, n_components, n_components)
            Antisymmetric.
        """
        d = self.n_components
        a = self.matrix_net(z).reshape(-1, d, d)
        lower = torch.tril(a)
        upper = torch.triu(a, diagonal=1)
        eye = torch.eye(d, dtype=a.dtype, device=a.device)
        m = lower @ lower.transpose(-1, -2) + self.alpha * eye
        w = upper - upper.transpose(-1, -2)
        return m, w

    def forward(self, z):
        """Return ``dz/dt = -(M + W)∇V + f``, shape (batch, n_components)."""
        (grad_v,) = _input_gradients(z, self.potential)
        m, w = self.matrices(z)
        dz = -_apply(m + w, grad_v)
        if self.force_net is not None:
            dz = dz + self.force_net(z)
        return dz

    def extra_repr(self):
        return (
            f"n_components={self.n_components}, alpha={self.alpha}, "
            f"beta={self.beta}, forcing={self.force_net is not None}"
        )


class GFINN(nn.Module):
    """GENERIC-formalism-informed vector field (Zhang et al. 2022).

    .. math::

        \\dot z = L(z)\\nabla E(z) + M(z)\\nabla S(z),

    with ``E`` (energy) and ``S`` (entropy) scalar MLPs, ``L`` antisymmetric,
    ``M`` symmetric positive semi-definite and the degeneracy conditions
    ``L ∇S = 0`` and ``M ∇E = 0`` built in, following the construction of
    GFINNs: with ``K`` learnable antisymmetric matrices ``Ξ_k`` (d × d)
    let the rows of ``B_S`` (K × d) be ``∇Sᵀ Ξ_k``; each row is orthogonal to
    ``∇S`` because ``∇Sᵀ Ξ_k ∇S = 0``. Then

    * ``L = B_Sᵀ Σ(z) B_S`` with ``Σ = C - Cᵀ`` antisymmetric (K × K),
    * ``M = B_Eᵀ D(z) D(z)ᵀ B_E`` with ``B_E`` built from ``∇E`` and its own
      tensors,

    where ``C`` and ``D`` come from one MLP of ``z``. Consequently, for any
    weights, ``dE/dt = ∇Eᵀ L ∇E + (M ∇E)ᵀ ∇S = 0`` and
    ``dS/dt = ∇Sᵀ M ∇S ≥ 0``. No division by ``|∇S|`` or ``|∇E|`` is
    involved, so the field is smooth everywhere.

    Parameters
    ----------
    n_components : int
        Latent dimension d ≥ 2 (in one dimension every antisymmetric matrix
        vanishes and the construction gives ``dz/dt = 0``).
    hidden : sequence of int, default=(64, 64)
        Hidden widths of the energy, entropy and matrix networks.
    activation : str, default="tanh"
        Name from :data:`skmacro.nn.mlp.ACTIVATIONS`; it must be
        differentiable (training needs second derivatives of ``E`` and
        ``S``).
    n_tensors : int, optional
        K, the number of antisymmetric tensors ``Ξ_k`` per bracket; defaults
        to ``n_components`` as in the paper's code. ``K ≥ d - 1`` lets ``L``
        and ``M`` reach every direction orthogonal to the gradients.
    xi_scale : float, default=5.0
        Initial scale of the tensors: entries of ``Ξ_k`` are drawn with
        standard deviation ``xi_scale / sqrt(d)``. The default makes the
        untrained field of order 1e-2 to 1e-1 with tanh networks.

    Notes
    -----
    The paper's reference code wraps the GFINNs authors' implementation with
    three 256-wide tanh layers, ``K = d``, a separate matrix network per
    bracket, default output biases and tensors ``Ξ_k`` of scale 0.01, so its
    untrained field is orders of magnitude smaller than its gradients. Here
    one matrix network serves both brackets and the initialisation is
    rescaled (see ``xi_scale`` and the comments in the source). The constant
    offsets of ``E`` and ``S`` (their last biases) do not affect the
    dynamics and receive no gradient.

    Examples
    --------
    >>> import torch
    >>> g = GFINN(3)
    >>> z = torch.randn(4, 3)
    >>> L, M = g.matrices(z)
    >>> g(z).shape, L.shape, g.energy(z).shape
    (torch.Size([4, 3]), torch.Size([4, 3, 3]), torch.Size([4]))
    """

    def __init__(
        self,
        n_components,
        *,
        hidden=(64, 64),
        activation="tanh",
        n_tensors=None,
        xi_scale=5.0,
    ):
        super().__init__()
        d = self.n_components = int(n_components)
        if d < 2:
            raise ValueError(
                f"GFINN needs n_components >= 2, got {n_components!r}: in one "
                "dimension the GENERIC brackets vanish identically"
            )
        k = self.n_tensors = d if n_tensors is None else int(n_tensors)
        self.energy_net = MLP(d, 1, hidden, activation)
        self.entropy_net = MLP(d, 1, hidden, activation)
        # One network for both K × K factors: C (Σ = C - Cᵀ, for L) and D
        # (for M).
        self.matrix_net = MLP(d, 2 * k * k, hidden, activation)
        # The field is a product of five small factors (Ξ twice, two
        # gradients, Σ or DDᵀ), so at PyTorch's default scales it starts
        # near 1e-4 and training crawls. As the OnsagerNet reference does for
        # its matrices, start C orthogonal and D at the identity, and give
        # each row ∇ᵀΞ_k the norm xi_scale·|∇| on average.
        with torch.no_grad():
            c0 = nn.init.orthogonal_(torch.empty(k, k))
            self.matrix_net[-1].bias.copy_(
                torch.cat([c0.ravel(), torch.eye(k).ravel()])
            )
        std = float(xi_scale) / math.sqrt(d)
        self.xi_l = nn.Parameter(std * torch.randn(k, d, d))
        self.xi_m = nn.Parameter(std * torch.randn(k, d, d))

    def energy(self, z):
        """Energy ``E(z)``: (batch, n_components) -> (batch,)."""
        return self.energy_net(z).squeeze(-1)

    def entropy(self, z):
        """Entropy ``S(z)``: (batch, n_components) -> (batch,)."""
        return self.entropy_net(z).squeeze(-1)

    @staticmethod
    def _rows(grad, xi):
        """Rows ``∇ᵀ Ξ_k``, (B, d) and (K, d, d) -> (B, K, d), each
        orthogonal to ``∇``."""
        upper = torch.triu(xi, diagonal=1)
        skew = upper - upper.transpose(-1, -2)
        return torch.einsum("bi,kij->bkj", grad, skew)

    def _brackets(self, z, grad_e, grad_s):
        k = self.n_tensors
        c, dm = self.matrix_net(z).reshape(-1, 2, k, k).unbind(1)
        sigma = c - c.transpose(-1, -2)
        b_s = self._rows(grad_s, self.xi_l)
        b_e = self._rows(grad_e, self.xi_m)
        ell = b_s.transpose(-1, -2) @ sigma @ b_s
        half = b_e.transpose(-1, -2) @ dm  # M = (B_Eᵀ D)(B_Eᵀ D)ᵀ
        return ell, half @ half.transpose(-1, -2)

    def matrices(self, z):
        """Poisson and friction matrices at ``z``.

        Parameters
        ----------
        z : torch.Tensor of shape (batch, n_components)

        Returns
        -------
        L : torch.Tensor of shape (batch, n_components, n_components)
            Antisymmetric, with ``L ∇S = 0``.
        M : torch.Tensor of shape (batch, n_components, n_components)
            Symmetric positive semi-definite, with ``M ∇E = 0``.
        """
        grad_e, grad_s = _input_gradients(z, self.energy, self.entropy)
        return self._brackets(z, grad_e, grad_s)

    def forward(self, z):
        """Return ``dz/dt = L∇E + M∇S``, shape (batch, n_components)."""
        grad_e, grad_s = _input_gradients(z, self.energy, self.entropy)
        ell, m = self._brackets(z, grad_e, grad_s)
        return _apply(ell, grad_e) + _apply(m, grad_s)

    def extra_repr(self):
        return f"n_components={self.n_components}, n_tensors={self.n_tensors}"


LATENT_MODELS = {"mlp": MLPVectorField, "onsager": OnsagerNet, "gfinn": GFINN}


def resolve_latent_model(name_or_class):
    """Return the latent vector-field class for a name or a class.

    Parameters
    ----------
    name_or_class : str or subclass of torch.nn.Module
        A key of :data:`LATENT_MODELS` ("mlp", "onsager", "gfinn"), or a
        module class, returned as is (it must accept ``n_components`` as
        first argument and map (batch, d) to (batch, d)).

    Returns
    -------
    type
        A subclass of ``torch.nn.Module``.

    Raises
    ------
    ValueError
        For an unknown name; the message lists the valid names and the
        closest one.
    TypeError
        For anything that is neither a string nor a module class (a module
        *instance* included).

    Examples
    --------
    >>> resolve_latent_model("onsager").__name__
    'OnsagerNet'
    >>> resolve_latent_model("onsagr")
    Traceback (most recent call last):
    ...
    ValueError: latent_model='onsagr' is not one of ['gfinn', 'mlp', 'onsager']; \
did you mean 'onsager'?
    """
    if isinstance(name_or_class, str):
        return LATENT_MODELS[check_choice("latent_model", name_or_class, LATENT_MODELS)]
    if isinstance(name_or_class, type) and issubclass(name_or_class, nn.Module):
        return name_or_class
    raise TypeError(
        "latent_model must be one of "
        f"{sorted(LATENT_MODELS)} or a torch.nn.Module subclass, got "
        f"{type(name_or_class).__name__} {name_or_class!r}"
    )
