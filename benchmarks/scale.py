"""Scale: data on disk, time and memory per phase, and a dask cluster.

Prints, from one run:

(a) the per-epoch time of the dynamics fit at N = 4,800 and N = 307,200
    (800 and 51,200 Lennard-Jones atoms) on the same number of
    configurations: epochs work on O(d^2) numbers per configuration, so the
    ratio should stay near 1;
(b) the throughput of the statistics pass (configurations/s and GB/s of X
    read) on a zarr store of 51,200-atom states, beside a plain NumPy read
    of the same store in the same run (the disk/memory bandwidth limit);
(c) with ``--configs K``: the paper's large Lennard-Jones protocol at
    51,200 atoms with K configurations kept on disk (LAMMPS when installed),
    phase by phase: data generation, partial forces (50 atoms per
    configuration), autoencoder fit (on ``--ae-configs`` evenly spaced
    configurations), dynamics fit (statistics pass over all K, then the
    epochs) and the test error on T; each with its wall time and peak
    anonymous memory (RssAnon of the process and its workers). Every phase
    stores its output under ``--data-dir``, so a run that is stopped resumes
    where it was (the MD resumes trajectory by trajectory);
(d) the statistics pass of (b) through a 2-worker dask ``LocalCluster``
    against in-process, as a ratio.

    python benchmarks/scale.py                              # (a), (b), (d)
    python benchmarks/scale.py --configs 50000 --skip-small --data-dir /big
"""

import argparse
import json
import math
import time
from pathlib import Path

import joblib
import numpy as np
import torch

from skmacro import ClosureAutoencoder, PartialForceDynamics
from skmacro.experiments import lennard_jones as lj
from skmacro.experiments.published import TABLE1
from skmacro.experiments.resources import PhaseMeter
from skmacro.forces import PartialForces
from skmacro.metrics import rollout_error
from skmacro.sampling import sample_partial_forces
from skmacro.statistics import partial_force_statistics
from skmacro.systems import LennardJones

ATOMS_SMALL, ATOMS_LARGE = 800, 51_200


def lattice_states(n_atoms, n_configs, seed=0):
    """States of the paper's density for timing passes: atoms on random sites
    of a face-centred cubic lattice (nearest neighbours ~1.18 sigma apart,
    near the pair potential's minimum), jittered by 0.05 sigma, with
    Gaussian velocities at T ~ 1. Unlike uniformly random positions they
    hold no overlapping pairs, so forces stay of a fluid's size and a fit on
    them trains as on MD states."""
    rng = np.random.default_rng(seed)
    box = (n_atoms / 0.8) ** (1 / 3)
    cells = math.ceil((n_atoms / 4) ** (1 / 3))
    corner = np.stack(
        np.meshgrid(*[np.arange(cells)] * 3, indexing="ij"), axis=-1
    ).reshape(-1, 1, 3)
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    sites = (corner + basis).reshape(-1, 3) * (box / cells)
    X = np.empty((n_configs, n_atoms, 6), dtype=np.float32)
    for k in range(n_configs):
        X[k, :, :3] = sites[rng.choice(len(sites), n_atoms, replace=False)]
    X[..., :3] += rng.normal(scale=0.05, size=(n_configs, n_atoms, 3))
    X[..., 3:] = rng.normal(size=(n_configs, n_atoms, 3))
    return X.reshape(n_configs, -1)


def small_encoder(system, X, seed=0):
    return ClosureAutoencoder(
        observables=system.observables, n_components=32, max_epochs=1, random_state=seed
    ).fit(X[:64])


