"""Molecular dynamics of the Lennard-Jones pair interaction in a cubic
periodic box: the pair potential, forces of all or of some atoms, a Verlet
neighbour list and the velocity-Verlet integrator (the embedded engine of
:class:`~skmacro.systems.LennardJones`)."""

from dataclasses import dataclass

import numpy as np

from .neighbours import minimum_image, pairs_within

__all__ = [
    "LennardJonesPair",
    "VerletList",
    "pair_forces_energy",
    "partial_pair_forces",
    "sum_pairs",
    "velocity_verlet",
]

# Verlet-list skin in units of sigma, LAMMPS's default for `units lj`.
_SKIN = 0.3


@dataclass(frozen=True)
class LennardJonesPair:
    """Truncated and shifted Lennard-Jones pair interaction (paper Eq. 17)."""

    epsilon: float
    sigma: float
    r_cut: float

    @property
    def shift(self):
        """The unshifted pair energy at the cutoff, subtracted inside it."""
        ratio6 = (self.sigma / self.r_cut) ** 6
        return 4.0 * self.epsilon * (ratio6 * ratio6 - ratio6)

    def terms(self, d, shifted=True):
        """Force on the first atom of each pair and the pair energies.

        Parameters
        ----------
        d : ndarray of shape (n_pairs, 3)
            Displacements ``r_i - r_j``.
        shifted : bool, default=True
            Energies of the shifted potential, or (False) of the plain
            truncated one (LAMMPS ``lj/cut`` without ``pair_modify shift``);
            the forces are the same.

        Returns
        -------
        forces : ndarray of shape (n_pairs, 3)
        energies : ndarray of shape (n_pairs,)
        """
        r2 = np.einsum("pk,pk->p", d, d)
        inside = r2 < self.r_cut**2
        s6 = np.where(inside, (self.sigma**2 / r2) ** 3, 0.0)
        offset = self.shift if shifted else 0.0
        energies = np.where(inside, 4.0 * self.epsilon * (s6 * s6 - s6) - offset, 0.0)
        scale = 24.0 * self.epsilon * (2.0 * s6 * s6 - s6) / r2
        return scale[:, None] * d, energies


def sum_pairs(i, j, pair_forces, n):
    """Newton's third law: add each pair force to atom i and subtract it from j."""
    return np.stack(
        [
            np.bincount(i, pair_forces[:, k], n) - np.bincount(j, pair_forces[:, k], n)
            for k in range(3)
        ],
        axis=1,
    )


def pair_forces_energy(positions, box, potential):
    """Forces and potential energy of one configuration, from scratch.

    Parameters
    ----------
    positions : ndarray of shape (n, 3)
    box : float
        Side of the cubic periodic box.
    potential : LennardJonesPair

    Returns
    -------
    forces : ndarray of shape (n, 3)
    energy : float
    """
    i, j = pairs_within(positions, box, potential.r_cut)
    pair_forces, energies = potential.terms(
        minimum_image(positions[i] - positions[j], box)
    )
    return sum_pairs(i, j, pair_forces, len(positions)), energies.sum()


class VerletList:
    """Pairs within ``r_cut + skin``, rebuilt once an atom moved ``skin / 2``.

    Positions are unwrapped, so the periodic image of each pair is fixed at
    build time and stays right until the next build.
    """

    def __init__(self, box, potential):
        self.box = box
        self.potential = potential
        # The pair images stay unique only while r_cut + skin < box / 2.
        self.skin = min(_SKIN * potential.sigma, 0.5 * (box / 2 - potential.r_cut))
        self._reference = None

    def _build(self, positions):
        self._i, self._j = pairs_within(
            positions, self.box, self.potential.r_cut + self.skin
        )
        d = positions[self._i] - positions[self._j]
        self._images = d - minimum_image(d, self.box)
        self._reference = positions.copy()

    def forces_energy(self, positions, shifted=True):
        """Forces (n, 3) and potential energy at ``positions`` (n, 3).

        ``shifted`` as in :meth:`LennardJonesPair.terms`.
        """
        if (
            self._reference is None
            or np.max(np.sum((positions - self._reference) ** 2, axis=1))
            > (self.skin / 2) ** 2
        ):
            self._build(positions)
        d = positions[self._i] - positions[self._j] - self._images
        pair_forces, energies = self.potential.terms(d, shifted)
        return sum_pairs(self._i, self._j, pair_forces, len(positions)), energies.sum()


def velocity_verlet(positions, velocities, box, potential, mass, dt, n_steps, stride):
    """NVE velocity Verlet with a Verlet neighbour list.

    Parameters
    ----------
    positions, velocities : ndarray of shape (n, 3)
        Initial state (positions unwrapped or not; they stay unwrapped).
    box : float
    potential : LennardJonesPair
    mass : float
    dt : float
    n_steps, stride : int
        Steps, and every how many a state is kept.

    Returns
    -------
    ndarray of shape (n_steps // stride + 1, n, 6)
        Positions then velocities of each kept state, the initial one first.
    """
    neighbours = VerletList(box, potential)
    x, v = positions.copy(), velocities.copy()
    a = neighbours.forces_energy(x)[0] / mass
    states = [np.concatenate([x, v], axis=1)]
    for step in range(1, (n_steps // stride) * stride + 1):
        v += 0.5 * dt * a
        x += dt * v
        a = neighbours.forces_energy(x)[0] / mass
        v += 0.5 * dt * a
        if step % stride == 0:
            states.append(np.concatenate([x, v], axis=1))
    return np.stack(states)


def partial_pair_forces(cells, atoms, potential):
    """Forces on some atoms only, from a cell list of all of them: the cost
    grows with the atoms asked for, not with their total number.

    Parameters
    ----------
    cells : CellList
        Of every atom's positions.
    atoms : ndarray of int, shape (k,)
        The atoms whose forces are wanted (repeats allowed).
    potential : LennardJonesPair

    Returns
    -------
    ndarray of shape (k, 3)
    """
    query, neighbour = cells.candidates(atoms)
    own = atoms[query]
    d = minimum_image(cells.positions[own] - cells.positions[neighbour], cells.box)
    # Most candidates lie outside the cutoff: drop them (and the atom itself)
    # before the costly powers.
    inside = (np.einsum("pk,pk->p", d, d) < potential.r_cut**2) & (neighbour != own)
    pair_forces, _ = potential.terms(d[inside])
    return np.stack(
        [np.bincount(query[inside], pair_forces[:, k], len(atoms)) for k in range(3)],
        axis=1,
    )
