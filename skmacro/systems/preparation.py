"""The paper's preparation of a Lennard-Jones configuration, in NumPy.

The reference code prepares its fluid with three LAMMPS commands::

    create_atoms 1 random <n_atoms> <lattice_seed> box
    velocity all create <T0> <velocity_seed> dist gaussian
    minimize 1.0e-1 1.0e-4 1000 10000

Each is reproduced here: LAMMPS's Park-Miller generator (``RanPark``) with
its warm-up and its polar Gaussian, and its default minimiser, Polak-Ribiere
conjugate gradients with the quadratic line search, stopping rules included.
:class:`~skmacro.systems.lennard_jones.LennardJones` thus prepares the
paper's configuration without LAMMPS, and both MD engines start from the same
states. With the paper's seeds the positions, the velocities and the number
of minimiser iterations agree with LAMMPS (tested when it is installed).
In boxes of about 6,400 atoms and more one ``minimize`` leaves overlaps;
:func:`relax` repeats it until none is left.
"""

import numpy as np

__all__ = ["gaussian_velocities", "minimize", "random_positions", "relax"]

# Park and Miller's minimal standard generator, x <- 16807 x mod (2^31 - 1).
_PM_MULTIPLIER = 16807
PM_MODULUS = 2147483647
# create_atoms discards the first draws so that consecutive seeds do not
# place the first atoms alike.
_CREATE_ATOMS_WARM_UP = 30

# `minimize 1.0e-1 1.0e-4 1000 10000` of the paper's input: relative energy
# tolerance, force tolerance, iterations and force evaluations.
PAPER_MINIMIZE = (1.0e-1, 1.0e-4, 1000, 10000)
# LAMMPS's defaults: largest move of one coordinate per line search (dmax),
# and the constants of its quadratic line search (min_linesearch.cpp).
_DMAX = 0.1
_ALPHA_MAX = 1.0
_ALPHA_REDUCE = 0.5
_BACKTRACK_SLOPE = 0.4
_QUADRATIC_TOL = 0.1
_EMACH = 1.0e-8
_EPS_QUAD = 1.0e-28
_EPS_ENERGY = 1.0e-8


def park_miller(seed, n):
    """The first ``n`` uniform numbers of LAMMPS's ``RanPark(seed)``.

    Term ``k`` is ``16807**k * seed mod (2**31 - 1)`` scaled to (0, 1); the
    powers are built by doubling, so the stream costs O(log n) array
    operations (every product stays below 2**62).

    Parameters
    ----------
    seed : int
        In ``[1, 2**31 - 2]``.
    n : int

    Returns
    -------
    ndarray of shape (n,)
    """
    powers = np.array([_PM_MULTIPLIER], dtype=np.int64)
    while len(powers) < n:
        powers = np.concatenate([powers, powers * powers[-1] % PM_MODULUS])
    return (powers[:n] * int(seed) % PM_MODULUS) * (1.0 / PM_MODULUS)


def random_positions(n_atoms, box, seed):
    """``create_atoms 1 random n_atoms seed box`` in the box ``[0, box)^3``.

    Returns
    -------
    ndarray of shape (n_atoms, 3)
        Atom ``i`` is LAMMPS's atom ``i + 1``.
    """
    draws = park_miller(seed, _CREATE_ATOMS_WARM_UP + 3 * n_atoms)
    return draws[_CREATE_ATOMS_WARM_UP:].reshape(n_atoms, 3) * box


def gaussian_velocities(n_atoms, seed):
    """The raw Gaussian draws of ``velocity all create T seed dist gaussian``.

    LAMMPS draws (vx, vy, vz) for atoms 1, 2, ... in turn from ``RanPark``'s
    polar method (pairs of uniforms rejected outside the unit disc, each
    accepted pair giving two numbers, the second first). The command then
    divides by the square root of the mass, removes the net momentum and
    rescales to ``T``; those steps are left to the caller.

    Returns
    -------
    ndarray of shape (n_atoms, 3)
    """
    n = 3 * n_atoms
    # About pi/4 of the pairs are accepted; draw more until enough are.
    n_pairs = int(n / np.pi * 2.0 * 1.1) + 16
    while True:
        u = park_miller(seed, 2 * n_pairs)
        v1, v2 = 2.0 * u[0::2] - 1.0, 2.0 * u[1::2] - 1.0
        rsq = v1 * v1 + v2 * v2
        accepted = (rsq < 1.0) & (rsq != 0.0)
        if 2 * np.count_nonzero(accepted) >= n:
            break
        n_pairs *= 2
    v1, v2, rsq = v1[accepted], v2[accepted], rsq[accepted]
    factor = np.sqrt(-2.0 * np.log(rsq) / rsq)
    return np.stack([v2 * factor, v1 * factor], axis=1).ravel()[:n].reshape(-1, 3)