def epoch_times(n_configs, log, rounds=3):
    """(a) Median epoch time of the same dynamics fit at both sizes, the fits
    alternating between the sizes (``rounds`` each) so that a busy machine
    slows both alike."""
    data = {}
    for n_atoms in (ATOMS_SMALL, ATOMS_LARGE):
        system = LennardJones(n_atoms=n_atoms)
        X = lattice_states(n_atoms, n_configs)
        F = sample_partial_forces(
            system, X, p=50 / n_atoms, random_state=0, format="sparse"
        )
        data[n_atoms] = (small_encoder(system, X).transform(X), F)
    durations = {n_atoms: [] for n_atoms in data}
    for round_ in range(rounds):
        order = list(data) if round_ % 2 == 0 else list(data)[::-1]
        for n_atoms in order:
            dyn = PartialForceDynamics(
                max_epochs=20, control_variate=None, random_state=0
            ).fit(*data[n_atoms])
            durations[n_atoms].extend(dyn.history_[:, "dur"])
    times = {n_atoms: float(np.median(d)) for n_atoms, d in durations.items()}
    for n_atoms, median in times.items():
        log(f"(a) N = {6 * n_atoms}: median epoch {median * 1e3:.1f} ms")
    ratio = times[ATOMS_LARGE] / times[ATOMS_SMALL]
    log(
        f"(a) epoch time N = 307,200 / N = 4,800: {ratio:.2f} (goal <= 1.5; "
        f"{rounds} alternating fits per size)"
    )
    return ratio


def statistics_throughput(store, n_configs, log, client=None):
    """(b) and (d): the statistics pass on a zarr store, a plain read of it,
    and the pass through a dask cluster."""
    import dask.array as da
    import zarr

    path = Path(store) / "states.zarr"
    system = LennardJones(n_atoms=ATOMS_LARGE)
    N = system.n_features
    if not (path / "zarr.json").exists():
        z = zarr.create_array(
            store=str(path), shape=(n_configs, N), chunks=(4, N), dtype="f4"
        )
        for start in range(0, n_configs, 64):
            rows = slice(start, min(start + 64, n_configs))
            z[rows] = lattice_states(ATOMS_LARGE, rows.stop - rows.start, seed=start)
    X = zarr.open_array(str(path), mode="r")
    gb = n_configs * N * 4 / 1e9
    start = time.perf_counter()
    for s in range(0, n_configs, 64):
        np.asarray(X[s : s + 64])
    read = time.perf_counter() - start
    encoder = small_encoder(system, np.asarray(X[:64]))
    F = sample_partial_forces(
        system, X, p=50 / ATOMS_LARGE, random_state=0, format="sparse"
    )
    forces = PartialForces(F, N)
    start = time.perf_counter()
    partial_force_statistics(encoder, X, forces)
    local = time.perf_counter() - start
    log(
        f"(b) statistics pass: {n_configs / local:.1f} configurations/s, "
        f"{gb / local:.2f} GB/s of X; plain read of the store: "
        f"{n_configs / read:.1f} configurations/s, {gb / read:.2f} GB/s "
        f"(pass / read time {local / read:.2f})"
    )
    if client is None:
        return
    lazy = da.from_zarr(str(path))
    start = time.perf_counter()
    partial_force_statistics(encoder, lazy, forces)
    remote = time.perf_counter() - start
    log(
        f"(d) statistics pass through a 2-worker LocalCluster: {remote:.1f} s "
        f"against {local:.1f} s in-process (ratio {remote / local:.2f})"
    )


