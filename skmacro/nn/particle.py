r"""A closure network for particle systems: a learned map of parameter-free
pooled descriptors of the particles' local environments, invariant to
permutation, translation and rotation."""

import math
import numbers
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch

from .._validation import check_choice
from ..systems.neighbours import CellList, cubic_box_side, pairs_within
from .closures import FeatureClosure
from .mlp import ACTIVATIONS

__all__ = ["ParticleSetClosure", "ParticleFeatureJacobian"]

# Directed neighbour pairs handled by one group of configurations, and
# incidences (pair, selected particle) handled at once by the column blocks:
# temporaries of some tens of MB.
_PAIR_BUDGET = 500_000
_INCIDENCE_BUDGET = 60_000
# Neighbours per particle assumed when the pair count of a configuration is
# estimated before its neighbour list exists (the density inside r_cut).
_SPHERE = 4.0 / 3.0 * math.pi
# Verlet skin of the neighbour lists, relative to r_cut.
_SKIN = 0.12


@dataclass
class _Environments:
    """Local environments of the pooled particles ("centres") of a group of
    configurations, all with ``n`` particles in a cubic box of side ``box``.

    Particles are indexed in the flattened group (particle ``a`` of
    configuration ``b`` is ``b * n + a``); centres are stored configuration
    by configuration, ``s`` per configuration. Every pair is directed from a
    centre (row ``row`` of the centres, particle ``centre``) to a neighbour
    ``other`` within ``r_cut``.
    """

    n: int
    s: int
    n_configs: int
    box: float
    x: torch.Tensor  # (B * n, particle_dim)
    centre_atoms: torch.Tensor  # (B * s,)
    atom_row: torch.Tensor  # (B * n,), the centre row of a particle or -1
    row: torch.Tensor  # (n_pairs,)
    centre: torch.Tensor  # (n_pairs,)
    other: torch.Tensor  # (n_pairs,)
    d: torch.Tensor  # (n_pairs, 3), minimum image
    u: torch.Tensor | None  # (n_pairs, 3), relative velocities
    r: torch.Tensor  # (n_pairs,)
    interval: torch.Tensor  # (n_pairs,), spline interval + 2 (K + 3: none)
    w: torch.Tensor  # (n_pairs, 4), spline weights
    dw: torch.Tensor  # (n_pairs, 4), their derivatives in r
    sums: "_PairSums" = None  # sums of pair terms per centre and radial function
    channels: torch.Tensor = None  # (n_pairs, channels)
    radial: torch.Tensor = None  # (B * s, K, C) sums of the scalar pair channels
    vectors: torch.Tensor = None  # (B * s, K, 3) vector moments
    own: torch.Tensor = None  # (B * s, n_own)
    scalars: torch.Tensor = None  # (B * s, n_scalar)
    features: torch.Tensor = None  # (B, P)