def _quadratic_line_search(x0, e0, f0, h, forces_energy, n_atoms):
    """LAMMPS's ``linemin_quadratic`` from ``x0`` along ``h``.

    Backtracks from the step that moves one coordinate by ``dmax`` until the
    energy falls enough, taking the secant step to a zero of ``f . h`` as
    soon as the energy is locally quadratic. Energies and ``f . h`` are per
    atom, as LAMMPS's are with ``units lj``.

    Returns
    -------
    x, energy, forces, n_evaluations, success
    """
    fh0 = np.vdot(f0, h) / n_atoms
    h_max = np.max(np.abs(h))
    if h_max == 0.0:
        return x0, e0, f0, 0, False
    alpha_max = min(_ALPHA_MAX, _DMAX / h_max)
    alpha, alpha_prev, fh_prev, e_prev = alpha_max, 0.0, fh0, e0
    n_evaluations = 0
    while True:
        x = x0 + alpha * h
        f, e = forces_energy(x)
        n_evaluations += 1
        fh = np.vdot(f, h) / n_atoms
        delta_fh = fh - fh_prev
        if abs(fh) < _EPS_QUAD or abs(delta_fh) < _EPS_QUAD:
            return x0, e0, f0, n_evaluations, False
        relative_error = abs(
            1.0 - (0.5 * (alpha - alpha_prev) * (fh + fh_prev) + e) / e_prev
        )
        alpha_secant = alpha - (alpha - alpha_prev) * fh / delta_fh
        if relative_error <= _QUADRATIC_TOL and 0.0 < alpha_secant < alpha_max:
            x = x0 + alpha_secant * h
            f, e = forces_energy(x)
            n_evaluations += 1
            if e - e0 < _EMACH:
                return x, e, f, n_evaluations, True
        ideal_decrease = -_BACKTRACK_SLOPE * alpha * fh0
        if e - e0 <= ideal_decrease:
            return x, e, f, n_evaluations, True
        fh_prev, e_prev, alpha_prev = fh, e, alpha
        alpha *= _ALPHA_REDUCE
        if alpha <= 0.0 or ideal_decrease >= -_EMACH:
            return x0, e0, f0, n_evaluations, False


def minimize(positions, forces_energy, settings=PAPER_MINIMIZE):
    """LAMMPS's ``minimize etol ftol maxiter maxeval`` (``min_style cg``).

    Polak-Ribiere conjugate gradients (restarted along the force when the
    direction is not downhill, and every ``3 n`` iterations), each step a
    :func:`_quadratic_line_search`. It stops when one iteration changes the
    energy by less than ``etol`` relative to its magnitude, when the force
    norm falls below ``ftol``, when the line search cannot go further, or
    after ``maxiter`` iterations or ``maxeval`` force evaluations.

    Parameters
    ----------
    positions : ndarray of shape (n, 3)
    forces_energy : callable
        ``forces_energy(x) -> (forces (n, 3), total energy)``.
    settings : tuple, default=PAPER_MINIMIZE
        ``(etol, ftol, maxiter, maxeval)``.

    Returns
    -------
    positions : ndarray of shape (n, 3)
    converged : bool
        Whether the energy or force tolerance stopped it.
    n_iterations : int
    """
    etol, ftol, max_iterations, max_evaluations = settings
    n_atoms = len(positions)

    def per_atom(x):
        f, e = forces_energy(x)
        return f, e / n_atoms

    x = positions.copy()
    f, e = per_atom(x)
    g, h = f.copy(), f.copy()
    gg = np.vdot(f, f)
    n_evaluations = 1
    for iteration in range(1, max_iterations + 1):
        e_before = e
        x, e, f, used, success = _quadratic_line_search(x, e, f, h, per_atom, n_atoms)
        n_evaluations += used
        if not success or n_evaluations >= max_evaluations:
            return x, False, iteration
        if abs(e - e_before) <= etol * 0.5 * (abs(e) + abs(e_before) + _EPS_ENERGY):
            return x, True, iteration
        ff, fg = np.vdot(f, f), np.vdot(f, g)
        if ff < ftol**2:
            return x, True, iteration
        beta = 0.0 if iteration % (3 * n_atoms) == 0 else max(0.0, (ff - fg) / gg)
        gg = ff
        g = f.copy()
        h = g + beta * h
        if np.vdot(g, h) <= 0.0:
            h = g.copy()
    return x, False, max_iterations


def relax(positions, forces_energy, max_force, max_calls=100):
    """The paper's ``minimize``, repeated until no overlap is left.

    Its relative energy tolerance stops one call early in large systems:
    the line search moves every atom by at most ``dmax`` times the ratio of
    its force to the largest one, so the worst overlap of a big box slows
    every other atom, and with the energy still dominated by overlaps one
    iteration changes it by less than 10% (from random placements at
    density 0.8: +28.7 epsilon per atom left at 6,400 atoms, +2,046 at
    51,200, where LAMMPS's NVE run then loses atoms). Like a LAMMPS user
    issuing the command again, this repeats it until the energy is not
    positive and no atom feels a force above ``max_force``. One call
    suffices for the paper's 800 atoms (and 2,700), whose states are thus
    unchanged.

    Parameters
    ----------
    positions : ndarray of shape (n, 3)
    forces_energy : callable
        ``forces_energy(x) -> (forces (n, 3), total energy)``, the energy
        unshifted (zero for separated atoms).
    max_force : float
        Largest force (norm per atom) a relaxed configuration may hold.
    max_calls : int, default=100

    Returns
    -------
    positions : ndarray of shape (n, 3)
    relaxed : bool
        Whether the conditions were met within ``max_calls`` calls.
    n_calls : int
    """
    x = positions
    for n_calls in range(1, max_calls + 1):
        x, _, _ = minimize(x, forces_energy)
        f, e = forces_energy(x)
        if e <= 0.0 and np.max(np.einsum("ik,ik->i", f, f)) <= max_force**2:
            return x, True, n_calls
    return x, False, max_calls