def large_run(args, log):
    """(c) The 51,200-atom protocol with data on disk, phase by phase."""
    data = Path(args.data_dir) / f"lj{args.atoms}_{args.configs}"
    data.mkdir(parents=True, exist_ok=True)
    system = lj.make_system(args.atoms, args.engine)
    n_states = lj.STEPS + 1
    n_traj = math.ceil(args.configs / n_states)
    meter = PhaseMeter(log=log)
    log(
        f"(c) {args.atoms} atoms, {args.configs} configurations from {n_traj} "
        f"trajectories ({n_traj * n_states * system.n_features * 4 / 2**30:.1f} GiB "
        f"float32 on disk under {data}), engine {system.engine}"
    )
    with meter("initial states"):
        # The paper's protocol: one relaxed placement, T0 varies.
        X0 = system.sample_initial(n_traj, random_state=args.seed, microstates="shared")
        X0_test = system.sample_initial(
            args.n_test, random_state=args.seed + 1, microstates="shared"
        )
    settings = dict(t_end=lj.STEPS * lj.DT, dt=lj.DT, n_jobs=args.n_jobs, verbose=True)
    with meter("data generation (MD)"):
        train = system.simulate(X0, out=data / "train.zarr", **settings)
        test = system.simulate(X0_test, out=data / "test.zarr", **settings)
    import dask.array as da

    X = da.from_zarr(train).reshape(-1, system.n_features)[: args.configs]
    with meter("partial forces (50 atoms)"):
        F = sample_partial_forces(
            system,
            X,
            p=50 / args.atoms,
            random_state=args.seed,
            format="sparse",
            out=data / "forces.zarr",
            verbose=True,
        )
    encoder_path = data / f"encoder_{args.ae_configs}_{args.ae_epochs}.joblib"
    with meter(f"autoencoder fit ({args.ae_configs} configs)"):
        if encoder_path.exists():
            encoder = joblib.load(encoder_path)
        else:
            rows = np.linspace(0, args.configs - 1, args.ae_configs).astype(int)
            encoder = lj.fit_autoencoder(
                system,
                X[rows],
                epochs=args.ae_epochs,
                random_state=args.seed,
                verbose=1,
            )
            joblib.dump(encoder, encoder_path)
    dynamics_path = data / f"dynamics_{args.ae_configs}_{args.ae_epochs}.joblib"
    with meter("dynamics fit (statistics pass + epochs)"):
        if dynamics_path.exists():
            dyn = joblib.load(dynamics_path)
        else:
            dyn = PartialForceDynamics(
                latent_model="onsager", control_variate=None, random_state=args.seed
            ).fit(encoder.transform(X), F)
            joblib.dump(dyn, dynamics_path)
    epochs = float(np.sum(dyn.history_[:, "dur"]))
    with meter("test error on T"):
        from sklearn.pipeline import Pipeline

        pipe = Pipeline([("ae", encoder), ("dyn", dyn)])
        t = np.arange(test.shape[1]) * lj.DT
        error = rollout_error(pipe, t, test, dt=lj.DT)[0]
    log("")
    log(meter.table())
    log(f"{'of which epochs':>34} {epochs:>10.1f}   ({len(dyn.history_)} epochs)")
    paper = TABLE1["lennard_jones_large"]["partial"]
    log(
        f"(c) test error on T (unsquared Eq. 43, {args.n_test} test trajectories): "
        f"{error:.3e}; paper (5,000 configurations): {paper[0]:.2e} +- {paper[1]:.1e}"
    )
    (data / "phases.json").write_text(json.dumps(meter.rows, indent=1))


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--epoch-configs", type=int, default=2000)
    parser.add_argument("--store-configs", type=int, default=512)
    parser.add_argument("--configs", type=int, default=None, help="run (c)")
    parser.add_argument("--atoms", type=int, default=ATOMS_LARGE, help="(c)'s size")
    parser.add_argument("--ae-configs", type=int, default=5000)
    parser.add_argument("--ae-epochs", type=int, default=10)
    parser.add_argument("--n-test", type=int, default=5)
    parser.add_argument("--engine", choices=["auto", "numpy", "lammps"], default="auto")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=lj.data_dir())
    parser.add_argument("--skip-small", action="store_true", help="skip (a), (b), (d)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    def log(message):
        print(message, flush=True)

    log(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    if not args.skip_small:
        epoch_times(args.epoch_configs, log)
        from dask.distributed import Client, LocalCluster

        with (
            LocalCluster(
                n_workers=2, threads_per_worker=1, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            statistics_throughput(args.data_dir, args.store_configs, log, client)
    if args.configs:
        large_run(args, log)


if __name__ == "__main__":
    main()
