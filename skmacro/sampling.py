"""Which particles get forces: Algorithm 1 of the paper (data generation).

For every configuration a fixed number ``round(n * p)`` of the ``n``
particles is chosen uniformly without replacement, so each particle is
included with probability ``p``; only their forces are computed. The result
is either a dense array with NaN where no force was computed or a sparse CSR
array whose stored entries are exactly the computed coordinates.
"""

import numbers

import numpy as np
import scipy.sparse as sp
from sklearn.utils import check_random_state
from tqdm.auto import tqdm

from ._arrays import n_rows, take_rows
from ._chunking import SAMPLING_BUDGET, evenly_spaced
from ._validation import check_choice, check_p
from .storage import PartialForceStore

__all__ = ["sample_partial_forces", "observed_mask", "densify"]

FORMATS = ("dense", "sparse")


def _particle_count(p, n_particles):
    """Validate ``p`` and return the number ``k = round(n * p)`` of particles."""
    k = round(n_particles * check_p(p))
    if k == 0:
        raise ValueError(
            f"p={p!r} selects round({n_particles} * p) = 0 particles; use "
            f"p >= 1/{n_particles} = {1 / n_particles:.6g}"
        )
    return k


def _check_2d(F):
    if F.ndim != 2:
        raise ValueError(f"F must be 2-D (n_samples, n_features), got {F.shape}")


