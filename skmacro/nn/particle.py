"""A closure network for particle systems: pooled functions of local
environments, invariant to permutation, translation and rotation."""

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import jacrev, jvp, vjp, vmap

from .._validation import check_choice
from ..systems.neighbours import CellList, batch_pairs_within
from .mlp import ACTIVATIONS, MLP

__all__ = ["ParticleSetClosure", "ParticleSetJacobian"]

# Floors of the scales that standardise pooled statistics across
# configurations, relative to the spread of the per-atom quantity pooled. A
# statistic that only fluctuates by finite-size noise gets a weight of
# order one instead of being blown up; the learned features get a larger
# floor because dividing by a small spread would multiply the learning rate
# of the per-atom network by the same factor.
_FIXED_FLOOR = 1e-2
_LEARNED_FLOOR = 1e-1
# Variance added before the square root of per-atom scales (constant channels).
_EPS = 1e-12
# Neighbour pairs handled at once by one pass over configurations, and
# pairs whose terms are formed at once (temporaries of a few MB).
_PAIR_BUDGET = 2_000_000
_PAIR_CHUNK = 32_768
_JACOBIAN_CHUNK = 4_096
# Largest B (centres x sum_width x k values) kept between requests.
_B_CACHE = 2**25
# Rows of per-atom derivative work (centres) handled at once.
_ROW_BUDGET = 16_384


@dataclass
class _Environments:
    """Local environments of some atoms ("centres") of a batch of
    configurations, all with ``n`` atoms in a cubic box of side ``box``.

    Atoms are indexed in the flattened batch (atom ``a`` of configuration
    ``b`` is ``b * n + a``). Every configuration has the same number of
    centres, stored configuration by configuration. ``first``, ``second``
    list neighbour pairs: if ``symmetric`` each pair stands for both
    directions (every atom is a centre), otherwise it is directed from the
    centre ``first`` to its neighbour ``second``.
    """

    positions: torch.Tensor  # (B * n, 3)
    velocities: torch.Tensor | None  # (B * n, 3)
    extras: torch.Tensor | None  # (B * n, n_extra)
    box: float
    n: int
    n_configs: int
    centres: torch.Tensor  # (B * n_centres,) atom indices
    row_of_atom: torch.Tensor  # (B * n,) centre row of each atom, -1 if none
    first: torch.Tensor  # (n_pairs,)
    second: torch.Tensor  # (n_pairs,)
    symmetric: bool
    sums: torch.Tensor | None = None  # (B * n_centres, sum_width)

    @property
    def centres_per_config(self):
        return len(self.centres) // self.n_configs


