"""Partial forces in every accepted form (dense with NaN, sparse CSR, with a
mask and inclusion probabilities), read chunk by chunk as forces with zeros
where not computed and Horvitz-Thompson weights ``1/pi`` where computed."""

import warnings

import numpy as np
import scipy.sparse as sp

from ._arrays import take_rows
from ._chunking import index_chunks, row_chunks
from ._validation import check_p

__all__ = ["PartialForces"]


class PartialForces:
    """Validated partial forces with their mask and inclusion probabilities.

    Parameters
    ----------
    F : array-like or scipy sparse matrix/array of shape (n_samples, N)
        Dense (in memory or any array with row slicing, read in chunks): NaN
        where not computed. Sparse (any format, read as CSR): stored entries
        are the computed ones, explicit zeros included.
    n_features : int
        Expected N.
    mask : array-like of bool, shape (n_samples, n) or (n_samples, N), optional
        Which particles / coordinates were computed; overrides the mask
        inferred from ``F``. With a particle-level mask, each particle owns
        ``N // n`` consecutive coordinates.
    inclusion_proba : float or array-like of shape (n,), (N,), (n_samples, n)
        or (n_samples, N), optional
        Probability that each particle was computed. Defaults to ``p``.
    p : float, optional
        Uniform inclusion probability; inferred as the observed fraction when
        neither ``p`` nor ``inclusion_proba`` is given (exact for
        Algorithm 1, which computes round(n p) particles per configuration).

    Attributes
    ----------
    n_samples : int
    p : float
        The uniform inclusion probability used (None with ``inclusion_proba``).
    """

    def __init__(self, F, n_features, mask=None, inclusion_proba=None, p=None):
        if F is None:
            raise TypeError(
                "F, the partial forces (NaN where not computed), is required, got None"
            )
        if sp.issparse(F):
            F = F.tocsr()
            if not F.has_canonical_format:
                # Duplicate entries of one coordinate are one force, their
                # sum (SciPy's reading): merge them, explicit zeros kept.
                F = F.copy()
                F.sum_duplicates()
        else:
            if not hasattr(F, "shape") or hasattr(F, "iloc"):  # or a DataFrame
                F = np.asarray(F)
            if np.dtype(F.dtype).kind not in "fiu":
                raise TypeError(f"F must be a numeric array, got dtype {F.dtype}")
        if len(F.shape) != 2 or F.shape[1] != n_features:
            raise ValueError(
                f"F must have shape (n_samples, {n_features}), got {F.shape}"
            )
        self.F = F
        self.n_samples = F.shape[0]
        self.n_features = n_features
        self.mask = None if mask is None else self._check_expandable(mask, "mask")
        if self.mask is not None and self.mask.dtype != bool:
            raise TypeError(f"mask must be boolean, got dtype {self.mask.dtype}")
        self.inclusion_proba = None
        if inclusion_proba is not None:
            proba = np.asarray(inclusion_proba, dtype=np.float64)
            if proba.ndim == 0:
                p, proba = float(proba), None
            else:
                proba = self._check_expandable(proba, "inclusion_proba", per_row=False)
                if not np.all((proba > 0) & (proba <= 1)):
                    raise ValueError("inclusion_proba must lie in (0, 1]")
            self.inclusion_proba = proba
        if p is not None:
            p = check_p(p)
        self.p = None
        if self.inclusion_proba is None and p is not None:
            self.p = float(p)
        if self.inclusion_proba is not None or p is not None:
            # Without counting the computed entries of a dense F (a pass over
            # it), what the mask or the sparse structure tells for free.
            if self.mask is not None:
                self._check_something_computed(self.mask.any())
            elif sp.issparse(F):
                self._check_something_computed(F.nnz)
        else:
            counts = self._observed_counts()
            self._check_something_computed(counts.any())
            size = self.n_samples * n_features
            self.p = float(counts.sum() / size) if size else float("nan")
            self._warn_if_some_always_observed(counts)

    def _check_something_computed(self, any_computed):
        if self.n_samples and not any_computed:
            raise ValueError(
                "F has no computed force: every entry is NaN, none is stored "
                "(sparse F) or mask is all False"
            )

    def _check_expandable(self, a, name, per_row=True):
        a = np.asarray(a)
        if a.ndim == 1 and not per_row:
            width = a.shape[0]
        elif a.ndim == 2 and a.shape[0] == self.n_samples:
            width = a.shape[1]
        else:
            rows = "(n_samples, n) or (n_samples, N)"
            shapes = rows if per_row else f"(n,), (N,), {rows}"
            raise ValueError(
                f"{name} must have shape {shapes} with n_samples={self.n_samples}, "
                f"got {a.shape}"
            )
        if width == 0 or self.n_features % width:
            raise ValueError(
                f"{name} has {width} columns, which does not divide the "
                f"{self.n_features} coordinates into particles"
            )
        return a

    def _observed_counts(self):
        """How many configurations computed each coordinate."""
        if self.mask is not None:
            counts = self.mask.sum(axis=0)
            return self._expand(counts[None], self.n_features)[0]
        if sp.issparse(self.F):
            return np.bincount(self.F.indices, minlength=self.n_features)
        return sum(
            (
                np.count_nonzero(~np.isnan(self._dense(rows)), axis=0)
                for rows in row_chunks(self.n_samples, self.n_features)
            ),
            np.zeros(self.n_features, dtype=np.intp),
        )

    def _warn_if_some_always_observed(self, counts):
        """Uniform p inferred, yet more coordinates computed in every
        configuration than that p explains: most likely free coordinates
        whose inclusion probability is 1, which the inferred p would weight
        as 1/p.

        At a uniform p each of the N coordinates is computed in all K
        configurations with probability p**K, so about ``N p**K`` (a
        binomial count) are; five standard deviations more is implausible.
        Nearly complete data (p close to 1) expects many and stays silent.
        """
        if not 0 < self.p < 1:
            return
        always = np.flatnonzero(counts == self.n_samples)
        expected = self.n_features * self.p**self.n_samples
        if len(always) <= expected + 5 * np.sqrt(expected) + 1:
            return
        warnings.warn(
            f"{len(always)} coordinates (first: {always[:5].tolist()}) were "
            f"computed in all {self.n_samples} configurations, which is "
            f"implausible if each had the inferred inclusion probability "
            f"p = {self.p:.4g}. If they are always observed (free "
            "coordinates), pass their probabilities as inclusion_proba, e.g. "
            "from sample_partial_forces(..., free_coordinates=True, "
            "return_inclusion_proba=True); otherwise the loss is biased.",
            UserWarning,
            stacklevel=4,
        )

    @staticmethod
    def _expand(a, n_features):
        """Repeat particle-level columns over their coordinates."""
        return np.repeat(a, n_features // a.shape[-1], axis=-1)

    def _dense(self, rows):
        """Rows of a dense ``F`` (anywhere) as float64, NaN kept."""
        return take_rows(self.F, rows, dtype=np.float64, name="F", check_finite=False)

    def chunk(self, rows):
        """Forces and weights of a block of rows.

        Parameters
        ----------
        rows : slice or ndarray of int

        Returns
        -------
        f : ndarray of shape (chunk, N), float64
            Computed forces, 0 elsewhere.
        w : ndarray of shape (chunk, N), float64
            ``1 / pi`` on computed coordinates, 0 elsewhere.
        """
        if sp.issparse(self.F):
            block = self.F[rows]
            f = block.toarray().astype(np.float64)
            observed = np.zeros(f.shape, dtype=bool)
            counts = np.diff(block.indptr)
            observed[np.repeat(np.arange(block.shape[0]), counts), block.indices] = True
        else:
            f = self._dense(rows)
            observed = ~np.isnan(f)
        if self.mask is not None:
            given = self._expand(self.mask[rows], self.n_features)
            if np.any(given & ~observed):
                raise ValueError(
                    "mask marks coordinates as computed where F has no value "
                    "(NaN or not stored)"
                )
            observed = given
        f = np.where(observed, f, 0.0)
        if not np.all(np.isfinite(f)):
            raise ValueError("F contains inf, or NaN at computed coordinates")
        if self.inclusion_proba is None:
            proba = self.p
        else:
            proba = self.inclusion_proba
            proba = self._expand(
                proba if proba.ndim == 1 else proba[rows], self.n_features
            )
        return f, np.where(observed, 1.0 / proba, 0.0)

    def observed_chunk(self, rows):
        """The computed entries of a block of rows, padded to a common count.

        Parameters
        ----------
        rows : slice or ndarray of int

        Returns
        -------
        index : ndarray of shape (chunk, m), int64
            Computed coordinates of each row (``m`` the largest count in the
            chunk); padding repeats coordinate 0 with weight 0.
        f : ndarray of shape (chunk, m), float64
            Their forces, 0 on padding.
        w : ndarray of shape (chunk, m), float64
            Their weights ``1 / pi``, 0 on padding.
        """
        if sp.issparse(self.F) and self.mask is None:
            # Straight from the stored entries, without a dense (chunk, N) copy.
            block = self.F[rows]
            counts = np.diff(block.indptr)
            row = np.repeat(np.arange(block.shape[0]), counts)
            col, values = block.indices, block.data.astype(np.float64)
            if not np.all(np.isfinite(values)):
                raise ValueError("F contains inf, or NaN at computed coordinates")
            if self.inclusion_proba is None:
                weights = np.full(len(col), 1.0 / self.p)
            else:
                proba = self.inclusion_proba
                width = proba.shape[-1]
                particle = col // (self.n_features // width)
                if proba.ndim == 1:
                    weights = 1.0 / proba[particle]
                else:
                    row_ids = np.arange(self.n_samples)[rows]
                    weights = 1.0 / proba[row_ids[row], particle]
        else:
            f_dense, w_dense = self.chunk(rows)
            row, col = np.nonzero(w_dense)
            counts = np.bincount(row, minlength=len(w_dense))
            values, weights = f_dense[row, col], w_dense[row, col]
        position = np.arange(len(row)) - np.repeat(np.cumsum(counts) - counts, counts)
        shape = (len(counts), max(int(counts.max(initial=0)), 1))
        index = np.zeros(shape, dtype=np.int64)
        f, w = np.zeros(shape), np.zeros(shape)
        index[row, position] = col
        f[row, position] = values
        w[row, position] = weights
        return index, f, w

    def computed_csr(self, rows=None, dtype=np.float64):
        """The computed forces of a selection of rows as a CSR array whose
        stored entries are the computed ones (explicit zeros included), read
        chunk by chunk.

        Parameters
        ----------
        rows : slice, ndarray of int or None, default=None
            None: every row.
        dtype : numpy dtype, default=np.float64
            Of the stored forces (each chunk is cast before the chunks are
            stacked).

        Returns
        -------
        scipy.sparse.csr_array of shape (n_rows, N)
        """
        if rows is None:
            rows = slice(0, self.n_samples)
        blocks = []
        for chunk in index_chunks(rows, self.n_features):
            index, f, w = self.observed_chunk(chunk)
            computed = w > 0
            indptr = np.r_[0, np.cumsum(computed.sum(axis=1))]
            blocks.append(
                sp.csr_array(
                    (f[computed].astype(dtype), index[computed], indptr),
                    shape=(len(computed), self.n_features),
                )
            )
        if not blocks:  # no rows selected
            return sp.csr_array((0, self.n_features), dtype=dtype)
        return sp.vstack(blocks, format="csr")

    def is_complete(self):
        """Whether every coordinate of every configuration was computed."""
        if self.mask is not None:
            return bool(self.mask.all())
        if sp.issparse(self.F):
            return self.F.nnz == self.n_samples * self.n_features
        return not any(
            np.isnan(self._dense(rows)).any()
            for rows in row_chunks(self.n_samples, self.n_features)
        )
