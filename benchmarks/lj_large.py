"""The large Lennard-Jones system: 51,200 atoms (N = 307,200), forces on 50
atoms per configuration (p = 1/1024), L_x,p only (paper Section 5.3, Table 1
"Lennard-Jones (large)": 4.96e-3 +- 0.56e-3 with 5,000 configurations, where
the paper stopped "due to memory limit").

What it measures
----------------
Wall time and peak memory of every phase of the pipeline at scale:

1. simulation: ``ceil(--configs / (steps // --stride + 1))`` training and
   ``--n-test`` test NVE trajectories (T0 ~ U(0.5, 1.5), dt = 0.001,
   ``--steps`` steps, every ``--stride``-th state of the training ones
   kept, every state of the test ones), stored as float32
   (``simulate(..., dtype=np.float32)`` holds at most ``--n-jobs`` float64
   trajectories besides its result); the first ``--configs`` states train.
   Every trajectory starts from the paper's one relaxed placement and
   velocity pattern scaled to its T0 or, with ``--microstates
   independent``, from its own relaxed placement and velocity draw;
2. sampling: Algorithm 1, forces on ``--atoms-per-config`` random atoms per
   configuration, computed on row chunks and stored as CSR;
3. AE fit + encode: ``ClosureAutoencoder(n_components=32).fit_transform``
   on the float32 states, with the MLP closure on raw coordinates or, with
   ``--closure particle``, the fluid's particle-set closure (``--n-radial``
   radial functions; one feature pass serves the fit and the encoding);
   ``--free-velocities`` also observes every atom's ``dr/dt = v``, which
   costs no force computation;
4. statistics pass: the one pass of ``PartialForceDynamics.fit`` that reduces
   every configuration to its quadratic form (z, b, A, c), measured as the
   fit time minus the time of its training (``history_[:, "dur"]``). With
   ``--control-variate pair`` it includes fitting the fluid's pair-force
   model (``LennardJones.force_model``) on two halves of the computed
   forces and its guess at every atom of every configuration (on
   ``--n-jobs`` threads); that guess of ``dr/dt`` is ``v`` exactly, so
   ``--free-velocities`` adds nothing to it;
5. dynamics fit: the training steps (O(d^2) per configuration);
6. test error on T: unsquared Eq. 43 error of latent RK4 rollouts
   (dt = 0.001) against the ground-truth test trajectories.

Peak memory is the process's ``ru_maxrss`` (resident set high-water mark,
which includes PyTorch's allocations) after each phase, plus the current
resident size; ``--tracemalloc`` adds the traced peak of Python/NumPy
allocations per phase (not PyTorch's). MD runs in joblib worker processes,
whose memory is not included.

Run the paper's size (float32 X of 5,000 x 307,200 is 6.1 GB)::

    python benchmarks/lj_large.py --atoms 51200 --configs 5000

Memory: the float32 training and test states, plus about 3.7 GiB for the
autoencoder's fit. On a 24 GiB machine 11,000 configurations (X: 12.6 GiB)
peaked at 18.4 GiB::

    python benchmarks/lj_large.py --configs 11000 --ae-epochs 10 --threads 2

With ``--free-velocities`` the partial forces also hold every velocity
coordinate, 12 bytes each per configuration: about 1.5 times the float32
``X`` (8.6 GiB at 51,200 atoms and 5,000 configurations).

A smaller run::

    python benchmarks/lj_large.py --atoms 6400 --configs 1000 --ae-epochs 5
"""

import argparse
import math
import resource
import time
import tracemalloc

import numpy as np
from sklearn.pipeline import Pipeline

from skmacro import PartialForceDynamics
from skmacro.experiments import lennard_jones as lj
from skmacro.experiments.published import TABLE1
from skmacro.metrics import rollout_error

PAPER_LARGE = TABLE1["lennard_jones_large"]["partial"]


def rss_now_gib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def rss_peak_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB


