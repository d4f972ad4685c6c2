"""Neighbour search in a cubic periodic box.

Two searches, each suited to one job:

* :func:`pairs_within` lists every pair closer than a cutoff (``cKDTree``),
  for full forces and the MD engine's Verlet list.
* :class:`CellList` bins all atoms once (O(n) arithmetic and one integer
  sort) and then finds the neighbours of a few chosen atoms at a cost that
  depends on their number only, for partial forces.

Positions passed in may be unwrapped (outside the box); both searches wrap
them first. Displacements returned follow the minimum-image convention, which
is exact as long as the cutoff is below half the box side.
"""

import itertools

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["wrap", "minimum_image", "pairs_within", "CellList"]

_REACH = 2


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


class CellList:
    """Atoms binned into cubic cells whose side is at least ``cutoff / 2``.

    Every atom within ``cutoff`` of a query point lies in the 5x5x5 block of
    cells around it, so a query inspects about ``(5/2)**3 * density *
    cutoff**3`` candidates whatever the number of atoms.

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
        The positions wrapped into ``[0, box)``.
    """

    def __init__(self, positions, box, cutoff):
        self.box = float(box)
        self.positions = wrap(positions, self.box)
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
        cells = self._flat_cells(self._cell_coords(self.positions))
        self._order = np.argsort(cells, kind="stable")
        self._counts = np.bincount(cells, minlength=self._n_side**3)
        self._starts = np.cumsum(self._counts) - self._counts

    def _cell_coords(self, wrapped):
        coords = (wrapped * (self._n_side / self.box)).astype(np.intp)
        # Rounding can put a coordinate just below `box` into cell n_side.
        return np.minimum(coords, self._n_side - 1)

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
        coords = self._cell_coords(self.positions[atoms])
        block = self._flat_cells((coords[:, None, :] + self._offsets) % self._n_side)
        counts = self._counts[block].ravel()
        starts = self._starts[block].ravel()
        # Concatenate the ranges starts[c]:starts[c]+counts[c] without a loop:
        # each entry is its range start plus its offset within the range.
        total = counts.sum()
        first = np.cumsum(counts) - counts
        slots = np.arange(total) + np.repeat(starts - first, counts)
        query = np.repeat(
            np.arange(len(atoms)),
            counts.reshape(len(atoms), len(self._offsets)).sum(axis=1),
        )
        return query, self._order[slots]