class ParticleSetClosure(nn.Module):
    r"""Closure variables pooled over the local environments of the particles.

    The closure part :math:`\hat z` of the latent coordinates of a state of
    ``n`` identical particles is

    .. math::

        \hat z = \rho\Big(\frac{1}{n} \sum_{i=1}^{n} \phi(S_i)\Big),

    where :math:`S_i` sums smooth functions of particle ``i``'s neighbours
    within ``r_cut``, :math:`\phi` maps it to invariant features and
    :math:`\rho` is a small MLP with ``n_outputs`` outputs. It is invariant
    to relabelling the particles, to translations and to rotations and
    reflections of the periodic cube, and one closure serves every system
    size when the box follows from a number ``density``.

    **Scope.** One species of particles in a cubic periodic box (side from
    ``density`` or fixed by ``box``); every displacement uses the minimum
    image, so the box side must exceed ``2 * r_cut``.

    **Layout.** States are particle-major rows ``x = (x_1, ..., x_n)``,
    ``x_i`` of length ``particle_dim``: coordinates 0-2 are the position
    (wrapped or not), coordinates 3-5 the velocity when ``particle_dim >= 6``,
    and any further coordinates (coordinates 3 onwards when
    ``particle_dim`` is 4 or 5) are read as rotation-invariant scalars of
    the particle.

    **Environment.** With cubic B-splines :math:`b_k` (``n_radial`` of them,
    centred from ``r_min`` on, each twice continuously differentiable and
    zero beyond ``r_cut``, so that the features vanish smoothly at the
    cutoff), :math:`d_{ij} = r_i - r_j`, :math:`r = |d_{ij}|`,
    :math:`\hat d = d_{ij} / r`, :math:`u = v_i - v_j` and the radial
    relative velocity :math:`\dot r = \hat d \cdot u`:

    * density :math:`\sum_j b_k(r_{ij})` (a smooth radial distribution);
    * radial velocity :math:`\sum_j b_k(r_{ij}) \dot r_{ij}` (the per-atom
      share of the rate of change of pair energies, :math:`dU/dt`);
    * relative kinetic term :math:`\sum_j b_k(r_{ij}) |u_{ij}|^2`;
    * kinetic term :math:`|v_i|^2`, and the particle's extra scalars;
    * with ``angular``, the vector moments :math:`V_{ik} = \sum_j b_k(r_{ij})
      \hat d_{ij}`, through the invariants :math:`|V_{ik}|^2` and the norms
      of ``n_angular`` learned combinations :math:`|\sum_k M_{qk} V_{ik}|^2`
      (a force on particle ``i`` is such a combination).

    Each scalar is standardised over particles (scales from :meth:`prepare`)
    into :math:`e_i`. The pooled vector is the first and second moments
    :math:`\frac1n\sum_i e_i`, :math:`\frac1n\sum_i e_i^2` and the mean of
    learned features :math:`\psi(e_i, |MV_i|^2)` (an MLP), standardised
    across configurations; :math:`\rho` maps it to :math:`\hat z`.

    **Reconstruction target.** A permutation-invariant code cannot give
    back the microscopic state, so :meth:`target` is the standardised
    vector of the first and second moments of the descriptors: a smooth
    radial distribution function, its velocity-weighted versions, the
    distribution of kinetic energies and of local asymmetry. These hold the
    potential energy and its rate of change (sums of pair terms), the
    temperature and the spread of local environments, which is what the
    temperature of a fluid exchanges energy with; reconstructing them keeps
    :math:`\hat z` informative about the structure without reference to
    particle labels. :meth:`target_to_user` returns them in the units of the
    descriptors (:attr:`target_names`).

    **Sampling atoms.** In training mode (``module.train()``) a
    configuration with more than ``pool_atoms`` particles is pooled over
    ``pool_atoms`` particles drawn uniformly without replacement, per call
    (an unbiased estimate of the pooled mean; :math:`\hat z` then has a bias
    of order ``1 / pool_atoms`` from the curvature of :math:`\rho`), so that
    training costs O(``pool_atoms``) per configuration instead of O(n).
    :meth:`jacobian` then differentiates that subsampled encoder. In
    evaluation mode every particle is pooled.

    Parameters
    ----------
    r_cut : float
        Cutoff radius of the environments.
    particle_dim : int
        Coordinates per particle, at least 3 (see Layout).
    density : float, optional
        Number density ``n / box**3``: the box side of a state of ``n``
        particles is ``(n / density)**(1/3)``, so the closure encodes states
        of any size. Give exactly one of ``density`` and ``box``.
    box : float, optional
        Fixed box side: the closure then encodes states of the size it was
        built for only.
    r_min : float, default=0.0
        Centre of the first radial function; pairs closer than
        ``r_min - 2 * (r_cut - r_min) / (n_radial + 1)`` contribute nothing.
    n_radial : int, default=16
        Number of radial functions.
    angular : bool, default=True
        Whether to include the vector moments (three-body information).
    n_angular : int, default=8
        Number of learned combinations of vector moments (with ``angular``).
    psi_hidden : sequence of int, default=(64,)
        Hidden widths of the per-particle network :math:`\psi`.
    n_pooled : int, default=32
        Number of learned pooled features (outputs of :math:`\psi`).
    rho_hidden : sequence of int, default=(64,)
        Hidden widths of :math:`\rho`.
    activation : str, default="tanh"
        Activation of :math:`\psi` and :math:`\rho`, one of
        ``skmacro.nn.mlp.ACTIVATIONS``; a smooth one keeps Jacobians
        continuous.
    pool_atoms : int or None, default=1024
        Particles pooled per configuration in training mode (see Sampling
        atoms); None pools all of them.
    gram_atoms : int or None, default=64
        Particles whose Jacobian columns estimate :math:`J J^T` in
        evaluation mode when there are more than ``32 * gram_atoms``
        particles (an unbiased estimate); below that, or with None, it is
        exact.
    prepare_rows : int, default=128
        Configurations, drawn at random from the training rows, from which
        :meth:`prepare` takes its scales.

    Attributes
    ----------
    n_outputs : int
        Number ``k`` of closure variables, set by :meth:`build`.
    n_features : int
        Width ``N`` given to :meth:`build`.
    target_width : int
        Width of :meth:`target`.
    target_names : list of str
        What each column of :meth:`target_to_user` is.

    Examples
    --------
    >>> import torch
    >>> from skmacro.nn import ParticleSetClosure
    >>> closure = ParticleSetClosure(2.0, 6, density=0.5).build(6 * 64, 3)
    >>> x = torch.rand(5, 64, 6) * torch.tensor([5.0] * 3 + [1.0] * 3)
    >>> closure.prepare(lambda: iter([x.reshape(5, -1)]))
    >>> closure.eval()(x.reshape(5, -1)).shape
    torch.Size([5, 3])
    """

    def __init__(
        self,
        r_cut,
        particle_dim,
        *,
        density=None,
        box=None,
        r_min=0.0,
        n_radial=16,
        angular=True,
        n_angular=8,
        psi_hidden=(64,),
        n_pooled=32,
        rho_hidden=(64,),
        activation="tanh",
        pool_atoms=1024,
        gram_atoms=64,
        prepare_rows=128,
    ):
        super().__init__()
        self.r_cut = _positive_real("r_cut", r_cut)
        self.particle_dim = _integer("particle_dim", particle_dim, 3)
        if (density is None) == (box is None):
            raise ValueError(
                "give exactly one of density (the box follows from the number of "
                f"particles) and box (one size only), got density={density!r}, "
                f"box={box!r}"
            )
        self.density = None if density is None else _positive_real("density", density)
        self.box = None if box is None else _positive_real("box", box)
        if self.box is not None and not self.box > 2 * self.r_cut:
            raise ValueError(
                f"box={self.box!r} must exceed 2*r_cut={2 * self.r_cut!r} for the "
                "minimum-image convention"
            )
        r_min = float(r_min) if isinstance(r_min, numbers.Real) else r_min
        if not isinstance(r_min, float) or not 0.0 <= r_min < self.r_cut:
            raise ValueError(f"r_min must lie in [0, r_cut), got {r_min!r}")
        self.r_min = r_min
        self.n_radial = _integer("n_radial", n_radial, 1)
        if not isinstance(angular, bool):
            raise TypeError(f"angular must be a bool, got {angular!r}")
        self.angular = angular
        self.n_angular = _integer("n_angular", n_angular, 1)
        self.psi_hidden = _widths("psi_hidden", psi_hidden)
        self.n_pooled = _integer("n_pooled", n_pooled, 1)
        self.rho_hidden = _widths("rho_hidden", rho_hidden)
        self.activation = check_choice("activation", activation, ACTIVATIONS)
        self.pool_atoms = (
            None if pool_atoms is None else _integer("pool_atoms", pool_atoms, 1)
        )
        self.gram_atoms = (
            None if gram_atoms is None else _integer("gram_atoms", gram_atoms, 1)
        )
        self.prepare_rows = _integer("prepare_rows", prepare_rows, 1)
        self.n_outputs = None
        self.n_features = None

    # ----------------------------------------------------------------- layout

    @property
    def size_agnostic(self):
        """True when the box follows from ``density``: any size is encoded."""
        return self.density is not None

    @property
    def _velocity(self):
        return self.particle_dim >= 6

    @property
    def _n_extra(self):
        return self.particle_dim - (6 if self._velocity else 3)

    @property
    def _n_channels(self):
        """Pair channels per radial function: density (and the velocity ones)."""
        return 3 if self._velocity else 1

    @property
    def _n_own(self):
        return int(self._velocity) + self._n_extra

    @property
    def _n_scalar(self):
        """Width of the scalar part of the sums: pair channels and own terms."""
        return self._n_channels * self.n_radial + self._n_own

    @property
    def _sum_width(self):
        """Width of a centre's sums ``S_i``: scalars, then vector moments."""
        return self._n_scalar + (3 * self.n_radial if self.angular else 0)

    @property
    def _n_invariants(self):
        return self._n_scalar + (self.n_radial if self.angular else 0)

    @property
    def target_width(self):
        """Width ``T`` of :meth:`target`: first and second moments."""
        return 2 * self._n_invariants

    @property
    def descriptor_names(self):
        """Names of the per-particle invariants ``e_i``, list of str."""
        h = (self.r_cut - self.r_min) / (self.n_radial + 1)
        centres = [self.r_min + k * h for k in range(self.n_radial)]
        channels = ["density"]
        if self._velocity:
            channels += ["radial velocity", "relative speed^2"]
        names = [f"{c}[r={r:.3g}]" for c in channels for r in centres]
        if self._velocity:
            names.append("speed^2")
        first_extra = 6 if self._velocity else 3
        names += [f"coordinate {first_extra + e}" for e in range(self._n_extra)]
        if self.angular:
            names += [f"|vector moment|^2[r={r:.3g}]" for r in centres]
        return names

    @property
    def target_names(self):
        """What each column of :meth:`target_to_user` is, list of str."""
        names = self.descriptor_names
        return [f"mean {s}" for s in names] + [f"mean square {s}" for s in names]

    def box_side(self, n_atoms):
        """Box side of a state of ``n_atoms`` particles, float."""
        if self.box is not None:
            return self.box
        return float(n_atoms / self.density) ** (1.0 / 3.0)

    # -------------------------------------------------------------- protocol

    def check_n_features(self, n_features):
        """Raise a ``ValueError`` if states of width ``n_features`` cannot be
        encoded.

        Parameters
        ----------
        n_features : int
        """
        m = self.particle_dim
        if (
            isinstance(n_features, bool)
            or not isinstance(n_features, numbers.Integral)
            or n_features < 2 * m
            or n_features % m
        ):
            raise ValueError(
                f"states of {n_features!r} features cannot be encoded: the width "
                f"must be a multiple of particle_dim={m} with at least 2 particles"
            )
        n = n_features // m
        if self.box is not None and self.n_features is not None:
            built = self.n_features // m
            if n != built:
                raise ValueError(
                    f"this closure has a fixed box of side {self.box:.6g} and was "
                    f"built for {built} particles ({self.n_features} features), "
                    f"got {n} particles ({n_features} features); build it with "
                    "density= instead of box= to encode states of any size"
                )
        side = self.box_side(n)
        if not side > 2 * self.r_cut:
            raise ValueError(
                f"states of {n} particles have a box side {side:.4g} at "
                f"density={self.density!r}, which must exceed 2*r_cut="
                f"{2 * self.r_cut:.4g} for the minimum-image convention"
            )

    def build(self, n_features, n_outputs):
        """Create the layers for states of width ``n_features`` and
        ``n_outputs`` closure variables.

        Parameters
        ----------
        n_features : int
            Width ``N = n * particle_dim`` of the states.
        n_outputs : int
            Number ``k >= 0`` of closure variables.

        Returns
        -------
        self
        """
        n_outputs = _integer("n_outputs", n_outputs, 0)
        self.n_features = None
        self.check_n_features(n_features)
        self.n_features = int(n_features)
        self.n_outputs = n_outputs
        self.atom = _AtomFeatures(self)
        pooled = 2 * self._n_invariants + self.n_pooled
        # No layers to make for k = 0: forward then returns (batch, 0).
        self.rho = (
            MLP(pooled, n_outputs, self.rho_hidden, self.activation)
            if n_outputs
            else None
        )
        self.register_buffer("pool_mean", torch.zeros(pooled))
        self.register_buffer("pool_scale", torch.ones(pooled))
        return self

    @torch.no_grad()
    def prepare(self, batches):
        """Set the scales of the descriptors and of the pooled statistics.

        Streams the training rows twice: once to count them, once to compute
        the environments of ``prepare_rows`` random rows (pooled over
        ``pool_atoms`` random particles each, as in training). Per-particle
        scalars are standardised by their mean and spread over particles,
        vector moments by their root-mean-square norm, and the pooled
        statistics by their mean and spread over configurations (with a
        floor, see the module source). The learned features are scaled as
        they come out of the freshly initialised network.

        Parameters
        ----------
        batches : callable
            ``batches()`` returns a fresh iterator of tensors of shape
            (chunk, n_features).
        """
        self._check_built()
        n_rows = 0
        for chunk in batches():
            self._check_input(chunk)
            n_rows += len(chunk)
        if n_rows == 0:
            raise ValueError("prepare needs at least one training row")
        picked = torch.randperm(n_rows)[: self.prepare_rows].sort().values
        sums, per_config = [], None
        start = 0
        for chunk in batches():
            chunk = self._check_input(chunk)
            stop = start + len(chunk)
            rows = picked[(picked >= start) & (picked < stop)] - start
            start = stop
            if len(rows) == 0:
                continue
            x = chunk[rows]
            n = x.shape[1] // self.particle_dim
            subset = self.pool_atoms is not None and self.pool_atoms < n
            for group in self._groups(x, subset):
                env = self._environments(group, subset)
                sums.append(env.sums)
                per_config = env.centres_per_config
        sums = torch.cat(sums)
        self.atom.set_scales(sums)
        features = self.atom(sums)
        pooled = features.view(-1, per_config, features.shape[1])
        mean = pooled.mean(1)
        spread = features.std(0, correction=0)
        floor = torch.full_like(spread, _FIXED_FLOOR)
        floor[2 * self._n_invariants :] = _LEARNED_FLOOR
        self.pool_mean.copy_(mean.mean(0))
        self.pool_scale.copy_(
            torch.sqrt(mean.var(0, correction=0) + (floor * spread) ** 2 + _EPS)
        )

    def forward(self, x):
        """Closure variables.

        Parameters
        ----------
        x : torch.Tensor of shape (batch, n_features)

        Returns
        -------
        torch.Tensor of shape (batch, n_outputs)
        """
        return self.forward_with_target(x)[0]

    def target(self, x):
        """What the decoder reconstructs: the standardised first and second
        moments of the per-particle descriptors.

        Parameters
        ----------
        x : torch.Tensor of shape (batch, n_features)

        Returns
        -------
        torch.Tensor of shape (batch, target_width)
        """
        with torch.no_grad():
            return self._pooled(x)[1][:, : self.target_width]

    def forward_with_target(self, x):
        """:meth:`forward` and :meth:`target` from one pass, which in training
        mode pools both over the same particles.

        Parameters
        ----------
        x : torch.Tensor of shape (batch, n_features)

        Returns
        -------
        z : torch.Tensor of shape (batch, n_outputs)
        target : torch.Tensor of shape (batch, target_width)
            Without gradient.
        """
        _, standardised = self._pooled(x)
        target = standardised[:, : self.target_width].detach()
        if self.rho is None:
            return standardised.new_zeros(len(standardised), 0), target
        return self.rho(standardised), target

    def target_to_user(self, t):
        """Targets in the units of the descriptors (:attr:`target_names`):
        the mean and the mean square over particles of each one.

        Parameters
        ----------
        t : torch.Tensor of shape (batch, target_width)
            Standardised targets (as :meth:`target` returns).

        Returns
        -------
        torch.Tensor of shape (batch, target_width)
        """
        self._check_built()
        width = self.target_width
        t = torch.as_tensor(t)
        if t.ndim != 2 or t.shape[1] != width:
            raise ValueError(
                f"t must have shape (batch, {width}), got {tuple(t.shape)}"
            )
        moments = t * self.pool_scale[:width].to(t) + self.pool_mean[:width].to(t)
        first, second = moments[:, : width // 2], moments[:, width // 2 :]
        mean, scale = self.atom.invariant_mean.to(t), self.atom.invariant_scale.to(t)
        return torch.cat(
            [
                mean + scale * first,
                mean**2 + 2 * mean * scale * first + scale**2 * second,
            ],
            dim=1,
        )

    def jacobian(self, x):
        """Jacobians of the closure variables with respect to the states,
        kept structured (see :class:`ParticleSetJacobian`).

        Parameters
        ----------
        x : torch.Tensor of shape (batch, n_features)

        Returns
        -------
        ParticleSetJacobian
            Differentiable with respect to the parameters when grad is
            enabled; its ``outputs`` are the closure variables at ``x``. In
            training mode (see Sampling atoms) it is the Jacobian of the
            encoder pooled over the random particles of this call.
        """
        x = self._check_input(x)
        subset = self._subsampled(x.shape[1] // self.particle_dim)
        envs, pooled = [], []
        for group in self._groups(x, subset):
            env = self._environments(group, subset)
            envs.append(env)
            features = self.atom(env.sums)
            pooled.append(features.view(env.n_configs, -1, features.shape[1]).mean(1))
        pooled = torch.cat(pooled)
        if self.n_outputs:
            A = vmap(jacrev(self._head))(pooled)
            outputs = self._head(pooled)
        else:
            A = pooled.new_zeros(len(pooled), 0, pooled.shape[1])
            outputs = pooled.new_zeros(len(pooled), 0)
        return ParticleSetJacobian(self, envs, A, exact_gram=subset, outputs=outputs)

    # -------------------------------------------------------------- internals

    def _head(self, pooled):
        return self.rho((pooled - self.pool_mean) / self.pool_scale)

    def _check_built(self):
        if self.n_outputs is None:
            raise RuntimeError(
                f"this {type(self).__name__} has no layers yet; call build first"
            )

    def _check_input(self, x):
        self._check_built()
        x = torch.as_tensor(x)
        if x.ndim != 2:
            raise ValueError(f"x must be 2-D (batch, n_features), got {tuple(x.shape)}")
        self.check_n_features(x.shape[1])
        return x.to(self.pool_mean.dtype)

    def _subsampled(self, n):
        return self.training and self.pool_atoms is not None and self.pool_atoms < n

    def _pooled(self, x):
        """Pooled statistics (batch, pooled width), raw and standardised."""
        x = self._check_input(x)
        subset = self._subsampled(x.shape[1] // self.particle_dim)
        pooled = []
        for group in self._groups(x, subset):
            env = self._environments(group, subset)
            features = self.atom(env.sums)
            pooled.append(features.view(env.n_configs, -1, features.shape[1]).mean(1))
        pooled = torch.cat(pooled)
        return pooled, (pooled - self.pool_mean) / self.pool_scale

    def _groups(self, x, subset):
        """Row groups of ``x`` whose neighbour pairs fit the pair budget."""
        n = x.shape[1] // self.particle_dim
        centres = min(self.pool_atoms, n) if subset else n
        volume = 4.0 / 3.0 * math.pi * self.r_cut**3
        pairs = max(centres * volume * n / self.box_side(n) ** 3, 1.0)
        size = max(int(_PAIR_BUDGET // pairs), 1)
        return torch.split(x, size)

    def _environments(self, x, subset):
        """Environments (and their sums) of the rows of ``x``: all particles,
        or (``subset``) ``pool_atoms`` random ones per configuration."""
        B, m = len(x), self.particle_dim
        n = x.shape[1] // m
        box = self.box_side(n)
        atoms = x.reshape(B * n, m)
        positions = atoms[:, :3]
        velocities = atoms[:, 3:6] if self._velocity else None
        extras = atoms[:, m - self._n_extra :] if self._n_extra else None
        wrapped = positions.detach().cpu().numpy().astype(np.float64)
        wrapped = wrapped.reshape(B, n, 3)
        device = x.device
        if subset:
            s = self.pool_atoms
            chosen = torch.stack([torch.randperm(n)[:s] for _ in range(B)])
            chosen = chosen.sort(dim=1).values
            first, second = [], []
            for b in range(B):
                cells = CellList(wrapped[b], box, self.r_cut)
                query, neighbour = cells.within(chosen[b].numpy())
                first.append(torch.as_tensor(query, dtype=torch.long) + b * s)
                second.append(torch.as_tensor(neighbour, dtype=torch.long) + b * n)
            centres = (chosen + n * torch.arange(B)[:, None]).reshape(-1)
            row_of_atom = torch.full((B * n,), -1, dtype=torch.long)
            row_of_atom[centres] = torch.arange(B * s)
            # Pairs are stored by atom; ``first`` held the centre rows.
            first = centres[torch.cat(first)]
            second = torch.cat(second)
            symmetric = False
        else:
            i, j = batch_pairs_within(wrapped, box, self.r_cut)
            first, second = torch.as_tensor(i), torch.as_tensor(j)
            centres = torch.arange(B * n)
            row_of_atom = centres
            symmetric = True
        env = _Environments(
            positions=positions,
            velocities=velocities,
            extras=extras,
            box=box,
            n=n,
            n_configs=B,
            centres=centres.to(device),
            row_of_atom=row_of_atom.to(device),
            first=first.to(device),
            second=second.to(device),
            symmetric=symmetric,
        )
        d, u = self._pair_inputs(env, env.first, env.second)
        env.sums = self._sums(env, d, u, self._own_terms(env))
        return env

    def _pair_inputs(self, env, first, second):
        """Displacements (minimum image) and relative velocities of pairs."""
        d = env.positions[first] - env.positions[second]
        d = d - env.box * torch.round(d / env.box)
        u = None
        if self._velocity:
            u = env.velocities[first] - env.velocities[second]
        return d, u

    def _own_terms(self, env):
        parts = []
        if self._velocity:
            v = env.velocities[env.centres]
            parts.append(v.square().sum(-1, keepdim=True))
        if self._n_extra:
            parts.append(env.extras[env.centres])
        if not parts:
            return env.positions.new_zeros(len(env.centres), 0)
        return torch.cat(parts, dim=1)

    def _sums(self, env, d, u, own):
        """Sums ``S`` (n_centres, sum_width) of the centres' pair terms, from
        the pairs' ``d`` (n_pairs, 3), ``u`` (n_pairs, 3) and the centres'
        own terms ``own``."""
        return self._accumulate(
            env,
            own,
            lambda part, table: self._pair_values(
                d[part], None if u is None else u[part], table
            ),
        )

    def _sum_tangents(self, env, d, u, d_dot, u_dot, own_dot):
        """Directional derivatives of :meth:`_sums` along ``(d_dot, u_dot,
        own_dot)``."""
        return self._accumulate(
            env,
            own_dot,
            lambda part, table: self._pair_tangents(
                d[part],
                None if u is None else u[part],
                d_dot[part],
                None if u is None else u_dot[part],
                table,
            ),
        )

    def _accumulate(self, env, own, chunk_values):
        """Add pair values ``chunk_values(slice, table) -> (values, columns)``
        into each centre's sums, in chunks of pairs that keep every temporary
        small, through one buffer whose last column takes the values of
        absent basis functions."""
        K, C = self.n_radial, self._n_channels
        width = C * K + (3 * K if self.angular else 0) + 1
        n_rows = len(env.centres)
        table, sign = self._column_table(own.device)
        rows = env.row_of_atom[env.first].to(torch.int32) * width
        back = env.row_of_atom[env.second].to(torch.int32) * width
        buffer = own.new_zeros(n_rows * width)
        for lo in range(0, len(env.first), _PAIR_CHUNK):
            part = slice(lo, lo + _PAIR_CHUNK)
            values, cols = chunk_values(part, table)
            buffer.index_add_(
                0, (rows[part, None] + cols).reshape(-1), values.reshape(-1)
            )
            if env.symmetric:
                # Each pair also counts for its second atom, seen the other way.
                buffer.index_add_(
                    0,
                    (back[part, None] + cols).reshape(-1),
                    (values * sign.to(values.dtype)).reshape(-1),
                )
        buffer = buffer.view(n_rows, width)
        parts = [buffer[:, : C * K], own]
        if self.angular:
            parts.append(buffer[:, C * K : width - 1])
        return torch.cat(parts, dim=1)

    def _pair_tangents(self, d, u, d_dot, u_dot, table):
        """Directional derivatives (P, n_values) of :meth:`_pair_values`."""
        K = self.n_radial
        h = (self.r_cut - self.r_min) / (K + 1)
        r = torch.linalg.vector_norm(d, dim=1).clamp_min(1e-12)
        x = (r - self.r_min) / h
        k0 = torch.floor(x)
        t = x - k0
        w, dw = _spline(t), _spline_derivative(t) / h
        rhat = d / r[:, None]
        r_dot = (rhat * d_dot).sum(1)
        w_dot = dw * r_dot[:, None]
        values = [w_dot]
        if u is not None:
            rdot = (rhat * u).sum(1)
            rdot_dot = ((d_dot * u).sum(1) - rdot * r_dot) / r + (rhat * u_dot).sum(1)
            s2 = u.square().sum(1)
            values += [
                w_dot * rdot[:, None] + w * rdot_dot[:, None],
                w_dot * s2[:, None] + 2.0 * w * (u * u_dot).sum(1)[:, None],
            ]
        if self.angular:
            rhat_dot = (d_dot - rhat * r_dot[:, None]) / r[:, None]
            vec = (
                w_dot[:, :, None] * rhat[:, None, :]
                + w[:, :, None] * rhat_dot[:, None, :]
            )
            values.append(vec.reshape(len(d), 12))
        cols = table[k0.long().clamp(-3, K + 1) + 3]
        return torch.cat(values, dim=1), cols

    def _pair_values(self, d, u, table):
        """Values (P, n_values) of pairs' terms and their buffer columns."""
        K = self.n_radial
        h = (self.r_cut - self.r_min) / (K + 1)
        r = torch.linalg.vector_norm(d, dim=1).clamp_min(1e-12)
        x = (r - self.r_min) / h
        k0 = torch.floor(x)
        w = _spline(x - k0)
        values = [w]
        if u is not None:
            rdot = (d * u).sum(1) / r
            s2 = u.square().sum(1)
            values += [w * rdot[:, None], w * s2[:, None]]
        if self.angular:
            rhat = d / r[:, None]
            values.append((w[:, :, None] * rhat[:, None, :]).reshape(len(d), 12))
        cols = table[k0.detach().long().clamp(-3, K + 1) + 3]
        return torch.cat(values, dim=1), cols

    def _column_table(self, device):
        """Buffer columns of a pair's values for each ``floor(x)`` from -3
        to ``n_radial + 1`` (clamped outside), and the sign of each value for
        the reverse pair (vector moments flip)."""
        K, C = self.n_radial, self._n_channels
        trash = C * K + (3 * K if self.angular else 0)
        idx = torch.arange(-3, K + 2)[:, None] + torch.arange(-1, 3)  # (K + 5, 4)
        valid = (idx >= 0) & (idx < K)
        parts = [torch.where(valid, c * K + idx, trash) for c in range(C)]
        signs = [torch.ones(4 * C)]
        if self.angular:
            vec = C * K + 3 * idx[:, :, None] + torch.arange(3)
            parts.append(
                torch.where(valid[:, :, None], vec, trash).reshape(len(idx), 12)
            )
            signs.append(-torch.ones(12))
        table = torch.cat(parts, dim=1).to(device=device, dtype=torch.int32)
        return table, torch.cat(signs).to(device)

    def _buffer_to_sums(self, device):
        """Column of the sums ``S`` of each pair-buffer column, -1 for the
        discarded one (int64, buffer width)."""
        K, C = self.n_radial, self._n_channels
        scalars = torch.arange(C * K)
        vectors = torch.arange(3 * K if self.angular else 0) + C * K + self._n_own
        return torch.cat([scalars, vectors, torch.tensor([-1])]).to(device)

    def _pair_jacobian(self, d, u, table):
        """Derivatives (P, 6 or 3, n_values) of pairs' values (as
        :meth:`_pair_values` orders them) in ``(d, u)``, and their buffer
        columns."""
        K = self.n_radial
        h = (self.r_cut - self.r_min) / (K + 1)
        r = torch.linalg.vector_norm(d, dim=1).clamp_min(1e-12)
        x = (r - self.r_min) / h
        k0 = torch.floor(x)
        t = x - k0
        w, dw = _spline(t), _spline_derivative(t) / h
        rhat = d / r[:, None]
        radial = rhat[:, :, None]  # (P, 3, 1)
        d_rows = [dw[:, None, :] * radial]
        u_rows = [torch.zeros_like(d_rows[0])]
        if u is not None:
            rdot = (rhat * u).sum(1)
            s2 = u.square().sum(1)
            across = ((u - rdot[:, None] * rhat) / r[:, None])[:, :, None]
            d_rows += [
                (dw * rdot[:, None])[:, None, :] * radial + w[:, None, :] * across,
                (dw * s2[:, None])[:, None, :] * radial,
            ]
            u_rows += [w[:, None, :] * radial, 2.0 * w[:, None, :] * u[:, :, None]]
        if self.angular:
            # d(w_a rhat_c)/d d_i = rhat_i rhat_c (w_a' - w_a / r) + w_a delta_ic / r
            outer = rhat[:, :, None] * rhat[:, None, :]  # (P, i, c)
            eye = torch.eye(3, dtype=d.dtype, device=d.device)
            vec = outer[:, :, None, :] * (dw - w / r[:, None])[:, None, :, None]
            vec = vec + (w / r[:, None])[:, None, :, None] * eye[None, :, None, :]
            d_rows.append(vec.reshape(len(d), 3, 12))
            u_rows.append(torch.zeros_like(d_rows[-1]))
        Jv = torch.cat(d_rows, dim=2)
        if u is not None:
            Jv = torch.cat([Jv, torch.cat(u_rows, dim=2)], dim=1)
        cols = table[k0.long().clamp(-3, K + 1) + 3]
        return Jv, cols


class _AtomFeatures(nn.Module):
    """The per-particle map ``phi``: sums ``S_i`` (n, sum_width) to the
    pooled features (n, 2 * n_invariants + n_pooled)."""

    def __init__(self, closure):
        super().__init__()
        self.n_scalar = closure._n_scalar
        self.n_radial = closure.n_radial
        self.angular = closure.angular
        n_inv = closure._n_invariants
        self.register_buffer("scalar_mean", torch.zeros(self.n_scalar))
        self.register_buffer("scalar_scale", torch.ones(self.n_scalar))
        inputs = n_inv
        if self.angular:
            K = self.n_radial
            self.register_buffer("vector_scale", torch.ones(K))
            self.register_buffer("moment_mean", torch.zeros(K))
            self.register_buffer("moment_scale", torch.ones(K))
            self.mix = nn.Parameter(torch.randn(closure.n_angular, K) / math.sqrt(K))
            inputs += closure.n_angular
        self.psi = MLP(inputs, closure.n_pooled, closure.psi_hidden, closure.activation)

    @property
    def invariant_mean(self):
        """Per-particle mean of each invariant, before standardisation."""
        if self.angular:
            return torch.cat([self.scalar_mean, self.moment_mean])
        return self.scalar_mean

    @property
    def invariant_scale(self):
        """Per-particle spread of each invariant, before standardisation.

        The vector-moment invariants are in units of ``vector_scale**2``.
        """
        if self.angular:
            return torch.cat([self.scalar_scale, self.moment_scale])
        return self.scalar_scale

    def _vectors(self, S):
        K = self.n_radial
        return S[:, self.n_scalar :].reshape(len(S), K, 3) / self.vector_scale[:, None]

    def invariants(self, S):
        """Standardised invariants ``e`` (n, n_invariants)."""
        e = (S[:, : self.n_scalar] - self.scalar_mean) / self.scalar_scale
        if not self.angular:
            return e
        moments = self._vectors(S).square().sum(-1)
        return torch.cat([e, (moments - self.moment_mean) / self.moment_scale], dim=1)

    def forward(self, S):
        e = self.invariants(S)
        inputs = e
        if self.angular:
            mixed = torch.einsum("qk,nkc->nqc", self.mix, self._vectors(S))
            inputs = torch.cat([e, mixed.square().sum(-1)], dim=1)
        return torch.cat([e, e * e, self.psi(inputs)], dim=1)

    @torch.no_grad()
    def set_scales(self, S):
        """Standardisation from sums ``S`` (n, sum_width) of sample particles."""
        scalars = S[:, : self.n_scalar]
        self.scalar_mean.copy_(scalars.mean(0))
        self.scalar_scale.copy_(torch.sqrt(scalars.var(0, correction=0) + _EPS))
        if self.angular:
            K = self.n_radial
            norms = S[:, self.n_scalar :].reshape(len(S), K, 3).square().sum(-1)
            self.vector_scale.copy_(torch.sqrt(norms.mean(0) + _EPS))
            moments = self._vectors(S).square().sum(-1)
            self.moment_mean.copy_(moments.mean(0))
            self.moment_scale.copy_(torch.sqrt(moments.var(0, correction=0) + _EPS))


def _spline(t):
    """Uniform cubic B-spline weights (P, 4) of the basis functions centred
    at ``floor(x) - 1 ... floor(x) + 2`` for ``t = x - floor(x)`` (P,)."""
    t = t[:, None]
    t2 = t * t
    t3 = t2 * t
    s = 1.0 - t
    w0 = s * s * s / 6.0
    w1 = 0.5 * t3 - t2 + 2.0 / 3.0
    w3 = t3 / 6.0
    return torch.cat([w0, w1, 1.0 - w0 - w1 - w3, w3], dim=1)


def _spline_derivative(t):
    """Derivatives in ``t`` of :func:`_spline`'s weights, (P, 4)."""
    t = t[:, None]
    s = 1.0 - t
    d0 = -0.5 * s * s
    d1 = 1.5 * t * t - 2.0 * t
    d3 = 0.5 * t * t
    return torch.cat([d0, d1, -d0 - d1 - d3, d3], dim=1)


class ParticleSetJacobian:
    """Jacobians ``J`` (k x N) of a :class:`ParticleSetClosure` at a batch of
    states, kept in the neighbour structure.

    Column block ``i`` (the particle's ``particle_dim`` coordinates) of
    :math:`J = \\sum_c B_c \\, \\partial S_c / \\partial x` gathers the
    contributions of the environments that contain particle ``i``: its own
    and its neighbours'. ``B_c`` (k x sum_width), the derivative of the
    closure variables in centre ``c``'s sums, is computed only for the
    centres a request needs, by vector-Jacobian products of the per-particle
    network, and the pair derivatives in closed form:

    * :meth:`columns` at particles ``I``: O(``len(I)`` * neighbours);
    * :meth:`gram`: exact (every column) when the closure was pooled over a
      subset (training mode) or has at most ``32 * gram_atoms`` particles,
      O(n * neighbours); otherwise the unbiased estimate
      ``(n / s) * sum over s random particles of J_i J_i^T``, with
      ``s = gram_atoms``;
    * :meth:`matvec`: exact, O(n * neighbours): the pairs' directional
      derivatives in closed form, added into the centres' sums, then a
      forward-mode product through the per-particle network.

    The object reads the closure's parameters when a method is called: use
    it before they change. Created by :meth:`ParticleSetClosure.jacobian`.

    Attributes
    ----------
    outputs : torch.Tensor of shape (batch, k)
        The closure variables at the states, pooled as the Jacobian is (so a
        caller that needs both need not call the closure again).
    """

    def __init__(self, closure, envs, A, exact_gram, grad=True, out=None, outputs=None):
        self.closure = closure
        self.envs = envs
        self.A = A
        self.outputs = outputs
        self.exact_gram = exact_gram
        self._grad = grad
        self._out = out or {}
        self._cache = {}

    # ------------------------------------------------------------ protocol

    def to(self, *args, **kwargs):
        """A view whose results are moved or cast like ``torch.Tensor.to``."""
        probe = torch.empty(0, dtype=self.A.dtype, device=self.A.device)
        probe = probe.to(*args, **kwargs)
        out = {"dtype": probe.dtype, "device": probe.device}
        outputs = None if self.outputs is None else self.outputs.to(*args, **kwargs)
        return ParticleSetJacobian(
            self.closure, self.envs, self.A, self.exact_gram, self._grad, out, outputs
        )

    def detach(self):
        """A view whose results carry no autograd graph."""
        outputs = None if self.outputs is None else self.outputs.detach()
        return ParticleSetJacobian(
            self.closure,
            self.envs,
            self.A.detach(),
            self.exact_gram,
            False,
            self._out,
            outputs,
        )

    def columns(self, index):
        """Selected columns ``J[b, :, index[b]]``.

        Parameters
        ----------
        index : torch.Tensor of shape (batch, m), int64
            Coordinates (in ``range(n_features)``) per state.

        Returns
        -------
        torch.Tensor of shape (batch, k, m)
        """
        index = torch.as_tensor(index, device=self.A.device)
        B, k = self.A.shape[0], self.A.shape[1]
        if index.ndim != 2 or index.shape[0] != B:
            raise ValueError(
                f"index must have shape ({B}, m), got {tuple(index.shape)}"
            )
        dim = self.closure.particle_dim
        out = []
        with self._context():
            for env, A, idx in self._per_group(index):
                n = env.n
                atoms = (
                    idx // dim
                    + n * torch.arange(env.n_configs, device=idx.device)[:, None]
                )
                unique, inverse = torch.unique(atoms, return_inverse=True)
                blocks = self._blocks(env, A, unique)  # (U, k, dim)
                picked = blocks[inverse.reshape(-1), :, (idx % dim).reshape(-1)]
                out.append(picked.view(env.n_configs, idx.shape[1], k).transpose(1, 2))
        return self._result(torch.cat(out) if out else self.A.new_zeros(0, k, 0))

    def gram(self):
        """``J J^T`` per state, shape (batch, k, k) (see the class notes)."""
        parts = []
        with self._context():
            for env, A, _ in self._per_group():
                n = env.n
                gram_atoms = self.closure.gram_atoms
                sampled = not (
                    self.exact_gram or gram_atoms is None or n <= 32 * gram_atoms
                )
                if sampled:
                    chosen = torch.stack(
                        [torch.randperm(n)[:gram_atoms] for _ in range(env.n_configs)]
                    ).to(A.device)
                    atoms = (
                        chosen
                        + n * torch.arange(env.n_configs, device=A.device)[:, None]
                    )
                    weight = n / gram_atoms
                elif env.symmetric:
                    atoms = torch.arange(env.n_configs * n, device=A.device).view(
                        env.n_configs, n
                    )
                    weight = 1.0
                else:
                    atoms = None  # every atom some centre touches
                    weight = 1.0
                parts.append(self._gram_of(env, A, atoms, weight))
        return self._result(torch.cat(parts))

    def matvec(self, v):
        """``J v`` per state.

        Parameters
        ----------
        v : torch.Tensor of shape (batch, N) or (batch, N, r)

        Returns
        -------
        torch.Tensor of shape (batch, k) or (batch, k, r)
        """
        v = torch.as_tensor(v)
        B = self.A.shape[0]
        N = self.envs[0].n * self.closure.particle_dim if self.envs else 0
        if v.ndim not in (2, 3) or v.shape[0] != B or v.shape[1] != N:
            raise ValueError(
                f"v must have shape ({B}, {N}) or ({B}, {N}, r), got {tuple(v.shape)}"
            )
        single = v.ndim == 2
        if single:
            v = v[..., None]
        v = v.to(self.A)
        out = []
        with self._context():
            start = 0
            for env, A in zip(self.envs, self._A_groups(), strict=True):
                stop = start + env.n_configs
                columns = [
                    self._directional(env, A, v[start:stop, :, j])
                    for j in range(v.shape[2])
                ]
                out.append(torch.stack(columns, dim=-1))
                start = stop
        result = torch.cat(out)
        return self._result(result[..., 0] if single else result)

    # ----------------------------------------------------------- internals

    def _context(self):
        return torch.enable_grad() if self._grad else torch.no_grad()

    def _result(self, t):
        return t.to(**self._out) if self._out else t

    def _A_groups(self):
        sizes = [env.n_configs for env in self.envs]
        return torch.split(self.A, sizes)

    def _per_group(self, index=None):
        start = 0
        for env, A in zip(self.envs, self._A_groups(), strict=True):
            stop = start + env.n_configs
            yield env, A, None if index is None else index[start:stop]
            start = stop

    def _B(self, env, A, rows):
        """``B_c`` (len(rows), sum_width, k) at centre rows ``rows``.

        When a request needs most centres of a small batch, ``B`` is made
        for all of them once and kept for the next request (columns then
        Gram).
        """
        n_rows, k = len(env.centres), A.shape[1]
        grad = torch.is_grad_enabled()
        if 2 * len(rows) >= n_rows and n_rows * env.sums.shape[1] * k <= _B_CACHE:
            cached = self._cache.get(id(env))
            if cached is None or cached[0] != grad:
                everything = torch.arange(n_rows, device=rows.device)
                cached = (grad, self._make_B(env, A, everything))
                self._cache[id(env)] = cached
            return cached[1][rows]
        return self._make_B(env, A, rows)

    def _make_B(self, env, A, rows):
        closure = self.closure
        k = A.shape[1]
        per_config = env.centres_per_config
        S = env.sums[rows]
        if k == 0:
            return S.new_zeros(len(rows), S.shape[1], 0)
        cotangent = A[rows // per_config] / per_config  # (R, k, pooled)
        _, pullback = vjp(closure.atom, S)
        (B,) = vmap(pullback)(cotangent.transpose(0, 1))  # (k, R, sum_width)
        return B.permute(1, 2, 0)

    def _directed(self, env, atoms_mask):
        """Directed pairs (centre atom, neighbour atom) with an end selected."""
        first, second = env.first, env.second
        if atoms_mask is not None:
            keep = atoms_mask[first] | atoms_mask[second]
            first, second = first[keep], second[keep]
        if env.symmetric:
            first, second = torch.cat([first, second]), torch.cat([second, first])
        return first, second

    def _plan(self, env, atoms):
        """The parameter-free part of the column blocks at distinct ``atoms``:
        which pairs and centres contribute, and the pair geometry."""
        closure = self.closure
        mask = torch.zeros(env.n_configs * env.n, dtype=torch.bool, device=atoms.device)
        mask[atoms] = True
        slot = torch.full_like(env.row_of_atom, -1)
        slot[atoms] = torch.arange(len(atoms), device=atoms.device)
        first, second = self._directed(env, mask)
        own_atoms = torch.nonzero(mask & (env.row_of_atom >= 0)).reshape(-1)
        needed, inverse = torch.unique(
            torch.cat([env.row_of_atom[first], env.row_of_atom[own_atoms]]),
            return_inverse=True,
        )
        with torch.no_grad():
            d, u = closure._pair_inputs(env, first, second)
        return _Plan(
            n_slots=len(atoms),
            needed=needed,
            pair_rows=inverse[: len(first)],
            own_rows=inverse[len(first) :],
            to_first=slot[first],
            to_second=slot[second],
            own_slots=slot[own_atoms],
            own_velocities=None
            if env.velocities is None
            else env.velocities[own_atoms],
            d=d,
            u=u,
        )

    def _blocks(self, env, A, atoms):
        """Column blocks (len(atoms), k, particle_dim) at distinct ``atoms``."""
        plan = self._plan(env, atoms)
        if A.shape[1] == 0:
            return A.new_zeros(plan.n_slots, 0, self.closure.particle_dim)
        return _assemble(self.closure, plan, self._B(env, A, plan.needed))

    def _gram_of(self, env, A, atoms, weight):
        """``weight * sum of block block^T`` over ``atoms`` (B, n_sel) or,
        if None, over every particle the centres touch; per configuration."""
        k = A.shape[1]
        B = env.n_configs
        if k == 0:
            return A.new_zeros(B, 0, 0)
        if atoms is None:
            touched = torch.unique(torch.cat([env.centres, env.second]))
        else:
            touched = atoms.reshape(-1)
        grams = A.new_zeros(B, k, k)
        # Derivative work in bounded groups of configurations.
        per = max(1, _ROW_BUDGET // max(env.centres_per_config, 1))
        config_of = touched // env.n
        for lo in range(0, B, per):
            sel = touched[(config_of >= lo) & (config_of < lo + per)]
            plan = self._plan(env, sel)
            Bt = self._B(env, A, plan.needed)
            # The blocks are linear in Bt: a custom backward recomputes them
            # instead of keeping (pairs x k x dim) terms alive until it.
            configs = sel // env.n
            counts = torch.bincount(configs - lo, minlength=min(per, B - lo))
            products = _BlockGram.apply(Bt, self.closure, plan, counts.tolist())
            grams = grams.index_add(0, torch.arange(lo, lo + len(counts)), products)
        return weight * grams

    def _directional(self, env, A, v):
        """``J v`` (B, k) for one direction ``v`` (B, N)."""
        closure = self.closure
        k = A.shape[1]
        if k == 0:
            return A.new_zeros(env.n_configs, 0)
        dim = closure.particle_dim
        tangent = v.reshape(-1, dim)
        dpos = tangent[:, :3]
        d_dot = dpos[env.first] - dpos[env.second]
        d, u = closure._pair_inputs(env, env.first, env.second)
        own = closure._own_terms(env)
        u_dot = own_dot = None
        parts = []
        if closure._velocity:
            dvel = tangent[:, 3:6]
            u_dot = dvel[env.first] - dvel[env.second]
            vel = env.velocities[env.centres]
            parts.append(2.0 * (vel * dvel[env.centres]).sum(-1, keepdim=True))
        if closure._n_extra:
            parts.append(tangent[env.centres][:, dim - closure._n_extra :])
        own_dot = torch.cat(parts, 1) if parts else own.new_zeros(own.shape)

        sums_dot = closure._sum_tangents(env, d, u, d_dot, u_dot, own_dot)

        def pooled_features(sums):
            features = closure.atom(sums)
            return features.view(env.n_configs, -1, features.shape[1]).mean(1)

        _, pooled_dot = jvp(pooled_features, (env.sums,), (sums_dot,))
        return torch.einsum("bkp,bp->bk", A, pooled_dot)


@dataclass
class _Plan:
    """Which pairs and centres make the column blocks of some particles."""

    n_slots: int
    needed: torch.Tensor  # centre rows whose B is needed
    pair_rows: torch.Tensor  # row in ``needed`` of each directed pair's centre
    own_rows: torch.Tensor  # row in ``needed`` of each selected centre
    to_first: torch.Tensor  # block of each pair's centre, -1 if not selected
    to_second: torch.Tensor  # block of each pair's neighbour, -1 if not selected
    own_slots: torch.Tensor  # block of each selected centre
    own_velocities: torch.Tensor | None
    d: torch.Tensor
    u: torch.Tensor | None


def _assemble(closure, plan, Bt):
    """Column blocks (n_slots, k, particle_dim), linear in ``Bt``.

    A directed pair (c, j) adds ``B_c dv/d(d, u)`` to the block of ``c`` and
    its negative to the block of ``j``, with ``v`` the pair's values in
    ``c``'s sums; only the (at most 24) entries of ``B_c`` that the pair
    touches are gathered, and the products are batched matrix products.
    """
    dim = closure.particle_dim
    R, width, k = Bt.shape
    flat = torch.cat([Bt.reshape(R * width, k), Bt.new_zeros(1, k)])
    table, _ = closure._column_table(Bt.device)
    to_sums = closure._buffer_to_sums(Bt.device)
    n_in = 6 if closure._velocity else 3
    blocks = Bt.new_zeros(plan.n_slots, n_in, k)
    for lo in range(0, len(plan.d), _JACOBIAN_CHUNK):
        chunk = slice(lo, lo + _JACOBIAN_CHUNK)
        with torch.no_grad():
            d = plan.d[chunk]
            u = None if plan.u is None else plan.u[chunk]
            Jv, cols = closure._pair_jacobian(d, u, table)  # (P, n_in, nv), (P, nv)
            columns = to_sums[cols.long()]
            index = torch.where(
                columns >= 0, plan.pair_rows[chunk, None] * width + columns, R * width
            )
        beta = flat.index_select(0, index.reshape(-1)).view(len(d), -1, k)
        W = torch.bmm(Jv.to(beta.dtype), beta)  # (P, n_in, k)
        first, second = plan.to_first[chunk], plan.to_second[chunk]
        keep = first >= 0
        blocks.index_add_(0, first[keep], W[keep])
        keep = second >= 0
        blocks.index_add_(0, second[keep], -W[keep])
    blocks = torch.nn.functional.pad(blocks.transpose(1, 2), (0, dim - n_in))
    own = _own_pullback(closure, Bt[plan.own_rows], plan.own_velocities)
    return blocks.index_add(0, plan.own_slots, own)


class _BlockGram(torch.autograd.Function):
    """Per-configuration sums of ``block block^T``, (n_configs, k, k), of the
    blocks :func:`_assemble` makes from ``Bt``; ``counts`` blocks (in order)
    belong to each configuration. The backward pass rebuilds the blocks."""

    @staticmethod
    def forward(ctx, Bt, closure, plan, counts):
        with torch.no_grad():
            blocks = _assemble(closure, plan, Bt)
        ctx.closure, ctx.plan, ctx.counts = closure, plan, counts
        ctx.save_for_backward(Bt)
        return torch.stack(
            [
                torch.einsum("akm,alm->kl", part, part)
                for part in torch.split(blocks, counts)
            ]
        )

    @staticmethod
    def backward(ctx, grad):
        (Bt,) = ctx.saved_tensors
        symmetric = grad + grad.transpose(1, 2)
        with torch.enable_grad():
            Bt = Bt.detach().requires_grad_(True)
            blocks = _assemble(ctx.closure, ctx.plan, Bt)
            grad_blocks = torch.cat(
                [
                    torch.einsum("kl,alm->akm", g, part)
                    for g, part in zip(
                        symmetric, torch.split(blocks.detach(), ctx.counts), strict=True
                    )
                ]
            )
            (grad_Bt,) = torch.autograd.grad(blocks, Bt, grad_blocks)
        return grad_Bt, None, None, None


def _own_pullback(closure, Bt, velocities):
    """Column blocks (R, k, particle_dim) of centres' own terms, from their
    ``Bt`` (R, sum_width, k) and velocities (R, 3)."""
    dim = closure.particle_dim
    k = Bt.shape[2]
    parts = [Bt.new_zeros(len(Bt), k, 3)]
    col = closure.n_radial * closure._n_channels
    if closure._velocity:
        parts.append(2.0 * Bt[:, col, :, None] * velocities[:, None, :])
        col += 1
    if closure._n_extra:
        parts.append(Bt[:, col : col + closure._n_extra, :].transpose(1, 2))
    block = torch.cat(parts, dim=2)
    assert block.shape[2] == dim
    return block


def _positive_real(name, value):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not (np.isfinite(value) and value > 0)
    ):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _integer(name, value, low):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value < low
    ):
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _widths(name, value):
    try:
        widths = tuple(value)
    except TypeError:
        widths = None
    if widths is None or not all(
        isinstance(h, numbers.Integral) and not isinstance(h, bool) and h > 0
        for h in widths
    ):
        raise ValueError(
            f"{name} must be a sequence of positive integers, got {value!r}"
        )
    return tuple(int(h) for h in widths)
