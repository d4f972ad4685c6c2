"""Neighbour search in a cubic periodic box.

Two searches, each suited to one job:

* :func:`pairs_within` lists every pair closer than a cutoff (``cKDTree``),
  for full forces and the MD engine's Verlet list.
* :func:`batch_pairs_within` does the same for a batch of configurations
  of one size, with indices into the flattened batch.
* :class:`CellList` labels all atoms with their cell once (O(n) integer
  arithmetic, no sort) and then finds the neighbours of a few chosen atoms,
  grouping only the atoms of the cells they need, for partial forces and
  for the local environments of a few atoms (:meth:`CellList.within`).

Positions passed in may be unwrapped (outside the box): :func:`pairs_within`
wraps them, :class:`CellList` takes cell indices modulo the box.
Displacements follow the minimum-image convention, which is exact as long
as the cutoff is below half the box side.
"""

import itertools

import numpy as np
from scipy.spatial import cKDTree

__all__ = [
    "cubic_box_side",
    "wrap",
    "minimum_image",
    "pairs_within",
    "batch_pairs_within",
    "CellList",
]

_REACH = 2


def cubic_box_side(n_particles, *, density=None, box=None, cutoff=None):
    """Side of the cubic periodic box of a state of ``n_particles``: ``box``
    when given, else ``(n_particles / density)**(1/3)``.

    Parameters
    ----------
    n_particles : int
    density : float, optional
        Number density; used when ``box`` is None.
    box : float, optional
        Fixed side.
    cutoff : float, optional
        The longest distance searched: the side must then exceed twice it,
        or the minimum-image convention would miss pairs.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``cutoff`` is given and the side is not above ``2 * cutoff``.
    """
    side = float(box) if box is not None else float(n_particles / density) ** (1 / 3)
    if cutoff is not None and not side > 2 * cutoff:
        given = f"box={box!r}" if box is not None else f"density={density!r}"
        raise ValueError(
            f"the box side {side:.4g} of a state of {n_particles} particles "
            f"({given}) must exceed 2*r_cut = {2 * cutoff:.4g} for the "
            "minimum-image convention"
        )
    return side


def wrap(positions, box):
    """Map positions into ``[0, box)``.

    Parameters
    ----------
    positions : ndarray of shape (..., 3)
    box : float
        Side of the cubic periodic box.

    Returns
    -------
    ndarray of shape (..., 3)
    """
    wrapped = np.mod(positions, box)
    # mod of a tiny negative number rounds up to exactly `box`, which
    # cKDTree(boxsize=box) rejects and which would fall outside the last cell.
    return np.where(wrapped >= box, wrapped - box, wrapped)


def minimum_image(displacements, box):
    """Shortest periodic image of displacement vectors.

    Parameters
    ----------
    displacements : ndarray of shape (..., 3)
    box : float

    Returns
    -------
    ndarray of shape (..., 3)
    """
    return displacements - box * np.rint(displacements / box)


def pairs_within(positions, box, cutoff):
    """All pairs ``i < j`` whose minimum-image distance is at most ``cutoff``.

    Parameters
    ----------
    positions : ndarray of shape (n, 3)
    box : float
    cutoff : float
        Must be below ``box / 2`` for the minimum image to be unique.

    Returns
    -------
    i, j : ndarray of int, shape (n_pairs,)
    """
    tree = cKDTree(wrap(positions, box), boxsize=box)
    pairs = tree.query_pairs(cutoff, output_type="ndarray")
    return pairs[:, 0], pairs[:, 1]


def batch_pairs_within(positions, box, cutoff):
    """:func:`pairs_within` for every configuration of a batch.

    One periodic k-d tree per configuration; the neighbour list of each is
    built from scratch (nothing is cached between calls).

    Parameters
    ----------
    positions : ndarray of shape (n_configurations, n, 3)
        Positions, wrapped or not.
    box : float
        Side of the cubic periodic box, the same for every configuration.
    cutoff : float
        Must be below ``box / 2``.

    Returns
    -------
    i, j : ndarray of int64, shape (n_pairs,)
        Pairs ``i < j`` within ``cutoff`` of one configuration, as indices
        into the flattened batch: atom ``a`` of configuration ``b`` is
        ``b * n + a``. Pairs are grouped by configuration, in order.
    """
    positions = np.asarray(positions)
    if positions.ndim != 3 or positions.shape[2] != 3:
        raise ValueError(
            f"positions must have shape (n_configurations, n, 3), got {positions.shape}"
        )
    n = positions.shape[1]
    first, second = [], []
    for b, r in enumerate(positions):
        i, j = pairs_within(r, box, cutoff)
        first.append(i.astype(np.int64) + b * n)
        second.append(j.astype(np.int64) + b * n)
    if not first:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(first), np.concatenate(second)