def sample_partial_forces(
    system,
    X,
    p,
    random_state=None,
    format="dense",
    return_mask=False,
    free_coordinates=False,
    return_inclusion_proba=False,
    out=None,
    verbose=False,
):
    """Compute forces on a random subset of particles (Algorithm 1).

    For each configuration, exactly ``k = round(n * p)`` of the
    ``n = system.n_particles`` particles (Python rounding, ties to even) are
    drawn uniformly without replacement, so every particle is included with
    probability ``k / n`` (``= p`` whenever ``n * p`` is a whole number), and
    their forces are computed with ``system.partial_forces``; the other
    forces are never evaluated.

    Beyond the paper, ``free_coordinates=True`` also records, for every
    particle, the coordinates whose derivative the state already holds
    (``system.free_coordinates``: a Lennard-Jones atom's ``dr/dt = v``), at
    no force cost. They are observed with inclusion probability 1 and the
    sampled particles' other coordinates with ``k / n``; fit with those
    probabilities (``return_inclusion_proba=True``) and the loss stays an
    unbiased estimate of ``L_x``.

    Parameters
    ----------
    system : System
        The microscopic system (see :class:`skmacro.systems.System`).
    X : array-like of shape (n_samples, n_features)
        Configurations, one a row.
    p : float in (0, 1]
        Inclusion probability of each particle.
    random_state : int, RandomState instance or None, default=None
        Seeds the choice of particles (the same seed chooses the same
        particles with or without ``free_coordinates``).
    format : {"dense", "sparse"}, default="dense"
        ``"dense"``: float64 ndarray with NaN where no force was computed.
        ``"sparse"``: :class:`scipy.sparse.csr_array` with sorted indices
        whose stored entries are exactly the computed coordinates (a computed
        force equal to zero is stored explicitly).
    return_mask : bool, default=False
        Also return which particles (or, with ``free_coordinates``, which
        coordinates) were computed.
    free_coordinates : bool, default=False
        Also record every particle's ``system.free_coordinates`` (from
        ``system.free_forces``). A ``ValueError`` if the system has none.
    return_inclusion_proba : bool, default=False
        Also return each coordinate's inclusion probability, for
        ``PartialForceDynamics.fit(..., inclusion_proba=...)``. Needed with
        ``free_coordinates``: without it the estimator would take the
        observed fraction of coordinates as the probability of every one.
    out : str, path or zarr group, optional
        Write the forces into a resumable store as they are computed, block
        by block (:class:`skmacro.storage.PartialForceStore`; needs
        ``format="sparse"`` and an integer ``random_state``): a killed run
        resumes with the same call, recomputing only the unfinished blocks.
    verbose : bool, default=False
        Show a progress bar over blocks of configurations.

    Returns
    -------
    F : ndarray or scipy.sparse.csr_array of shape (n_samples, n_features)
        Partial forces.
    mask : ndarray of bool, shape (n_samples, n_particles) or (n_samples, n_features)
        Only when ``return_mask=True``: ``mask[s, i]`` is True where the force
        on particle ``i`` of configuration ``s`` was computed; per coordinate
        (``n_features`` columns) with ``free_coordinates``.
    inclusion_proba : ndarray of shape (n_features,)
        Only when ``return_inclusion_proba=True``: ``k / n``, and 1 on the
        free coordinates when they were recorded.

    Examples
    --------
    >>> import numpy as np
    >>> from skmacro.systems.predator_prey import PredatorPrey
    >>> system = PredatorPrey()
    >>> X = system.sample_initial(4, random_state=0)
    >>> F = sample_partial_forces(system, X, p=0.2, random_state=0)
    >>> (~np.isnan(F)).sum(axis=1)
    array([20, 20, 20, 20])
    >>> sample_partial_forces(system, X, p=0.2, format="sparse").nnz
    80

    Every Lennard-Jones atom's ``dr/dt = v``, and the forces on 4 of 64 atoms:

    >>> from skmacro.systems import LennardJones
    >>> lj = LennardJones(n_atoms=64, density=0.3, engine="numpy")
    >>> F, proba = sample_partial_forces(
    ...     lj, lj.sample_initial(2, random_state=0), p=1 / 16,
    ...     free_coordinates=True, return_inclusion_proba=True)
    >>> (~np.isnan(F)).sum(axis=1)  # 64 * 3 + 4 * 3
    array([204, 204])
    >>> proba[:6]
    array([1.    , 1.    , 1.    , 0.0625, 0.0625, 0.0625])
    """
    X = system.check_states(X, "X")
    n, m = system.n_particles, system.particle_dim
    k = _particle_count(p, n)
    check_choice("format", format, FORMATS)
    if out is not None and format != "sparse":
        raise ValueError(
            "out= writes the forces as CSR chunks: use format='sparse' with it"
        )
    free = _check_free_coordinates(system, free_coordinates)
    rng = check_random_state(random_state)

    n_samples = n_rows(X)
    # Coordinates recorded per configuration: all of the k sampled particles',
    # and the free ones of the n - k others.
    width = k * m + (n - k) * len(free)
    chunk = max(1, SAMPLING_BUDGET // max(n, system.n_features))
    if out is not None and not isinstance(random_state, numbers.Integral):
        raise ValueError(
            "out= resumes a killed run only with the same random draws: give "
            f"an integer random_state, got {random_state!r}"
        )
    settings = dict(
        system=repr(system),
        n_samples=n_samples,
        p=p,
        random_state=(
            int(random_state) if isinstance(random_state, numbers.Integral) else None
        ),
        free=free,
    )
    # The first, middle and last states stand for X in the store's
    # fingerprint: reading them costs nothing, and other data of the same
    # size almost surely differ there.
    probe = evenly_spaced(np.arange(n_samples), 3)
    store = PartialForceStore.open(
        out,
        n_samples,
        width,
        chunk,
        settings,
        n_features=system.n_features,
        states=None if out is None else take_rows(X, probe, dtype=np.float64),
    )
    particles = np.empty((n_samples, k), dtype=np.intp)
    for b, start in enumerate(
        tqdm(range(0, n_samples, chunk), disable=not verbose, desc="partial forces")
    ):
        stop = min(start + chunk, n_samples)
        # The k smallest of n i.i.d. uniform keys form a uniformly random
        # k-subset; sorting them keeps CSR indices sorted. They are drawn for
        # every block, stored or not, so a resumed run makes the same draws.
        keys = rng.random_sample((stop - start, n))
        chosen = np.sort(np.argpartition(keys, k - 1, axis=1)[:, :k], axis=1)
        particles[start:stop] = chosen
        if store.is_done(b):
            continue
        X_chunk = take_rows(X, slice(start, stop), dtype=np.float64)
        forces = system.partial_forces(X_chunk, chosen)
        if not free:
            # Particle-major layout: particle i owns columns i*m, ..., i*m + m - 1.
            columns = (chosen[:, :, None] * m + np.arange(m)).reshape(-1, width)
            store.write(b, slice(start, stop), forces.reshape(-1, width), columns)
            continue
        observed = np.zeros((stop - start, n, m), dtype=bool)
        full = np.zeros((stop - start, n, m))
        observed[:, :, free] = True
        full[:, :, free] = system.free_forces(X_chunk)
        rows = np.arange(stop - start)[:, None]
        observed[rows, chosen] = True
        full[rows, chosen] = forces
        # Row-major nonzero: each row's columns come out sorted.
        columns = np.nonzero(observed.reshape(stop - start, -1))[1]
        store.write(
            b,
            slice(start, stop),
            full[observed].reshape(-1, width),
            columns.reshape(-1, width),
        )

    values, columns = store.values, store.columns
    if format == "dense":
        F = np.full((n_samples, system.n_features), np.nan)
        np.put_along_axis(F, columns, values, axis=1)
    else:
        F = store.csr(system.n_features)
    out = [F]
    if return_mask:
        mask = np.zeros((n_samples, system.n_features if free else n), dtype=bool)
        np.put_along_axis(
            mask, np.asarray(columns[:]) if free else particles, True, axis=1
        )
        out.append(mask)
    if return_inclusion_proba:
        proba = np.full((n, m), k / n)
        proba[:, free] = 1.0
        out.append(proba.ravel())
    return out[0] if len(out) == 1 else tuple(out)


def _check_free_coordinates(system, free_coordinates):
    """The system's free coordinates to record (an empty list unless asked)."""
    if not isinstance(free_coordinates, (bool, np.bool_)):
        raise TypeError(
            f"free_coordinates must be True or False, got {free_coordinates!r}"
        )
    if not free_coordinates:
        return []
    free = list(getattr(system, "free_coordinates", ()))
    if not free:
        raise ValueError(
            f"free_coordinates=True, but {type(system).__name__} has no free "
            "coordinates (every derivative needs a force evaluation)"
        )
    m = system.particle_dim
    if len(set(free)) != len(free) or not all(
        isinstance(j, numbers.Integral) and 0 <= j < m for j in free
    ):
        raise ValueError(
            f"{type(system).__name__}.free_coordinates must be distinct indices "
            f"in range({m}) (particle_dim), got {tuple(free)}"
        )
    return free


def observed_mask(F, n_particles=None, particle_dim=1):
    """Which force coordinates were computed in a partial-force array.

    Parameters
    ----------
    F : ndarray or scipy sparse matrix/array of shape (n_samples, n_features)
        Partial forces: NaN marks a missing coordinate in a dense array; in a
        sparse one the stored entries (explicit zeros included) are the
        computed coordinates.
    n_particles : int, optional
        If given, ``n_features`` must equal ``n_particles * particle_dim``.
    particle_dim : int, default=1
        Coordinates per particle; all coordinates of a particle must be
        observed together (leave it at 1 for forces recorded with free
        coordinates, which are observed per coordinate).

    Returns
    -------
    ndarray of bool, shape (n_samples, n_features)
        True where a force was computed.

    Examples
    --------
    >>> import numpy as np
    >>> observed_mask(np.array([[0.0, np.nan], [np.nan, 1.0]]))
    array([[ True, False],
           [False,  True]])
    """
    if (
        isinstance(particle_dim, bool)
        or not isinstance(particle_dim, numbers.Integral)
        or particle_dim < 1
    ):
        raise ValueError(
            f"particle_dim must be a positive integer, got {particle_dim!r}"
        )
    if sp.issparse(F):
        F = sp.csr_array(F)
        _check_2d(F)
        # Duplicate stored entries (allowed in CSR) simply mark True twice.
        mask = np.zeros(F.shape, dtype=bool)
        rows = np.repeat(np.arange(F.shape[0]), np.diff(F.indptr))
        mask[rows, F.indices] = True
    else:
        F = np.asarray(F)
        if not np.issubdtype(F.dtype, np.floating):
            raise ValueError(
                f"a dense F must be a float array with NaN for missing forces, "
                f"got dtype {F.dtype}"
            )
        _check_2d(F)
        mask = ~np.isnan(F)
    n_features = mask.shape[1]
    if n_particles is not None and n_features != n_particles * particle_dim:
        raise ValueError(
            f"F has {n_features} columns, expected n_particles * particle_dim = "
            f"{n_particles} * {particle_dim}"
        )
    if n_features % particle_dim:
        raise ValueError(
            f"F has {n_features} columns, not a multiple of particle_dim={particle_dim}"
        )
    per_particle = mask.reshape(len(mask), -1, particle_dim)
    if particle_dim > 1 and np.any(per_particle.any(-1) != per_particle.all(-1)):
        raise ValueError(
            "F observes only some coordinates of a particle; all "
            f"{particle_dim} force coordinates of a particle are computed together. "
            "Forces recorded with free coordinates "
            "(sample_partial_forces(..., free_coordinates=True)) are observed per "
            "coordinate: use particle_dim=1"
        )
    return mask


def densify(F):
    """Partial forces as a dense array with NaN where not computed.

    scikit-learn's ``cross_validate`` and ``cross_val_score`` reject a sparse
    ``y``; ``GridSearchCV`` and the estimators accept both forms. Use this to
    pass sparse partial forces to the former.

    Parameters
    ----------
    F : scipy sparse matrix or array of shape (n_samples, N)
        Stored entries are the computed forces (explicit zeros included).

    Returns
    -------
    ndarray of shape (n_samples, N), float64

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> densify(sp.csr_array(([0.0, 2.0], [1, 2], [0, 2]), shape=(1, 3)))
    array([[nan,  0.,  2.]])
    """
    if not sp.issparse(F):
        raise TypeError(
            f"F must be a scipy sparse matrix or array, got {type(F).__name__}"
        )
    F = F.tocsr()
    if not F.has_canonical_format:  # duplicates: one force, their sum
        F = F.copy()
        F.sum_duplicates()
    dense = np.full(F.shape, np.nan)
    rows = np.repeat(np.arange(F.shape[0]), np.diff(F.indptr))
    dense[rows, F.indices] = F.data
    return dense