class Phases:
    """Time, peak RSS and (optionally) traced peak of each phase."""

    def __init__(self, trace):
        self.trace = trace
        self.rows = []

    def __call__(self, name):
        phases = self

        class _Phase:
            def __enter__(self):
                if phases.trace:
                    tracemalloc.reset_peak()
                self.start = time.perf_counter()
                return self

            def __exit__(self, *exc):
                elapsed = time.perf_counter() - self.start
                traced = (
                    tracemalloc.get_traced_memory()[1] / 2**30
                    if phases.trace
                    else float("nan")
                )
                phases.rows.append(
                    [name, elapsed, rss_peak_gib(), rss_now_gib(), traced]
                )
                print(
                    f"{name}: {elapsed:.1f} s, peak RSS {rss_peak_gib():.2f} GiB, "
                    f"RSS now {rss_now_gib():.2f} GiB"
                    + (f", traced peak {traced:.2f} GiB" if phases.trace else ""),
                    flush=True,
                )
                return False

        return _Phase()

    def report(self):
        print()
        print(
            f"{'phase':>26} {'time (s)':>10} {'peak RSS':>10} {'RSS after':>10}"
            + (f" {'traced pk':>10}" if self.trace else "")
            + "   (GiB)"
        )
        for name, elapsed, peak, now, traced in self.rows:
            print(
                f"{name:>26} {elapsed:>10.1f} {peak:>10.2f} {now:>10.2f}"
                + (f" {traced:>10.2f}" if self.trace else "")
            )


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--atoms", type=int, default=51200)
    parser.add_argument("--configs", type=int, default=5000)
    parser.add_argument("--n-test", type=int, default=5)
    parser.add_argument(
        "--stride",
        type=int,
        default=1,
        help="keep every stride-th state of the training trajectories (more "
        "trajectories for the same --configs); test trajectories keep every step",
    )
    parser.add_argument(
        "--latent-model", choices=["mlp", "onsager", "gfinn"], default="onsager"
    )
    parser.add_argument(
        "--microstates",
        choices=["shared", "independent"],
        default="shared",
        help="the paper's protocol (one relaxed placement and velocity pattern, "
        "scaled to each T0) or a fresh relaxed placement and velocity draw per "
        "trajectory, training and test",
    )
    lj.add_arguments(parser)
    parser.add_argument(
        "--free-velocities",
        action="store_true",
        help="also observe every atom's dr/dt = v (no force computation)",
    )
    parser.add_argument("--tracemalloc", action="store_true")
    args = lj.parse_arguments(parser)
    if args.tracemalloc:
        tracemalloc.start()
    phases = Phases(args.tracemalloc)

    system = lj.make_system(args.atoms, args.engine)
    N = system.n_features
    k = args.atoms_per_config
    n_states = args.steps // args.stride + 1
    n_traj = math.ceil(args.configs / n_states)
    x_gib = args.configs * N * 4 / 2**30
    print(
        f"{args.atoms} atoms, N = {N}, engine {system.engine}; {args.configs} "
        f"training configurations from {n_traj} trajectories"
        f"{f' at stride {args.stride}' if args.stride > 1 else ''} (X float32: "
        f"{x_gib:.2f} GiB), {args.n_test} test trajectories; p = {k}/"
        f"{args.atoms} = {k / args.atoms:.3g}"
        f"{' and every dr/dt = v' if args.free_velocities else ''}; "
        f"{args.microstates} microstates; "
        f"{args.closure} closure; d = {args.latent_dim}; latent model "
        f"{args.latent_model}; threads {args.threads}",
        flush=True,
    )

    with phases("initial states (relax)"):
        X0_train, X0_test = (
            system.sample_initial(
                count,
                random_state=seed,
                microstates=args.microstates,
                n_jobs=args.n_jobs,
            )
            for count, seed in ((n_traj, args.seed), (args.n_test, args.seed + 1))
        )
    with phases("simulation"):
        kwargs = dict(t_end=args.steps * args.dt, dt=args.dt, n_jobs=args.n_jobs)
        train = system.simulate(
            X0_train, dtype=np.float32, stride=args.stride, **kwargs
        )
        X = train.reshape(-1, N)[: args.configs]
        test = system.simulate(X0_test, dtype=np.float32, **kwargs)
    with phases("sampling (50-atom forces)"):
        F = lj.partial_forces(
            system, X, k, args.seed, free_coordinates=args.free_velocities
        )
    fit_params = {}
    if args.free_velocities:
        F, fit_params["inclusion_proba"] = F
    print(
        f"  partial forces: CSR with {F.nnz} stored values "
        f"({(F.data.nbytes + F.indices.nbytes) / 2**20:.1f} MiB)",
        flush=True,
    )
    with phases("AE fit + encode"):
        ae = lj.make_autoencoder(
            system, **lj.autoencoder_settings(args), random_state=args.seed
        )
        # One feature pass for the particle closure (fit_transform encodes
        # the feature rows of its fit).
        Z = ae.fit_transform(X)
    pca = (
        f"; closure_pca {args.closure_pca}: {ae.closure_explained_variance_:.10g} "
        f"of the variance kept, closure moved by {ae.closure_pca_shift_:.2g} of "
        "its spread"
        if args.closure_pca is not None
        else ""
    )
    print(f"  encoder: kappa(JJ^T) {ae.condition_number_:.3g}{pca}", flush=True)
    dyn = PartialForceDynamics(
        latent_model=args.latent_model,
        loss="partial",
        control_variate=lj.resolve_control_variate(
            system, args.control_variate, n_jobs=args.n_jobs
        ),
        **lj.dynamics_budget(args.dyn_epochs, args.dyn_steps),
        random_state=args.seed,
    )
    start = time.perf_counter()
    with phases("stats pass + dynamics fit"):
        dyn.fit(Z, F, **fit_params)
    total = time.perf_counter() - start
    epochs = float(np.sum(dyn.history_[:, "dur"]))
    with phases("test error on T"):
        pipe = Pipeline([("ae", ae), ("dyn", dyn)])
        t = np.arange(test.shape[1]) * args.dt
        error, _, _ = rollout_error(pipe, t, test, dt=args.dt, squared=False)

    phases.report()
    print(f"{'  of which statistics pass':>26} {total - epochs:>10.1f}")
    last = dyn.history_[-1]
    print(
        f"{'  of which training':>26} {epochs:>10.1f}   ({last['epoch']} epochs, "
        f"{last['step']} steps)"
    )
    print()
    print(f"peak RSS (ru_maxrss) over the run: {rss_peak_gib():.2f} GiB")
    print(
        f"test error on T (unsquared Eq. 43, {args.n_test} test trajectories, "
        f"1 run): {error:.3e}   paper (Table 1, 51200 atoms, 5000 configs): "
        f"{PAPER_LARGE[0]:.2e} +- {PAPER_LARGE[1]:.2e}"
    )


if __name__ == "__main__":
    main()