class ParticleSetClosure(FeatureClosure):
    r"""Closure variables from pooled descriptors of the particles' local
    environments.

    The closure part :math:`\hat z` of the latent coordinates of a state of
    ``n`` identical particles is :math:`\hat z = \rho(s(x))`: :math:`s` is a
    fixed (parameter-free) vector of pooled descriptors, P numbers, and only
    the head :math:`\rho`, an MLP from P numbers to ``n_outputs``, is
    learned. It is invariant to relabelling the particles, to translations
    and to rotations and reflections of the periodic cube, and one closure
    serves every system size when the box follows from a number ``density``.
    It is a feature closure (:mod:`skmacro.nn.closures`), so
    :class:`~skmacro.ClosureAutoencoder` computes :math:`s` once per state
    and trains :math:`\rho` at a cost per epoch that does not depend on n.

    **Scope.** One species of particles in a cubic periodic box (side from
    ``density`` or fixed by ``box``); every displacement uses the minimum
    image, so the box side must exceed ``2 * r_cut``.

    **Layout.** States are particle-major rows ``x = (x_1, ..., x_n)``,
    ``x_i`` of length ``particle_dim``: coordinates 0-2 are the position
    (wrapped or not), coordinates 3-5 the velocity when ``particle_dim >= 6``,
    and any further coordinates (coordinates 3 onwards when
    ``particle_dim`` is 4 or 5) are read as rotation-invariant scalars of
    the particle.

    **Descriptors.** With cubic B-splines :math:`b_k` (``n_radial`` of them,
    centred from ``r_min`` on, twice continuously differentiable and zero
    beyond ``r_cut``), :math:`d_{ij} = r_i - r_j` (minimum image),
    :math:`r = |d_{ij}|`, :math:`\hat d = d_{ij} / r`, :math:`u = v_i - v_j`
    and :math:`\dot r = \hat d \cdot u`, particle ``i`` has

    * the density :math:`\sum_j b_k(r_{ij})` (a smooth radial distribution);
    * the radial velocity :math:`\sum_j b_k(r_{ij}) \dot r_{ij}` (its share
      of the rate of change of pair energies, :math:`dU/dt`);
    * the relative kinetic term :math:`\sum_j b_k(r_{ij}) |u_{ij}|^2`;
    * its kinetic term :math:`|v_i|^2` and its extra scalars;
    * with ``angular``, the vector moments :math:`V_{ik} = \sum_j
      b_k(r_{ij}) \hat d_{ij}` (a force on particle ``i`` is a combination of
      them).

    **Features.** :math:`s` is the mean over the pooled particles of each
    scalar descriptor, of its square, and (with ``angular``) of every
    product :math:`V_{ik} \cdot V_{il}`, :math:`k \le l`, whose
    combinations include :math:`|F_i|^2` for any pair force :math:`F`:
    P = ``2 * n_scalar + n_radial * (n_radial + 1) / 2``
    (:attr:`feature_names`). These hold the potential energy and its rate of
    change (sums of pair terms), the temperature and the spread of local
    environments and forces, which is what the temperature of a fluid
    exchanges energy with.

    **Reconstruction target.** A permutation-invariant code cannot give
    back the microscopic state, so the decoder reconstructs the standardised
    features; :meth:`target_to_user` (and so ``inverse_transform``) returns
    them in their own units.

    **Pooling over a subset.** A state with more than ``pool_atoms``
    particles is pooled over a fixed subset of ``pool_atoms`` of them (the
    same particle labels for every state of that size, drawn once from
    ``seed``), so that features and Jacobians cost O(``pool_atoms`` *
    neighbours) whatever n. The encoder is then still a smooth,
    deterministic function of the state, exactly differentiated by
    :meth:`feature_jacobian`, but invariant to relabelling the particles
    only in distribution: each pooled mean is an unbiased estimate of the
    mean over all particles of an exchangeable state, with a standard
    deviation of about ``sigma * sqrt((1 - pool_atoms / n) / pool_atoms)``
    for a per-particle spread ``sigma``, and the head, which is nonlinear,
    sees it with a bias of the order of that variance. Up to ``pool_atoms``
    particles every particle is pooled and the invariances are exact.

    **Jacobians.** :meth:`feature_jacobian` keeps the neighbour structure
    (:class:`ParticleFeatureJacobian`): columns at ``m`` particles cost
    O(m * neighbours), ``F v`` one pass over the pooled particles' pairs,
    ``F^T w`` (:meth:`ParticleFeatureJacobian.rmatvec`) one backward pass
    over them, and ``F F^T`` is exact up to ``gram_atoms`` particles and an
    unbiased estimate from ``gram_atoms`` random particles above. Outside
    gradient recording the closure's Jacobian forms its k rows once as
    ``F^T rho'^T`` and its products with them are exact.

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
        Whether to include the products of vector moments (three-body
        information).
    hidden : sequence of int, default=(64, 64)
        Hidden widths of the head :math:`\rho`.
    activation : str, default="tanh"
        Activation of the head, one of ``skmacro.nn.mlp.ACTIVATIONS``; a
        smooth one keeps Jacobians continuous.
    pool_atoms : int or None, default=2048
        Largest number of particles pooled per state (see Pooling over a
        subset); None pools all of them.
    gram_atoms : int or None, default=256
        Particles whose Jacobian columns estimate ``F F^T`` in states of
        more particles (see :class:`ParticleFeatureJacobian`); None: exact.
    seed : int, default=0
        Seeds the pooled subsets and the particles drawn for ``F F^T``.

    Attributes
    ----------
    n_outputs : int
        Number ``k`` of closure variables, set by :meth:`build`.
    n_features : int
        Width ``N`` given to :meth:`build`.
    feature_width : int
        P.
    feature_names : list of str
        What each feature is.
    head : FeatureHead
        The learned map (set by :meth:`build`).

    Examples
    --------
    >>> import torch
    >>> from skmacro.nn import ParticleSetClosure
    >>> closure = ParticleSetClosure(2.0, 6, density=0.5).build(6 * 64, 3)
    >>> x = torch.rand(5, 64, 6) * torch.tensor([5.0] * 3 + [1.0] * 3)
    >>> x = x.reshape(5, -1)
    >>> closure.prepare(lambda: iter([x]))
    >>> closure(x).shape, closure.features(x).shape
    (torch.Size([5, 3]), torch.Size([5, 234]))
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
        hidden=(64, 64),
        activation="tanh",
        pool_atoms=2048,
        gram_atoms=256,
        seed=0,
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
        self.hidden = _widths("hidden", hidden)
        self.activation = check_choice("activation", activation, ACTIVATIONS)
        self.pool_atoms = (
            None if pool_atoms is None else _integer("pool_atoms", pool_atoms, 1)
        )
        self.gram_atoms = (
            None if gram_atoms is None else _integer("gram_atoms", gram_atoms, 1)
        )
        self.seed = _integer("seed", seed, 0)
        self.n_outputs = None
        self.n_features = None
        # Calls of F F^T so far: each draws its particles from its own seed.
        self._gram_draws = 0

    # ----------------------------------------------------------------- layout

    @property
    def size_agnostic(self):
        """True when the box follows from ``density``: any size is encoded."""
        return self.density is not None

    @property
    def _velocity(self):
        return self.particle_dim >= 6

    @property
    def _n_in(self):
        """Coordinates a pair term reads: position, and velocity if any."""
        return 6 if self._velocity else 3

    @property
    def _n_extra(self):
        return self.particle_dim - self._n_in

    @property
    def _n_channels(self):
        """Scalar pair channels per radial function."""
        return 3 if self._velocity else 1

    @property
    def _n_own(self):
        return int(self._velocity) + self._n_extra

    @property
    def _n_scalar(self):
        """Scalar descriptors per particle: pair channels and own terms."""
        return self._n_channels * self.n_radial + self._n_own

    @property
    def _n_angular(self):
        K = self.n_radial
        return K * (K + 1) // 2 if self.angular else 0

    @property
    def feature_width(self):
        """P: means and mean squares of the scalar descriptors, and means of
        the products of vector moments."""
        return 2 * self._n_scalar + self._n_angular

    @property
    def _centres(self):
        h = (self.r_cut - self.r_min) / (self.n_radial + 1)
        return [self.r_min + k * h for k in range(self.n_radial)]

    @property
    def descriptor_names(self):
        """Names of the scalar per-particle descriptors, list of str."""
        channels = ["density"]
        if self._velocity:
            channels += ["radial velocity", "relative speed^2"]
        names = [f"{c}[r={r:.3g}]" for c in channels for r in self._centres]
        if self._velocity:
            names.append("speed^2")
        first_extra = self._n_in
        names += [f"coordinate {first_extra + e}" for e in range(self._n_extra)]
        return names

    @property
    def feature_names(self):
        """What each feature (and each column of ``target_to_user``) is,
        list of str."""
        names = self.descriptor_names
        out = [f"mean {s}" for s in names] + [f"mean square {s}" for s in names]
        if self.angular:
            r = self._centres
            out += [
                f"mean V[r={r[k]:.3g}].V[r={r[m]:.3g}]"
                for k, m in zip(*np.triu_indices(self.n_radial), strict=True)
            ]
        return out

    @property
    def feature_groups(self):
        """Group of each feature for the head's scale floor: one per channel
        and moment, one per own term and moment, one for the angular
        products; (P,) int64."""
        K, C = self.n_radial, self._n_channels
        one = [c for c in range(C) for _ in range(K)] + [
            C + e for e in range(self._n_own)
        ]
        width = C + self._n_own
        groups = one + [g + width for g in one] + [2 * width] * self._n_angular
        return torch.tensor(groups, dtype=torch.long)

    def box_side(self, n_atoms):
        """Box side of a state of ``n_atoms`` particles, float."""
        return cubic_box_side(n_atoms, density=self.density, box=self.box)

    def pooled(self, n_atoms):
        """The particles pooled in states of ``n_atoms`` particles: all of
        them, or the fixed subset of ``pool_atoms`` (see Pooling over a
        subset), sorted; int64 tensor."""
        if self.pool_atoms is None or n_atoms <= self.pool_atoms:
            return torch.arange(n_atoms)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + n_atoms)
        chosen = torch.randperm(n_atoms, generator=generator)[: self.pool_atoms]
        return chosen.sort().values

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
        cubic_box_side(n, density=self.density, box=self.box, cutoff=self.r_cut)

    def build(self, n_features, n_outputs):
        """Create the head for states of width ``n_features`` and
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
        self.make_head(n_outputs, self.hidden, self.activation)
        return self

    def floats_per_row(self, n_features):
        """Floats a state's Jacobian holds: its pooled particles' pairs and
        their terms, and the k dense rows of the closure's Jacobian with the
        pair cotangents that form them."""
        n = n_features // self.particle_dim
        k = self.n_outputs or 0
        return int((40 + 12 * k) * self._pairs_per_state(n) + 2 * k * n_features)

    def features(self, x):
        """The pooled descriptors.

        Parameter-free: no gradient reaches the closure's parameters. When
        ``x`` requires a gradient (and gradients are being recorded) the
        features are computed with differentiable torch operations, so
        autograd differentiates them in ``x`` (slower; for checks and small
        systems); otherwise the sparse sums run without recording.

        Parameters
        ----------
        x : torch.Tensor of shape (batch, n_features)

        Returns
        -------
        torch.Tensor of shape (batch, feature_width)
        """
        x = self._check_input(x, keep_grad=True)
        differentiable = torch.is_grad_enabled() and x.requires_grad
        with torch.set_grad_enabled(differentiable):
            parts = [
                self._environments(group, differentiable).features
                for group in self._groups(x)
            ]
        return torch.cat(parts) if parts else x.new_zeros(0, self.feature_width)

    @torch.no_grad()
    def feature_jacobian(self, x):
        """``ds/dx`` at the rows of ``x`` in the neighbour structure.

        Parameters
        ----------
        x : torch.Tensor of shape (batch, n_features)

        Returns
        -------
        ParticleFeatureJacobian
            Its ``outputs`` are the features at ``x``.
        """
        x = self._check_input(x)
        return ParticleFeatureJacobian(
            self, [self._environments(group) for group in self._groups(x)]
        )

    # -------------------------------------------------------------- internals

    def _check_built(self):
        if self.n_outputs is None:
            raise RuntimeError(
                f"this {type(self).__name__} has no layers yet; call build first"
            )

    def _check_input(self, x, keep_grad=False):
        self._check_built()
        x = torch.as_tensor(x)
        if x.ndim != 2:
            raise ValueError(f"x must be 2-D (batch, n_features), got {tuple(x.shape)}")
        self.check_n_features(x.shape[1])
        if not x.is_floating_point():
            x = x.to(self.head.feature_mean.dtype)
        return x if keep_grad else x.detach()

    def _pairs_per_state(self, n):
        centres = min(n, self.pool_atoms or n)
        return max(centres * _SPHERE * self.r_cut**3 * n / self.box_side(n) ** 3, 1.0)

    def _groups(self, x):
        """Row groups of ``x`` whose neighbour pairs fit the pair budget."""
        n = x.shape[1] // self.particle_dim
        size = max(int(_PAIR_BUDGET // self._pairs_per_state(n)), 1)
        return torch.split(x, size)

    def _skin(self, box):
        """Verlet skin of the neighbour lists: pairs are listed within
        ``r_cut + skin`` and the list serves every later state of a call
        whose particles all moved less than ``skin / 2`` (the pairs beyond
        ``r_cut`` are then dropped per state)."""
        return min(_SKIN * self.r_cut, 0.5 * (box / 2 - self.r_cut))

    def _neighbours(self, positions, box, pool):
        """Directed candidate pairs (centre row, neighbour) of each state.

        A Verlet list: pairs within ``r_cut + skin`` of a reference state
        contain every pair within ``r_cut`` of any state whose particles all
        moved less than ``skin / 2`` from it, so consecutive states of a
        trajectory share one list (checked state by state, O(n)); the last
        list is kept for the next call. Pairs beyond ``r_cut`` are dropped
        later.

        Parameters
        ----------
        positions : ndarray of shape (B, n, 3)
        box : float
        pool : ndarray of int of shape (s,)

        Returns
        -------
        rows : ndarray of int64, the centre row ``b * s + q``
        others : ndarray of int64, the neighbour ``b * n + j``
        """
        B, n, _ = positions.shape
        s = len(pool)
        skin = self._skin(box)
        reach = self.r_cut + skin
        key = (n, box, s, self.seed, reach)
        cache = getattr(self, "_verlet", None)
        if cache is not None and cache[0] != key:
            cache = None
        rows, others = [], []
        for b in range(B):
            fresh = cache is None or (
                float(np.max(np.sum((positions[b] - cache[1]) ** 2, axis=1)))
                > (skin / 2) ** 2
            )
            if fresh:
                reference = np.array(positions[b])
                if s == n:
                    i, j = pairs_within(reference, box, reach)
                    query = np.concatenate([i, j]).astype(np.int64)
                    neighbour = np.concatenate([j, i]).astype(np.int64)
                else:
                    query, neighbour = CellList(reference, box, reach).within(pool)
                cache = (key, reference, query, neighbour)
            rows.append(cache[2] + b * s)
            others.append(cache[3] + b * n)
        self._verlet = cache
        return np.concatenate(rows), np.concatenate(others)

    def __getstate__(self):
        # The last neighbour list is a cache, not part of the closure.
        state = super().__getstate__()
        state.pop("_verlet", None)
        return state

    def _environments(self, x, differentiable=False):
        """Environments, descriptors and features of the rows of ``x``
        (with torch operations autograd follows if ``differentiable``)."""
        take = _index if differentiable else _take
        B, m = len(x), self.particle_dim
        K, C = self.n_radial, self._n_channels
        n = x.shape[1] // m
        box = self.box_side(n)
        atoms = x.reshape(B * n, m)
        pool = self.pooled(n)
        s = len(pool)
        positions = atoms[:, :3].detach().cpu().numpy().reshape(B, n, 3)
        row, other = self._neighbours(positions, box, pool.numpy())
        centre_atoms = (pool + n * torch.arange(B)[:, None]).reshape(-1)
        centre = centre_atoms.numpy()[row]
        # Both ends' position and velocity at once.
        diff = take(atoms[:, : self._n_in], centre) - take(
            atoms[:, : self._n_in], other
        )
        d = diff[:, :3]
        d = d - box * torch.round(d / box)
        r2 = (d * d).sum(1)
        inside = torch.nonzero(r2 < self.r_cut**2).reshape(-1)
        device = x.device
        keep = inside.cpu().numpy()
        row = torch.as_tensor(row[keep], device=device)
        centre = torch.as_tensor(centre[keep], device=device)
        other = torch.as_tensor(other[keep], device=device)
        d, diff = d[inside], diff[inside]
        u = diff[:, 3:6] if self._velocity else None
        r = r2[inside].sqrt().clamp_min(1e-12)
        atom_row = torch.full((B * n,), -1, dtype=torch.long)
        atom_row[centre_atoms] = torch.arange(B * s)
        h = (self.r_cut - self.r_min) / (K + 1)
        t = (r - self.r_min) / h
        k0 = torch.floor(t)
        weights = _spline_table(t - k0)
        k0 = k0.long()
        interval = torch.where((k0 >= -2) & (k0 <= K), k0 + 2, K + 3)
        env = _Environments(
            n=n,
            s=s,
            n_configs=B,
            box=box,
            x=atoms,
            centre_atoms=centre_atoms.to(device),
            atom_row=atom_row.to(device),
            row=row,
            centre=centre,
            other=other,
            d=d,
            u=u,
            r=r,
            interval=interval,
            w=weights[:, :4],
            dw=weights[:, 4:] / h,
        )
        env.sums = _PairSums(
            row, interval, env.w, env.dw, B * s, K, sparse=not differentiable
        )
        env.channels = self._channels(env)
        sums = env.sums(env.channels)  # (B * s, K, channels)
        env.radial = sums[:, :, :C]
        env.vectors = sums[:, :, C:] if self.angular else None
        env.own = self._own(env)
        env.scalars = torch.cat(
            [env.radial.transpose(1, 2).reshape(B * s, C * K), env.own], dim=1
        )
        per_centre = [env.scalars, env.scalars.square()]
        if self.angular:
            iu = torch.triu_indices(K, K, device=device)
            products = env.vectors @ env.vectors.transpose(1, 2)
            per_centre.append(products[:, iu[0], iu[1]])
        env.features = torch.cat(per_centre, dim=1).view(B, s, -1).mean(1)
        return env

    def _own(self, env):
        """Own terms (B * s, n_own) of the centres: ``|v|^2`` and extras."""
        atoms = env.x[env.centre_atoms]
        parts = []
        if self._velocity:
            parts.append(atoms[:, 3:6].square().sum(1, keepdim=True))
        if self._n_extra:
            parts.append(atoms[:, self._n_in :])
        if not parts:
            return atoms.new_zeros(len(atoms), 0)
        return torch.cat(parts, dim=1)

    def _channels(self, env):
        """Each pair's channels (n_pairs, channels), which its radial
        weights multiply: 1 (density), the radial velocity, the relative
        speed^2 and the unit vector."""
        channels = [torch.ones_like(env.r)[:, None]]
        rhat = env.d / env.r[:, None]
        if self._velocity:
            u = env.u
            channels += [(rhat * u).sum(1, keepdim=True), (u * u).sum(1, keepdim=True)]
        if self.angular:
            channels.append(rhat)
        return torch.cat(channels, dim=1)

    def _pair_tangents(self, env, t):
        """Directional derivatives of the pairs' distances (n_pairs, r) and
        channels (n_pairs, channels, r) along the tangent ``t``
        (B * n, particle_dim, r) of the states."""
        r = env.r[:, None]
        rhat = env.d / r
        diff = _take(t[:, : self._n_in], env.centre) - _take(
            t[:, : self._n_in], env.other
        )  # (P, n_in, r)
        dd = diff[:, :3]
        dr = (rhat[:, :, None] * dd).sum(1)  # (P, r)
        parts = [torch.zeros_like(dr)[:, None]]
        if self._velocity:
            u = env.u[:, :, None]
            du = diff[:, 3:6]
            rdot = env.channels[:, 1:2]
            drdot = ((dd * u).sum(1) - rdot * dr) / r + (rhat[:, :, None] * du).sum(1)
            parts += [drdot[:, None], 2.0 * (u * du).sum(1, keepdim=True)]
        if self.angular:
            parts.append((dd - rhat[:, :, None] * dr[:, None, :]) / r[:, :, None])
        return dr, torch.cat(parts, dim=1)

    def _pair_jacobian(self, env, pairs):
        """Derivatives (n_pairs, n_in, 4, channels) of the pair terms in the
        pair's displacement (and relative velocity)."""
        w, dw = env.w[pairs], env.dw[pairs]
        r = env.r[pairs]
        rhat = env.d[pairs] / r[:, None]
        radial = rhat[:, :, None]  # (P, 3, 1)
        d_rows = [dw[:, None, :] * radial]  # (P, 3, 4)
        u_rows = []
        if self._velocity:
            u = env.u[pairs]
            rdot = (rhat * u).sum(1)
            s2 = u.square().sum(1)
            across = ((u - rdot[:, None] * rhat) / r[:, None])[:, :, None]
            d_rows += [
                (dw * rdot[:, None])[:, None, :] * radial + w[:, None, :] * across,
                (dw * s2[:, None])[:, None, :] * radial,
            ]
            zero = torch.zeros_like(d_rows[0])
            u_rows = [zero, w[:, None, :] * radial, 2.0 * w[:, None, :] * u[:, :, None]]
        J = torch.stack(d_rows, dim=-1)  # (P, 3, 4, C)
        if u_rows:
            J = torch.cat([J, torch.stack(u_rows, dim=-1)], dim=1)  # (P, 6, 4, C)
        if self.angular:
            # d(w rhat_c)/d d_i = rhat_i rhat_c (w' - w / r) + w delta_ic / r
            outer = rhat[:, :, None] * rhat[:, None, :]  # (P, i, c)
            eye = torch.eye(3, dtype=r.dtype, device=r.device)
            vec = outer[:, :, None, :] * (dw - w / r[:, None])[:, None, :, None]
            vec = vec + (w / r[:, None])[:, None, :, None] * eye[None, :, None, :]
            if self._velocity:
                vec = torch.cat([vec, torch.zeros_like(vec)], dim=1)
            J = torch.cat([J, vec], dim=-1)
        return J


def _scatter_basis(rows, basis, values, n_rows, K):
    """``out[rows[p], basis[p, a]] += values[p, a]`` with ``basis == K``
    dropped: (n_pairs, 4, ...) into (n_rows, K, ...)."""
    tail = values.shape[2:]
    width = int(np.prod(tail)) if tail else 1
    out = values.new_zeros(n_rows * (K + 1), width)
    index = (rows[:, None] * (K + 1) + basis).reshape(-1)
    out.index_add_(0, index, values.reshape(-1, width))
    return out.view(n_rows, K + 1, *tail)[:, :K]


def _scatter_pairs(values, centre, other, n_rows):
    """``out[centre[p]] += values[p]`` and ``out[other[p]] -= values[p]``:
    (n_pairs, ...) into (n_rows, ...). On the CPU one product with the
    SciPy incidence matrix (two entries per pair, pair-major, so built
    without sorting), several times faster than two ``index_add_``;
    elsewhere ``index_add_``."""
    n_pairs, tail = len(values), values.shape[1:]
    if values.device.type != "cpu":
        out = values.new_zeros(n_rows, *tail)
        out.index_add_(0, centre, values)
        return out.index_add_(0, other, values.neg())
    flat = values.reshape(n_pairs, -1).numpy()
    index = torch.stack([centre, other], dim=1).reshape(-1).numpy()
    pointers = np.arange(0, 2 * n_pairs + 1, 2)
    if max(n_rows, 2 * n_pairs) < 2**31 - 1:
        index, pointers = index.astype(np.int32), pointers.astype(np.int32)
    signs = np.tile(np.array([1, -1], dtype=flat.dtype), n_pairs)
    incidence = scipy.sparse.csc_array(
        (signs, index, pointers), shape=(n_rows, n_pairs)
    )
    out = np.ascontiguousarray(incidence @ flat, dtype=flat.dtype)
    return torch.from_numpy(out).view(n_rows, *tail)


class ParticleFeatureJacobian:
    """Jacobians ``F = ds/dx`` (P x N) of a :class:`ParticleSetClosure`'s
    features at a batch of states, kept in the neighbour structure.

    A feature is a mean over the pooled particles ``c`` of a function of
    their descriptors ``S_c``, each a sum of pair terms, so column block
    ``a`` (the particle's ``particle_dim`` coordinates) gathers the terms of
    the pairs that particle ``a`` belongs to, times the derivative of the
    feature in the pooled particle's descriptors, all in closed form:

    * :meth:`columns` at particles ``I``: ``O(|I| * neighbours)``;
    * :meth:`matvec`: exact, O(pooled particles * neighbours);
    * :meth:`gram`: exact (every column) up to ``gram_atoms`` particles;
      above, the unbiased estimate ``sum_a w_a F_a F_a^T`` over
      ``gram_atoms`` particles drawn per state without replacement, with
      ``w_a`` the inverse of their inclusion probability: uniformly among
      all particles, or (when pooled over a subset) half among the pooled
      particles and half among the others, whose columns are smaller;
    * :meth:`rmatvec` (``F^T w`` for r vectors): exact,
      O(pooled particles * neighbours * r).

    Created by :meth:`ParticleSetClosure.feature_jacobian`; parameter-free.

    Attributes
    ----------
    outputs : torch.Tensor of shape (batch, P)
        The features at the states.
    """

    def __init__(self, closure, envs, out=None):
        self.closure = closure
        self.envs = envs
        self._out = out or {}
        self.outputs = self._result(
            torch.cat([env.features for env in envs])
            if envs
            else torch.zeros(0, closure.feature_width)
        )

    def to(self, *args, **kwargs):
        """A view whose results are moved or cast like ``torch.Tensor.to``."""
        probe = torch.empty(0, dtype=self.outputs.dtype, device=self.outputs.device)
        probe = probe.to(*args, **kwargs)
        out = {"dtype": probe.dtype, "device": probe.device}
        return ParticleFeatureJacobian(self.closure, self.envs, out)

    def detach(self):
        """The batch itself: it carries no autograd graph."""
        return self

    def _result(self, t):
        return t.to(**self._out) if self._out else t

    @property
    def _batch(self):
        return sum(env.n_configs for env in self.envs)

    @property
    def _n_features(self):
        return self.envs[0].n * self.closure.particle_dim if self.envs else 0

    def _per_group(self, t):
        """Split a per-row tensor over the groups of environments."""
        return torch.split(t, [env.n_configs for env in self.envs])

    # ------------------------------------------------------------ protocol

    @torch.no_grad()
    def columns(self, index):
        """Selected columns ``F[b, :, index[b]]``.

        Parameters
        ----------
        index : torch.Tensor of shape (batch, m), int64
            Coordinates (in ``range(n_features)``) per state.

        Returns
        -------
        torch.Tensor of shape (batch, P, m)
        """
        index = torch.as_tensor(index)
        B = self._batch
        if index.ndim != 2 or index.shape[0] != B:
            raise ValueError(
                f"index must have shape ({B}, m), got {tuple(index.shape)}"
            )
        dim, P = self.closure.particle_dim, self.closure.feature_width
        out = []
        for env, idx in zip(self.envs, self._per_group(index), strict=True):
            idx = idx.to(env.x.device)
            atoms = (
                idx // dim
                + env.n * torch.arange(env.n_configs, device=idx.device)[:, None]
            )
            unique, inverse = torch.unique(atoms, return_inverse=True)
            blocks = _column_blocks(self.closure, env, unique)  # (U, P, dim)
            picked = blocks[inverse.reshape(-1), :, (idx % dim).reshape(-1)]
            out.append(picked.view(env.n_configs, idx.shape[1], P).transpose(1, 2))
        dtype = self.outputs.dtype if not self.envs else self.envs[0].x.dtype
        return self._result(
            torch.cat(out) if out else torch.zeros(0, P, 0, dtype=dtype)
        )

    @torch.no_grad()
    def gram(self, left=None):
        """``F F^T`` per state, or ``L F F^T L^T`` (see the class notes).

        Parameters
        ----------
        left : torch.Tensor of shape (batch, q, P), optional
            ``L``; its products are formed before the sum over particles,
            which is cheaper when q < P.

        Returns
        -------
        torch.Tensor of shape (batch, P, P) or (batch, q, q)
        """
        closure = self.closure
        parts = []
        lefts = [None] * len(self.envs) if left is None else self._per_group(left)
        for env, L in zip(self.envs, lefts, strict=True):
            atoms, weight = self._gram_atoms(env)
            per_config = atoms.shape[1]
            # Configurations at once whose incidences fit the budget.
            step = max(1, _INCIDENCE_BUDGET // max(1, per_config * _incidences(env)))
            for lo in range(0, env.n_configs, step):
                hi = min(lo + step, env.n_configs)
                flat = atoms[lo:hi].reshape(-1)
                blocks = _column_blocks(closure, env, flat)  # (M, P, dim)
                blocks = blocks * weight[lo:hi].reshape(-1, 1, 1).sqrt()
                blocks = blocks.view(hi - lo, per_config, *blocks.shape[1:])
                flat_cols = blocks.permute(0, 2, 1, 3).reshape(
                    hi - lo, blocks.shape[2], -1
                )
                if L is not None:
                    flat_cols = L[lo:hi] @ flat_cols.to(L.dtype)
                parts.append(flat_cols @ flat_cols.transpose(1, 2))
        if not parts:
            width = closure.feature_width if left is None else left.shape[1]
            return self._result(torch.zeros(0, width, width))
        return self._result(torch.cat(parts))

    @torch.no_grad()
    def matvec(self, v):
        """``F v`` per state.

        Parameters
        ----------
        v : torch.Tensor of shape (batch, N) or (batch, N, r)

        Returns
        -------
        torch.Tensor of shape (batch, P) or (batch, P, r)
        """
        v = torch.as_tensor(v)
        B, N = self._batch, self._n_features
        if v.ndim not in (2, 3) or v.shape[0] != B or v.shape[1] != N:
            raise ValueError(
                f"v must have shape ({B}, {N}) or ({B}, {N}, r), got {tuple(v.shape)}"
            )
        single = v.ndim == 2
        if single:
            v = v[..., None]
        out = [
            _directional(self.closure, env, part.to(env.x))
            for env, part in zip(self.envs, self._per_group(v), strict=True)
        ]
        result = torch.cat(out)
        return self._result(result[..., 0] if single else result)

    @torch.no_grad()
    def rmatvec(self, w):
        """``F^T w`` per state: the gradient in ``x`` of ``w . s(x)``, for
        ``r`` vectors ``w`` at once, in one pass over the pooled particles'
        pairs (O(pooled particles * neighbours * r)).

        Parameters
        ----------
        w : torch.Tensor of shape (batch, P, r)

        Returns
        -------
        torch.Tensor of shape (batch, N, r)
        """
        w = torch.as_tensor(w)
        B, P = self._batch, self.closure.feature_width
        if w.ndim != 3 or w.shape[:2] != (B, P):
            raise ValueError(f"w must have shape ({B}, {P}, r), got {tuple(w.shape)}")
        out = [
            _transposed(self.closure, env, part.to(env.x))
            for env, part in zip(self.envs, self._per_group(w), strict=True)
        ]
        if not out:
            return self._result(torch.zeros(0, 0, w.shape[2]))
        return self._result(torch.cat(out))

    # ----------------------------------------------------------- internals

    def _gram_atoms(self, env):
        """Particles (B, g) whose columns make ``F F^T`` and their weights
        (B, g): every particle with weight 1, or a random draw (see the
        class notes)."""
        closure = self.closure
        B, n, s = env.n_configs, env.n, env.s
        device = env.x.device
        offsets = n * torch.arange(B)[:, None]
        g = closure.gram_atoms
        if g is None or n <= g:
            atoms = torch.arange(n).expand(B, n) + offsets
            return atoms.to(device), torch.ones(B, n, dtype=env.x.dtype, device=device)
        generator = torch.Generator().manual_seed(
            closure.seed * 1_000_003 + 7919 * closure._gram_draws + 1
        )
        closure._gram_draws += 1
        keys = torch.rand(B, n, generator=generator)
        if s == n or g < 2:
            # Every particle alike (one drawn cannot be split between the
            # pooled particles and the others).
            chosen = keys.argsort(dim=1)[:, :g]
            weight = torch.full((B, g), n / g)
        else:
            pooled = torch.zeros(n, dtype=torch.bool)
            pooled[closure.pooled(n)] = True
            # Pooled particles first, each half drawn at random.
            g_in = min(max(g // 2, 1), s)
            g_out = min(g - g_in, n - s)
            order = (keys + 2.0 * (~pooled).float()).argsort(dim=1)
            chosen = torch.cat([order[:, :g_in], order[:, s : s + g_out]], dim=1)
            weight = torch.cat(
                [
                    torch.full((B, g_in), s / g_in),
                    torch.full((B, g_out), (n - s) / max(g_out, 1)),
                ],
                dim=1,
            )
        return (chosen + offsets).to(device), weight.to(env.x)


def _incidences(env):
    """Mean number of (pair, particle) incidences of one particle."""
    pairs = len(env.row) / max(env.n_configs, 1)
    return max(1, round(pairs * (1 + env.s / env.n) / env.n) + 2)


def _column_blocks(closure, env, atoms):
    """Column blocks ``ds / dx_a`` (len(atoms), P, particle_dim) at the
    distinct flat particles ``atoms`` of ``env``."""
    K, C = closure.n_radial, closure._n_channels
    n_in, dim = closure._n_in, closure.particle_dim
    M = len(atoms)
    x = env.x
    slot = torch.full((len(x),), -1, dtype=torch.long, device=x.device)
    slot[atoms] = torch.arange(M, device=x.device)
    as_centre, as_other = slot[env.centre], slot[env.other]
    pairs = torch.nonzero((as_centre >= 0) | (as_other >= 0)).reshape(-1)
    # A pair touches its centre's block with +d(terms)/d(d, u) and its
    # neighbour's with the opposite sign; a pair with both ends selected
    # counts twice.
    first, second = as_centre[pairs], as_other[pairs]
    keep_first, keep_second = first >= 0, second >= 0
    inc_pairs = torch.cat([pairs[keep_first], pairs[keep_second]])
    inc_slot = torch.cat([first[keep_first], second[keep_second]])
    sign = torch.cat(
        [
            torch.ones(int(keep_first.sum()), dtype=x.dtype, device=x.device),
            -torch.ones(int(keep_second.sum()), dtype=x.dtype, device=x.device),
        ]
    )
    J = closure._pair_jacobian(env, inc_pairs) * sign[:, None, None, None]
    rows = env.row[inc_pairs]
    basis = _basis(env.interval[inc_pairs], K)
    scale = 1.0 / env.s
    # d(mean S)/dx and d(mean S^2)/dx = 2 S dS/dx of the pair channels.
    radial = J[..., :C]  # (I, n_in, 4, C)
    padded = torch.cat([env.radial, env.radial.new_zeros(len(env.radial), 1, C)], 1)
    S_at = padded[rows[:, None], basis]  # (I, 4, C)
    first_moment = _scatter_basis(
        inc_slot, basis, radial.permute(0, 2, 3, 1), M, K
    )  # (M, K, C, n_in)
    second_moment = _scatter_basis(
        inc_slot, basis, (2.0 * S_at[:, None] * radial).permute(0, 2, 3, 1), M, K
    )
    blocks = x.new_zeros(M, closure.feature_width, dim)
    n_scalar = closure._n_scalar
    blocks[:, : C * K, :n_in] = first_moment.permute(0, 2, 1, 3).reshape(M, C * K, n_in)
    blocks[:, n_scalar : n_scalar + C * K, :n_in] = second_moment.permute(
        0, 2, 1, 3
    ).reshape(M, C * K, n_in)
    if closure.angular:
        dV = J[..., C:]  # (I, n_in, 4, 3)
        V = env.vectors[rows]  # (I, K, 3)
        T = torch.einsum("iqac,ilc->ialq", dV, V)  # (I, 4, K, n_in)
        delta = _scatter_basis(inc_slot, basis, T, M, K)  # (M, K, K, n_in)
        delta = delta + delta.transpose(1, 2)
        iu = torch.triu_indices(K, K, device=x.device)
        blocks[:, 2 * n_scalar :, :n_in] = delta[:, iu[0], iu[1]]
    # Own terms of the selected particles that are pooled.
    own_row = env.atom_row[atoms]
    pooled = torch.nonzero(own_row >= 0).reshape(-1)
    if len(pooled) and closure._n_own:
        centre_rows = own_row[pooled]
        own = env.own[centre_rows]  # (R, n_own)
        own_blocks = x.new_zeros(len(pooled), closure._n_own, dim)
        col = 0
        if closure._velocity:
            own_blocks[:, 0, 3:6] = 2.0 * x[atoms[pooled], 3:6]
            col = 1
        for e in range(closure._n_extra):
            own_blocks[:, col + e, n_in + e] = 1.0
        first = C * K
        blocks[pooled, first : first + closure._n_own] += own_blocks
        blocks[pooled, n_scalar + first : n_scalar + first + closure._n_own] += (
            2.0 * own[:, :, None] * own_blocks
        )
    return blocks * scale


def _transposed(closure, env, w):
    """``F^T w`` (B, N, r) for cotangents ``w`` (B, P, r) of the group: the
    chain rule of the features run backwards by hand (pooled means, squares
    and products of vector moments, the sparse pair sums, the pair channels,
    and the pairs' two particles)."""
    K, C = closure.n_radial, closure._n_channels
    B, s, n = env.n_configs, env.s, env.n
    r = w.shape[2]
    n_scalar = closure._n_scalar
    w = w / s
    # Cotangents of each pooled particle's descriptors (B s, ., r).
    per_config = torch.repeat_interleave(torch.arange(B, device=w.device), s)
    w_first, w_second = w[:, :n_scalar][per_config], w[:, n_scalar : 2 * n_scalar]
    scalars_bar = w_first + 2.0 * env.scalars[:, :, None] * w_second[per_config]
    radial_bar = scalars_bar[:, : C * K].view(B * s, C, K, r).transpose(1, 2)
    own_bar = scalars_bar[:, C * K :]
    channel_bars = [radial_bar]
    if closure.angular:
        iu = torch.triu_indices(K, K, device=w.device)
        sym = w.new_zeros(B, K, K, r)
        sym[:, iu[0], iu[1]] = w[:, 2 * n_scalar :]
        sym = sym + sym.transpose(1, 2)  # the diagonal counts twice
        vectors = env.vectors.view(B, s, K, 3)
        channel_bars.append(
            torch.einsum("bklr,bslc->bskcr", sym, vectors).reshape(B * s, K, 3, r)
        )
    sums_bar = torch.cat(channel_bars, dim=2)  # (B s, K, channels, r)
    # Through the pair sums: each pair's channels and distance.
    c_bar = env.sums.transpose(sums_bar)  # (pairs, channels, r)
    dist_bar = torch.bmm(
        env.channels[:, None, :], env.sums.transpose(sums_bar, derivative=True)
    )[:, 0]  # (pairs, r)
    # Through the channels [1, (rdot, |u|^2), (rhat)] to d and u:
    # d_bar = rhat a + (rdot_bar u + v_bar) / r with
    # a = dist_bar - (rdot rdot_bar + rhat . v_bar) / r, and
    # u_bar = rdot_bar rhat + 2 speed_bar u; written in place into the
    # pairs' cotangents (pairs, n_in, r).
    inv_r = (1.0 / env.r)[:, None]  # (pairs, 1)
    rhat = env.d * inv_r  # (pairs, 3)
    along = dist_bar
    if closure._velocity:
        rdot_bar, speed_bar = c_bar[:, 1], c_bar[:, 2]  # (pairs, r)
        along = along - env.channels[:, 1:2] * rdot_bar * inv_r
    if closure.angular:
        v_bar = c_bar[:, C:]  # (pairs, 3, r)
        along = along - torch.einsum("pc,pcr->pr", rhat, v_bar) * inv_r
    dim, n_in = closure.particle_dim, closure._n_in
    pair_bar = w.new_empty(len(env.r), n_in, r)
    d_bar = torch.mul(rhat[:, :, None], along[:, None], out=pair_bar[:, :3])
    if closure._velocity:
        u = env.u
        d_bar.addcmul_((u * inv_r)[:, :, None], rdot_bar[:, None])
        u_bar = torch.mul(rhat[:, :, None], rdot_bar[:, None], out=pair_bar[:, 3:6])
        u_bar.addcmul_(u[:, :, None], speed_bar[:, None], value=2.0)
    if closure.angular:
        d_bar.addcmul_(v_bar, inv_r[:, :, None])
    # Each pair's displacement is centre minus neighbour.
    out = _scatter_pairs(pair_bar, env.centre, env.other, B * n)
    if dim > n_in:
        out = torch.cat([out, out.new_zeros(B * n, dim - n_in, r)], dim=1)
    col = 0
    if closure._velocity:
        velocity = env.x[env.centre_atoms, 3:6][:, :, None]
        out[:, 3:6].index_add_(
            0, env.centre_atoms, 2.0 * velocity * own_bar[:, None, 0]
        )
        col = 1
    if closure._n_extra:
        out[:, n_in:].index_add_(0, env.centre_atoms, own_bar[:, col:])
    return out.view(B, n * dim, r)


def _directional(closure, env, v):
    """``F v`` (B, P, r) for tangents ``v`` (B, N, r) of the group."""
    K, C = closure.n_radial, closure._n_channels
    B, s = env.n_configs, env.s
    r = v.shape[2]
    t = v.reshape(B * env.n, closure.particle_dim, r)
    dr, d_channels = closure._pair_tangents(env, t)
    # d(w c) = w' dr c + w dc, summed per centre and radial function.
    d_sums = env.sums(d_channels) + env.sums(
        dr[:, None, :] * env.channels[:, :, None], derivative=True
    )  # (B s, K, channels, r)
    d_radial = d_sums[:, :, :C]  # (B s, K, C, r)
    own_parts = []
    centre_t = t[env.centre_atoms]
    if closure._velocity:
        vel = env.x[env.centre_atoms, 3:6]
        own_parts.append(
            2.0 * (vel[:, :, None] * centre_t[:, 3:6]).sum(1, keepdim=True)
        )
    if closure._n_extra:
        own_parts.append(centre_t[:, closure._n_in :])
    d_scalars = torch.cat(
        [d_radial.permute(0, 2, 1, 3).reshape(B * s, C * K, r), *own_parts], dim=1
    )
    parts = [d_scalars, 2.0 * env.scalars[:, :, None] * d_scalars]
    if closure.angular:
        dV = d_sums[:, :, C:]  # (B s, K, 3, r)
        delta = torch.einsum("akcr,alc->aklr", dV, env.vectors)
        delta = delta + delta.transpose(1, 2)
        iu = torch.triu_indices(K, K, device=v.device)
        parts.append(delta[:, iu[0], iu[1]])
    return torch.cat(parts, dim=1).view(B, s, -1, r).mean(1)


#: Coefficients of the cubic B-spline weights and of their derivatives in
#: the powers (1, t, t^2, t^3) of the position ``t`` in the interval.
_SPLINE = torch.tensor(
    [
        [1 / 6, 2 / 3, 1 / 6, 0.0, -0.5, 0.0, 0.5, 0.0],
        [-0.5, 0.0, 0.5, 0.0, 1.0, -2.0, 1.0, 0.0],
        [0.5, -1.0, 0.5, 0.0, -0.5, 1.5, -1.5, 0.5],
        [-1 / 6, 0.5, -0.5, 1 / 6, 0.0, 0.0, 0.0, 0.0],
    ],
    dtype=torch.float64,
)


def _spline_table(t):
    """Uniform cubic B-spline weights of the basis functions centred at
    ``floor(x) - 1 ... floor(x) + 2`` and their derivatives in ``t``, for
    ``t = x - floor(x)`` (P,): (P, 8), weights first."""
    powers = torch.stack([torch.ones_like(t), t, t * t, t * t * t], dim=1)
    return powers @ _SPLINE.to(t)


def _basis(interval, K):
    """Basis index (P, 4) of each of a pair's four weights from its
    interval (see :class:`_PairSums`); ``K`` where there is none."""
    basis = interval[:, None] - 3 + torch.arange(4, device=interval.device)
    return torch.where((basis >= 0) & (basis < K), basis, K)


class _PairSums:
    """Sums of pair terms ``w_a(r_p) c_p`` per centre and radial function,
    ``out[rows[p], interval[p] - 3 + a] += weight[p, a] * c[p]`` (weights
    of absent radial functions dropped), as a product with a sparse matrix
    of four entries per pair: the pairs' channels ``c`` are never multiplied
    out by their four weights.

    On the CPU the matrix is a SciPy CSC matrix (pair-major, so it is built
    without sorting); elsewhere the products are scattered with
    ``index_add_``.

    Parameters
    ----------
    rows : torch.Tensor of shape (P,), int64
        Centre row of each pair.
    interval : torch.Tensor of shape (P,), int64
        ``floor((r - r_min) / h) + 2`` in ``0 ... K + 2``, or ``K + 3`` for
        a pair none of whose weights falls on a radial function.
    w, dw : torch.Tensor of shape (P, 4)
        The weights and their derivatives in ``r``.
    n_rows, K : int
    sparse : bool, default=True
        Whether to use the SciPy matrix on the CPU (False: ``index_add_``,
        which autograd follows).
    """

    def __init__(self, rows, interval, w, dw, n_rows, K, sparse=True):
        self.n_rows, self.K = n_rows, K
        self.rows, self.interval, self.w, self.dw = rows, interval, w, dw
        self.matrices = None
        if sparse and w.device.type == "cpu":
            basis = _basis(interval, K)
            index = torch.where(basis < K, rows[:, None] * K + basis, n_rows * K)
            index = index.reshape(-1).numpy()
            if n_rows * K < 2**31 - 1:
                index = index.astype(np.int32)
            pointers = np.arange(0, index.size + 1, 4, dtype=index.dtype)
            shape = (n_rows * K + 1, len(w))
            self.matrices = tuple(
                scipy.sparse.csc_array(
                    (data.reshape(-1).numpy(), index, pointers), shape=shape
                )
                for data in (w, dw)
            )

    def transpose(self, values, derivative=False):
        """The adjoint of :meth:`__call__`: per pair, ``sum_a weight[p, a] *
        values[rows[p], interval[p] - 3 + a]``, values (n_rows, K, ...) ->
        (P, ...)."""
        tail = values.shape[2:]
        flat = values.reshape(self.n_rows * self.K, -1)
        if self.matrices is not None:
            padded = np.concatenate(
                [flat.numpy(), np.zeros((1, flat.shape[1]), flat.numpy().dtype)]
            )
            out = self.matrices[int(derivative)].T @ padded
            out = torch.from_numpy(np.ascontiguousarray(out, dtype=padded.dtype))
            return out.view(len(self.w), *tail)
        weight = self.dw if derivative else self.w
        padded = torch.cat([flat, flat.new_zeros(1, flat.shape[1])])
        basis = _basis(self.interval, self.K)
        index = torch.where(
            basis < self.K, self.rows[:, None] * self.K + basis, self.n_rows * self.K
        )
        out = (padded[index] * weight[:, :, None].to(flat)).sum(1)
        return out.view(len(self.w), *tail)

    def __call__(self, values, derivative=False):
        """Sums of ``weight * values`` (with ``dw`` if ``derivative``):
        values (P, ...) -> (n_rows, K, ...)."""
        tail = values.shape[1:]
        flat = values.reshape(len(values), -1)
        if self.matrices is not None:
            out = self.matrices[int(derivative)] @ flat.numpy()
            out = torch.from_numpy(
                np.ascontiguousarray(out[:-1], dtype=flat.numpy().dtype)
            )
            return out.view(self.n_rows, self.K, *tail)
        weight = self.dw if derivative else self.w
        K = self.K
        bins = flat.new_zeros(self.n_rows * (K + 4), 4 * flat.shape[1])
        products = (weight[:, :, None].to(flat) * flat[:, None, :]).reshape(
            len(flat), -1
        )
        bins.index_add_(0, self.rows * (K + 4) + self.interval, products)
        bins = bins.view(self.n_rows, K + 4, 4, *tail)
        return (
            bins[:, 3 : 3 + K, 0]
            + bins[:, 2 : 2 + K, 1]
            + bins[:, 1 : 1 + K, 2]
            + bins[:, 0:K, 3]
        )


def _take(t, index):
    """``t[index]`` along the first dimension; on the CPU through NumPy,
    several times faster for narrow rows."""
    if t.device.type == "cpu":
        index = index.numpy() if isinstance(index, torch.Tensor) else index
        return torch.from_numpy(np.take(t.numpy(), index, axis=0))
    return t[torch.as_tensor(index, device=t.device)]


def _index(t, index):
    """``t[index]`` along the first dimension with torch (autograd follows)."""
    return t[torch.as_tensor(index, device=t.device)]


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