class CellList:
    """Atoms labelled by cubic cells whose side is at least ``cutoff / 2``.

    Every atom within ``cutoff`` of a query point lies in the 5x5x5 block of
    cells around it. Labelling costs one O(n) pass of integer arithmetic
    and no sort; a query then groups only the atoms of the cells it needs,
    about ``(5/2)**3 * density * cutoff**3`` candidates per query atom
    whatever the number of atoms.

    Parameters
    ----------
    positions : ndarray of shape (n, 3)
        Atom positions, wrapped or not.
    box : float
        Side of the cubic periodic box.
    cutoff : float
        Largest distance that :meth:`candidates` must cover.

    Attributes
    ----------
    positions : ndarray of shape (n, 3)
        The positions as given: displacements between them are meant for
        :func:`minimum_image`, which makes wrapping unnecessary.
    box : float
    cutoff : float
    """

    def __init__(self, positions, box, cutoff):
        self.box = float(box)
        self.cutoff = float(cutoff)
        self.positions = positions
        # Cells of side >= cutoff / _REACH, so neighbours lie within _REACH
        # cells. Half-cutoff cells fit the box more tightly than cutoff-sized
        # ones (a box of 9.999... sigma holds 7 cells of 1.43 sigma, but only 3,
        # not 4, of 2.5 sigma), which keeps the candidates few.
        self._n_side = max(int(_REACH * self.box // cutoff), 1)
        # With too few cells a side the block around a cell would wrap onto
        # itself; visiting every cell once is then both correct and cheap.
        if self._n_side > 2 * _REACH:
            span = range(-_REACH, _REACH + 1)
        else:
            span = range(self._n_side)
        self._offsets = np.array(list(itertools.product(span, repeat=3)))
        # The smallest unsigned type that holds the labels: NumPy's stable
        # sort of 8- and 16-bit integers is a radix sort, 10x faster.
        self._cells = self._flat_cells(self._cell_coords(positions)).astype(
            np.min_scalar_type(self._n_side**3 - 1)
        )

    def _cell_coords(self, positions):
        # The integer modulo wraps unwrapped positions into the box.
        return np.floor(positions * (self._n_side / self.box)).astype(np.intp) % (
            self._n_side
        )

    def _flat_cells(self, coords):
        return (coords[..., 0] * self._n_side + coords[..., 1]) * self._n_side + (
            coords[..., 2]
        )

    def candidates(self, atoms):
        """Atoms sharing a cell block with each query atom, itself included.

        Parameters
        ----------
        atoms : ndarray of int, shape (k,)
            Indices of the query atoms (repeats allowed).

        Returns
        -------
        query : ndarray of int, shape (n_candidates,)
            Row in ``atoms`` of each candidate pair.
        neighbour : ndarray of int, shape (n_candidates,)
            Index of the candidate atom.
        """
        n_cells = self._n_side**3
        coords = self._cell_coords(self.positions[atoms])
        block = self._flat_cells((coords[:, None, :] + self._offsets) % self._n_side)
        # Group by cell only the atoms of the cells some query needs.
        needed = np.zeros(n_cells, dtype=bool)
        needed[block] = True
        members = np.flatnonzero(needed[self._cells])
        member_cells = self._cells[members]
        members = members[np.argsort(member_cells, kind="stable")]
        counts_per_cell = np.bincount(member_cells, minlength=n_cells)
        starts_per_cell = np.cumsum(counts_per_cell) - counts_per_cell
        counts = counts_per_cell[block].ravel()
        starts = starts_per_cell[block].ravel()
        # Concatenate the ranges starts[c]:starts[c]+counts[c] without a loop:
        # each entry is its range start plus its offset within the range.
        total = counts.sum()
        first = np.cumsum(counts) - counts
        slots = np.arange(total) + np.repeat(starts - first, counts)
        query = np.repeat(
            np.arange(len(atoms)),
            counts.reshape(len(atoms), len(self._offsets)).sum(axis=1),
        )
        return query, members[slots]

    def within(self, atoms):
        """Neighbours of each query atom within ``cutoff`` (minimum image).

        Parameters
        ----------
        atoms : ndarray of int, shape (k,)
            Indices of the query atoms (repeats allowed).

        Returns
        -------
        query : ndarray of int, shape (n_pairs,)
            Row in ``atoms`` of each pair.
        neighbour : ndarray of int, shape (n_pairs,)
            Index of an atom other than ``atoms[query]`` whose minimum-image
            distance to it is at most ``cutoff``.
        """
        atoms = np.asarray(atoms, dtype=np.intp)
        query, neighbour = self.candidates(atoms)
        own = atoms[query]
        d = minimum_image(self.positions[own] - self.positions[neighbour], self.box)
        keep = (np.einsum("pk,pk->p", d, d) <= self.cutoff**2) & (neighbour != own)
        return query[keep], neighbour[keep]
