"""Latent vector fields ``g_θ(z) = dz/dt``: a plain MLP and two structured models.

The paper (Chen & Li, section 5.2 and appendix C) learns the macroscopic
dynamics with three latent models: an MLP, OnsagerNet (Yu et al., 2021) and
GFINNs (Zhang et al., 2022). The two structured ones are built so that a
thermodynamic law holds for *every* value of the weights, not only after
training:

* :class:`OnsagerNet` dissipates a potential bounded below, which keeps long
  rollouts bounded;
* :class:`GFINN` conserves an energy and produces an entropy (GENERIC),
  by default together with a heat bath that takes up the energy a
  dissipative system loses.

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

import torch
from torch import nn

from .._validation import check_choice
from .mlp import MLP, ResidualTrunk

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


# GFINN: floor of the gradient norms, which guards the unit normals against
# 0/0 where a gradient vanishes exactly (the normal, and with it the field's
# dependence on it, is then zero).
_FLOOR = 1e-15
# GFINN, dimensionless: below γ ~ _EPS (normals within ~2 degrees of
# parallel, where ∇E ∥ ∇S forces L∇E = 0) the reversible part is smoothly
# switched off.
_EPS = 1e-3


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

    ``h``, ``A`` and ``f`` are either three separate MLPs of ``z``
    (``shared=False``, the default) or three linear heads on one
    :class:`~skmacro.nn.mlp.ResidualTrunk` of ``z`` (``shared=True``), the
    layout of Yu et al.'s code and of the paper's reference code for the
    Allen-Cahn and Lennard-Jones models.

    Without forcing, ``dV/dt = -∇Vᵀ M ∇V ≤ -alpha |∇V|²`` for any weights,
    and since ``V`` grows like ``beta |z|²`` latent trajectories stay
    bounded. This is the structure the paper uses for its predator-prey,
    Allen-Cahn and Lennard-Jones latent models (appendix C).

    Parameters
    ----------
    n_components : int
        Latent dimension d.
    hidden : sequence of int, default=(64, 64)
        Hidden widths of each sub-network (potential, matrices, forcing),
        or of the shared trunk.
    activation : str, default="tanh"
        Name from :data:`skmacro.nn.mlp.ACTIVATIONS`. It must be
        differentiable (the loss involves ``∇V``, so training needs second
        derivatives); "relu" gives a piecewise-constant ``∇h``. The shared
        layout of the reference code uses "requr".
    n_potential : int, optional
        Output width of ``h`` and ``Γ``; defaults to ``n_components``.
    alpha : float, default=0.01
        Added to the diagonal of ``M``; the minimum dissipation rate.
    beta : float, default=0.1
        Weight of the confining term ``beta |z|²`` of ``V``.
    forcing : bool, default=False
        Add a learned external force ``f(z)``; the dissipation law then no
        longer holds.
    shared : bool, default=False
        Read the potential, the matrices and the forcing from one shared
        residual trunk instead of three separate networks, initialised
        with small weights so that the field starts close to a linear one
        (Yu et al.'s initialisation). On the Allen-Cahn system this layout
        (with ``activation="requr"``, ``alpha=0.1`` and ``forcing=True``)
        trains stably without latent noise, where the separate layout
        needs it, to errors within the scatter of the separate layout's
        with the noise.

    Notes
    -----
    Differences from the paper's reference code: its predator-prey model
    uses the same ``V``, ``alpha=0.01`` and ``beta=0.1`` but separate fixed
    32/64-wide networks and a ``vmap(jacrev)`` gradient; its Lennard-Jones
    variant (adapted from Yu et al.'s code) shares hidden layers between
    ``V`` and the matrices, uses ResNet layers, a ReLU²-type activation,
    ``V = |h + Γz|² + beta|z|²`` without the ½, ``alpha=0.1`` and forcing on,
    and sets ``requires_grad`` on its input in place. Here the sub-networks
    are separate unless ``shared=True``, the gradient is one backward pass of
    the summed potential, and the input is left untouched.

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
        shared=False,
    ):
        super().__init__()
        d = self.n_components = int(n_components)
        n_potential = d if n_potential is None else int(n_potential)
        for name, value in (("alpha", alpha), ("beta", beta)):
            if not float(value) >= 0:
                raise ValueError(
                    f"OnsagerNet needs {name} >= 0, got {value!r}: a negative "
                    + (
                        "alpha lets M lose definiteness, so V may rise"
                        if name == "alpha"
                        else "beta leaves V unbounded below"
                    )
                )
        self.alpha = float(alpha)
        self.beta = float(beta)
        if shared:
            self.trunk = ResidualTrunk(d, hidden, activation)
            width = self.trunk.out_features

            def head(n_out):
                return nn.Linear(width, n_out)

        else:
            self.trunk = nn.Identity()

            def head(n_out):
                return MLP(d, n_out, hidden, activation)

        self.potential_net = head(n_potential)
        self.gamma = nn.Linear(d, n_potential, bias=False)
        self.matrix_net = head(d * d)
        self.force_net = head(d) if forcing else None
        if shared:
            self._start_near_linear()

    def _start_near_linear(self, gain=0.1):
        """Initialise the shared layout as Yu et al.'s code does: small
        weights, so that a ReQUr trunk starts in its quadratic part and the
        field close to a linear one, and the matrix head's bias a random
        orthogonal matrix, so that ``M`` and ``W`` start of order one."""
        d = self.n_components
        for layer in [*self.trunk.layers, self.matrix_net]:
            nn.init.xavier_uniform_(layer.weight, gain=gain)
            nn.init.uniform_(layer.bias, 0.0, 0.5 * gain)
        heads = [self.potential_net, self.gamma]
        if self.force_net is not None:
            heads.append(self.force_net)
        for layer in heads:
            nn.init.orthogonal_(layer.weight, gain=gain)
            if layer.bias is not None:
                nn.init.uniform_(layer.bias, 0.0, gain)
        with torch.no_grad():
            orthogonal = nn.init.orthogonal_(torch.empty(d, d))
            self.matrix_net.bias.copy_(orthogonal.reshape(-1))

    def potential(self, z):
        """Potential ``V(z) = beta |z|² + ½ |h(z) + Γ z|²``.

        Parameters
        ----------
        z : torch.Tensor of shape (batch, n_components)

        Returns
        -------
        torch.Tensor of shape (batch,)
        """
        return self._potential(z, self.trunk(z))

    def _potential(self, z, features):
        u = self.potential_net(features) + self.gamma(z)
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
        return self._matrices(self.trunk(z))

    def _matrices(self, features):
        d = self.n_components
        a = self.matrix_net(features).reshape(-1, d, d)
        lower = torch.tril(a)
        upper = torch.triu(a, diagonal=1)
        eye = torch.eye(d, dtype=a.dtype, device=a.device)
        m = lower @ lower.transpose(-1, -2) + self.alpha * eye
        w = upper - upper.transpose(-1, -2)
        return m, w

    def forward(self, z):
        """Return ``dz/dt = -(M + W)∇V + f``, shape (batch, n_components)."""
        # The trunk runs once: its output feeds both the potential, whose
        # gradient is taken, and the matrices and forcing.
        features = None

        def potential(zg):
            nonlocal features
            features = self.trunk(zg)
            return self._potential(zg, features)

        (grad_v,) = _input_gradients(z, potential)
        if not torch.is_grad_enabled():
            # Rollouts: drop the graph the gradient pass built.
            features = features.detach()
        m, w = self._matrices(features)
        dz = -_apply(m + w, grad_v)
        if self.force_net is not None:
            dz = dz + self.force_net(features)
        return dz

    def extra_repr(self):
        return (
            f"n_components={self.n_components}, alpha={self.alpha}, "
            f"beta={self.beta}, forcing={self.force_net is not None}, "
            f"shared={not isinstance(self.trunk, nn.Identity)}"
        )


class _QuadraticForm(nn.Module):
    """A learnable quadratic form of ``z``: (batch, d) -> (batch,).

    ``sign=0``: ``½ zᵀ (W + Wᵀ) z``, indefinite, ``W`` started at zero.
    ``sign=±1``: ``±½ |W z|²``, semi-definite, ``W`` started as
    ``nn.Linear``'s default (at zero it would get no gradient).
    """

    def __init__(self, d, sign=0):
        super().__init__()
        self.sign = int(sign)
        if self.sign:
            self.weight = nn.Parameter(
                nn.Linear(d, d, bias=False).weight.detach().clone()
            )
        else:
            self.weight = nn.Parameter(torch.zeros(d, d))

    def forward(self, z):
        if self.sign:
            return 0.5 * self.sign * (z @ self.weight.T).square().sum(-1)
        return 0.5 * torch.einsum("bi,ij,bj->b", z, self.weight + self.weight.T, z)


def _dot(a, b):
    """Row-wise dot product, (B, d) and (B, d) -> (B, 1)."""
    return (a * b).sum(-1, keepdim=True)


class GFINN(nn.Module):
    """GENERIC-formalism-informed vector field (after Zhang et al. 2022),
    by default in contact with a heat bath.

    .. math::

        \\dot y = L(y)\\nabla E(y) + M(y)\\nabla S(y),

    on a state ``y`` with an energy ``E`` and an entropy ``S`` (scalar
    networks), ``L`` antisymmetric, ``M`` symmetric positive semi-definite
    and the degeneracy conditions ``L ∇S = 0`` and ``M ∇E = 0`` built in. For
    any weights, ``dE/dt = ∇Eᵀ L ∇E + (M ∇E)ᵀ ∇S = 0`` and
    ``dS/dt = ∇Sᵀ M ∇S ≥ 0``.

    **The heat bath** (``bath=True``, the default). A macroscopic model of a
    dissipative system is not a closed system: the energy its observables
    lose goes to microscopic degrees of freedom that no latent coordinate
    resolves. The GENERIC state is then ``y = (z, σ)``, with ``σ`` the
    energy of that bath, and

    ``E(y) = E(z) + σ``,  ``S(y) = S(z) + σ / T``,

    with a learned bath temperature ``T > 0``. The total energy is conserved
    and the total entropy produced exactly, as above; the brackets depend on
    ``z`` only, so ``dz/dt`` does not depend on ``σ``, which therefore never
    needs a value: a rollout of ``z`` is the rollout of ``y``, with
    ``dσ/dt = -dE(z)/dt`` (:meth:`bath_rate`). Along every rollout of ``z``
    the free energy ``F(z) = E(z) - T S(z)`` (:meth:`free_energy`) never
    increases, since ``dF/dt = -T dS(y)/dt``. ``E`` is built to grow at
    least like ``confinement |z|² / 2`` and ``S`` to stay below a constant,
    so ``F`` grows without bound with ``|z|`` and every rollout stays in
    the bounded set ``F ≤ F(z(0))``, for any weights, as OnsagerNet's
    potential keeps its rollouts. This is what lets a damped system's
    trajectories spiral into an attracting equilibrium, as the
    predator-prey system's do, which a closed GENERIC system cannot do (see
    Notes). With ``bath=False`` the state is ``y = z`` and ``E(z)`` itself
    is conserved: the paper's setting, for a closed system whose latent
    coordinates carry all of its energy.

    Construction (per sample; ``n`` = d + 1 with the bath, d without). Let
    ``e = ∇E/|∇E|`` and ``s = ∇S/|∇S|`` (gradients in ``y``) be the unit
    normals of the level sets of ``E`` and ``S``, and let one network of
    ``z`` give a vector ``u`` (n numbers) and an n × n matrix ``A``. With
    ``s⊥ = |e|² s - (e·s) e`` (orthogonal to ``e``) and
    ``e⊥ = |s|² e - (e·s) s`` (orthogonal to ``s``):

    * ``b = |e|²|s⊥|² u - |s⊥|² (e·u) e - |e|² (s⊥·u) s⊥`` is ``u`` with its
      components along both normals removed, times ``|e|²|s⊥|² = |e|⁴γ``,
      where ``γ = |e|²|s|² - (e·s)² = e·e⊥`` vanishes when the normals are
      parallel. Then

      ``L = (b e⊥ᵀ - e⊥ bᵀ) / (|∇E| (γ² + ε²))``,  ``ε = 10⁻³``,

      is antisymmetric, ``L ∇S = 0`` (``b`` and ``e⊥`` are orthogonal to
      ``s``) and ``L ∇E = γ b / (γ² + ε²)``: the part of ``u`` tangent to
      both level sets wherever the normals are not (nearly) parallel, where
      ``∇E ∥ ∇S`` forces ``L ∇E = 0`` anyway;
    * ``P = |e|² I - e eᵀ`` annihilates ``∇E`` and

      ``M = P A Aᵀ P / |∇S|``

      is symmetric positive semi-definite with ``M ∇E = 0`` and
      ``M ∇S = P A Aᵀ P s``.

    Each identity holds polynomially in ``e``, ``s``, ``u`` and ``A`` (the
    norms ``|e|²`` and ``|s|²``, equal to one up to a floor that guards
    0/0 where a gradient vanishes, are kept in the formulas for that
    reason), so it holds to rounding for every value of the weights; the
    divisions are by positive scalars, which keep the structure. The field
    is therefore ``γ b / (γ² + ε²) + P A Aᵀ P s``: ``E`` and ``S`` enter only
    through the directions of their gradients, its size comes from ``u`` and
    ``A`` as for a plain network, and it can approach any field with
    ``ẏ·∇E = 0`` and ``ẏ·∇S ≥ 0``. ``E(z)`` and ``S(z)`` are each an MLP
    plus a learnable quadratic form, which gives them the quadratic
    invariants and Lyapunov functions of linearised dynamics that a small
    tanh network represents poorly: without the bath ``½ zᵀ (W + Wᵀ) z``
    started at zero; with it ``½ |Γ z|² + confinement |z|² / 2`` in ``E`` and
    ``-½ |Λ z|²`` in ``S`` (a tanh network is bounded, so these set how
    ``F`` grows). ``A`` starts at the identity (the output bias of the
    bracket network) and ``T`` at one, so the untrained irreversible part
    is of order one, like the standardised velocities it is trained on.

    Parameters
    ----------
    n_components : int
        Latent dimension d ≥ 2 (in one dimension without a bath every
        antisymmetric matrix vanishes and ``M ∇E = 0`` forces ``M = 0``
        wherever ``∇E ≠ 0``; the check is kept with the bath too, where a
        one-dimensional model could only relax).
    hidden : sequence of int, default=(64, 64)
        Hidden widths of the energy, entropy and bracket networks.
    activation : str, default="tanh"
        Name from :data:`skmacro.nn.mlp.ACTIVATIONS`; it must be
        differentiable (training needs second derivatives of ``E`` and
        ``S``).
    bath : bool, default=True
        Couple the latent state to a heat bath (above). ``False`` conserves
        ``E(z)`` itself.
    confinement : float, default=0.1
        With the bath, the weight of ``|z|² / 2`` in ``E``, which bounds
        every rollout (ignored without the bath); at zero a rollout can
        leave the data and drift away while ``F`` falls.

    Notes
    -----
    Without the bath an exactly conserved ``E`` is a strong prior. A
    trajectory never leaves the level set of ``E`` it starts on, so an
    equilibrium ``z*`` that attracts a neighbourhood forces ``E`` to be
    constant there; the field is then ``M ∇S`` with ``∇S(z*) = 0`` (``S`` is
    maximal at ``z*``), and its linearisation at ``z*``,
    ``M(z*) ∇²S(z*)``, has real eigenvalues (it is similar to the symmetric
    ``M^½ ∇²S M^½``). Hence no closed GENERIC field with smooth ``E``,
    ``S``, ``L`` and ``M`` has a stable focus that attracts a whole
    neighbourhood, as the homogeneous state of a damped reaction-diffusion
    system does. The bath removes the obstruction where the physics does:
    trajectories that start at different energies ``E(z)`` end at the same
    ``z*`` with different bath energies ``σ``, i.e. at different equilibria
    of ``y``.

    Differences from the GFINNs construction and the paper's reference code
    (which wraps the GFINNs authors' implementation: ``K = d`` learned
    antisymmetric tensors ``Ξ_k`` per bracket, ``L = B_Sᵀ Σ B_S`` and
    ``M = B_Eᵀ D Dᵀ B_E`` with rows ``∇Sᵀ Ξ_k`` and ``∇Eᵀ Ξ_k``, and no
    bath): there the field is a product of five factors, quadratic in
    ``∇S`` and linear in ``∇E`` for its reversible part and the reverse for
    its irreversible part, so the scales of ``E``, ``S`` and the ``Ξ_k``
    multiply into every output and a change of ``∇S`` changes the frame in
    which ``Σ`` is expressed. The form here keeps the same guarantees with
    the roles separated: ``E`` and ``S`` set only the constraint
    directions, ``u`` and ``A`` the speeds. The constant offsets of ``E``
    and ``S`` (their last biases) do not affect the dynamics and receive no
    gradient.

    Examples
    --------
    >>> import torch
    >>> g = GFINN(3)
    >>> z = torch.randn(4, 3)
    >>> L, M = g.matrices(z)
    >>> g(z).shape, L.shape, g.energy(z).shape
    (torch.Size([4, 3]), torch.Size([4, 4, 4]), torch.Size([4]))
    >>> de_dt = (g.energy_gradient(z) * g(z)).sum(-1)
    >>> torch.allclose(g.bath_rate(z), -de_dt, atol=1e-6)
    True
    """

    def __init__(
        self,
        n_components,
        *,
        hidden=(64, 64),
        activation="tanh",
        bath=True,
        confinement=0.1,
    ):
        super().__init__()
        d = self.n_components = int(n_components)
        if d < 2:
            raise ValueError(
                f"GFINN needs n_components >= 2, got {n_components!r}: in one "
                "dimension the GENERIC brackets vanish identically"
            )
        if not confinement >= 0:
            raise ValueError(
                f"GFINN needs confinement >= 0, got {confinement!r}: a negative "
                "weight would let the free energy fall without bound"
            )
        self.bath = bool(bath)
        n = d + 1 if self.bath else d
        self.energy_net = MLP(d, 1, hidden, activation)
        self.entropy_net = MLP(d, 1, hidden, activation)
        # With the bath, E convex and S concave at large |z| (see
        # free_energy): the free energy confines every rollout.
        self.energy_quadratic = _QuadraticForm(d, sign=1 if self.bath else 0)
        self.entropy_quadratic = _QuadraticForm(d, sign=-1 if self.bath else 0)
        self.confinement = float(confinement) if self.bath else 0.0
        # One network of z gives u (n numbers) and A (n × n, row-major).
        self.bracket_net = MLP(d, n + n * n, hidden, activation)
        with torch.no_grad():
            self.bracket_net[-1].bias[n:].copy_(torch.eye(n).ravel())
        # log T of the bath, started at T = 1.
        self.log_bath_temperature = nn.Parameter(torch.zeros(())) if self.bath else None

    def energy(self, z):
        """Energy ``E(z)`` of the latent state (without the bath's ``σ``):
        (batch, n_components) -> (batch,)."""
        energy = self.energy_net(z).squeeze(-1) + self.energy_quadratic(z)
        if self.confinement:
            energy = energy + 0.5 * self.confinement * z.square().sum(-1)
        return energy

    def entropy(self, z):
        """Entropy ``S(z)`` of the latent state (without the bath's
        ``σ / T``): (batch, n_components) -> (batch,)."""
        return self.entropy_net(z).squeeze(-1) + self.entropy_quadratic(z)

    def energy_gradient(self, z):
        """``∇E(z)``, shape (batch, n_components)."""
        (grad_e,) = _input_gradients(z, self.energy)
        return grad_e

    @property
    def bath_temperature(self):
        """The bath's temperature ``T`` (a 0-d tensor); ``None`` without a bath."""
        return None if not self.bath else self.log_bath_temperature.exp()

    def free_energy(self, z):
        """Free energy ``F(z) = E(z) - T S(z)``, non-increasing along every
        rollout of the model (bath only): (batch, n_components) -> (batch,).

        Raises
        ------
        ValueError
            Without a bath, where ``E(z)`` itself is conserved.
        """
        if not self.bath:
            raise ValueError(
                "free_energy is defined for GFINN(bath=True); without a bath "
                "the energy E(z) itself is conserved"
            )
        return self.energy(z) - self.bath_temperature * self.entropy(z)

    def _state_gradients(self, z):
        """``∇E`` and ``∇S`` in the GENERIC state ``y``, each (batch, n):
        ``(∇E(z), 1)`` and ``(∇S(z), 1/T)`` with the bath."""
        grad_e, grad_s = _input_gradients(z, self.energy, self.entropy)
        if self.bath:
            one = torch.ones_like(grad_e[:, :1])
            grad_e = torch.cat([grad_e, one], -1)
            grad_s = torch.cat([grad_s, one / self.bath_temperature], -1)
        return grad_e, grad_s

    def _parts(self, z, grad_e, grad_s):
        """The factors of the brackets at ``z``, for state gradients
        ``grad_e`` and ``grad_s`` of width n.

        Returns ``e, s`` (B, n) the unit normals; ``norm_e, norm_s`` (B, 1)
        with ``∇E = norm_e e`` and ``∇S = norm_s s``; ``b, e_perp`` (B, n)
        and ``scale = 1/(γ² + ε²)`` (B, 1), so that
        ``L = scale (b e⊥ᵀ - e⊥ bᵀ) / norm_e``; and ``pa = P A`` (B, n, n),
        so that ``M = pa paᵀ / norm_s``.
        """
        n = grad_e.shape[-1]
        out = self.bracket_net(z)
        u, a = out[:, :n], out[:, n:].reshape(-1, n, n)
        norm_e = torch.sqrt(grad_e.square().sum(-1, keepdim=True) + _FLOOR**2)
        norm_s = torch.sqrt(grad_s.square().sum(-1, keepdim=True) + _FLOOR**2)
        e, s = grad_e / norm_e, grad_s / norm_s
        ee, ss, es = _dot(e, e), _dot(s, s), _dot(e, s)
        s_perp = ee * s - es * e
        s_perp_sq = _dot(s_perp, s_perp)
        b = (
            ee * s_perp_sq * u
            - s_perp_sq * _dot(e, u) * e
            - ee * _dot(s_perp, u) * s_perp
        )
        e_perp = ss * e - es * s
        gamma = _dot(e_perp, e)
        scale = 1.0 / (gamma.square() + _EPS**2)
        eye = torch.eye(n, dtype=z.dtype, device=z.device)
        p = ee.unsqueeze(-1) * eye - e.unsqueeze(-1) * e.unsqueeze(-2)
        return e, s, norm_e, norm_s, b, e_perp, scale, p @ a

    def matrices(self, z):
        """Poisson and friction matrices at ``z``, on the GENERIC state
        ``y`` (``(z, σ)`` with the bath, so n = d + 1; ``z`` without).

        Parameters
        ----------
        z : torch.Tensor of shape (batch, n_components)

        Returns
        -------
        L : torch.Tensor of shape (batch, n, n)
            Antisymmetric, with ``L ∇S = 0``.
        M : torch.Tensor of shape (batch, n, n)
            Symmetric positive semi-definite, with ``M ∇E = 0``.
        """
        grad_e, grad_s = self._state_gradients(z)
        _, _, norm_e, norm_s, b, e_perp, scale, pa = self._parts(z, grad_e, grad_s)
        outer = b.unsqueeze(-1) * e_perp.unsqueeze(-2)
        ell = (outer - outer.transpose(-1, -2)) * (scale / norm_e).unsqueeze(-1)
        m = (pa @ pa.transpose(-1, -2)) / norm_s.unsqueeze(-1)
        return ell, m

    def _state_field(self, z):
        """``dy/dt = L∇E + M∇S`` on the GENERIC state, (batch, n)."""
        grad_e, grad_s = self._state_gradients(z)
        e, s, _, _, b, e_perp, scale, pa = self._parts(z, grad_e, grad_s)
        # L∇E = scale (b (e⊥·e) - e⊥ (b·e)) and M∇S = P A Aᵀ P s, without
        # forming the n × n brackets.
        reversible = scale * (b * _dot(e_perp, e) - e_perp * _dot(b, e))
        irreversible = _apply(pa, torch.einsum("bji,bj->bi", pa, s))
        return reversible + irreversible

    def forward(self, z):
        """Return ``dz/dt``, shape (batch, n_components)."""
        return self._state_field(z)[:, : self.n_components]

    def bath_rate(self, z):
        """``dσ/dt``, the energy the bath receives per unit time, equal to
        ``-dE(z)/dt`` (bath only): (batch, n_components) -> (batch,).

        Raises
        ------
        ValueError
            Without a bath.
        """
        if not self.bath:
            raise ValueError("bath_rate is defined for GFINN(bath=True)")
        return self._state_field(z)[:, -1]

    def extra_repr(self):
        if not self.bath:
            return f"n_components={self.n_components}, bath=False"
        return (
            f"n_components={self.n_components}, bath=True, "
            f"confinement={self.confinement}"
        )


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
