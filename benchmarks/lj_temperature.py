"""Temperature of the 800-atom Lennard-Jones fluid: L_z against L_x,p (paper
Section 5.2, Fig. 3 and the "Lennard-Jones (small)" row of Table 1).

What it measures
----------------
The Eq. 43 test error (unsquared norms, as the paper's figures) on the
temperature T of latent RK4 rollouts (dt = 0.001, 250 steps) started from the
encoded initial states of held-out NVE trajectories, for two dynamics models
trained on the same force budget:

* ``L_x,p``: forces on ``--atoms-per-config`` (50) random atoms of every
  training configuration (p = 50/800 = 1/16);
* ``L_z``: all forces on ``K * p`` randomly chosen training configurations
  (``--lz-subset trajectories`` takes whole trajectories instead, as the
  reference code does), i.e. the same number of atom-force computations.

Protocol (paper Appendix B.3): ``--n-train`` (90) training and ``--n-test``
(10) test trajectories, T0 ~ U(0.5, 1.5) (test drawn with another seed), NVE
velocity Verlet dt = 0.001, 250 steps, every step kept. The latent space has
d = 32 coordinates (T and 31 learned closure variables), and the latent model
is chosen with ``--latent-models`` (MLP, OnsagerNet, GFINNs). Each repeat
draws new masks, a new L_z subset and new network seeds; the autoencoder is
retrained in each repeat unless ``--ae-once`` (the output says which). The
printed table is mean +- std over repeats beside the paper's Fig. 3 values.
The paper's repeats are ten latent networks on one encoder and one draw of
atoms (its reference code), so its std leaves out the encoder's variation
that this script's default includes (docs/method.md, "Where the
Lennard-Jones error comes from"). Its published models, scored against the
ground truth on its own regenerated data, give 6.6e-3 (L_x,p) and 1.1e-2
(L_z) rather than the printed figures (``lj_published_models.py``).

``--free-velocities`` (beyond the paper) adds a third model: positions'
derivatives dr/dt = v cost nothing, so every position coordinate is observed
(inclusion probability 1) and the interatomic forces only on the same 50
atoms (inclusion probability p); same force cost as L_x,p. Five repeats:
no gain on the temperature (docs/method.md, "Beyond the paper: free
coordinates").

``--control-variate neighbors`` switches on the library's variance reduction
for the partial-force models; the default (none) is the paper's estimator.
``--closure-pca 200`` keeps the closure's first-layer weight only along the
200 leading principal directions of the training states
(``ClosureAutoencoder(closure_pca=200)``).

The simulated trajectories are cached (float32) in
``outputs/lj_temperature_<...>.npz``; reruns skip the MD.

Run (the paper's protocol; hours on 2 CPU cores)::

    python benchmarks/lj_temperature.py --latent-models mlp onsager gfinn

A quick check::

    python benchmarks/lj_temperature.py --n-train 6 --n-test 2 --steps 50 \\
        --repeats 1 --ae-epochs 2 --dyn-epochs 5
"""

import argparse
import hashlib
import json
import math
import os
import time
import warnings

import numpy as np
import torch
from sklearn.pipeline import Pipeline

from skmacro import ClosureAutoencoder, PartialForceDynamics
from skmacro.paper import rollout_error
from skmacro.sampling import sample_partial_forces
from skmacro.systems import LennardJones, _lammps

#: Paper Fig. 3 (800 atoms, p = 1/16, ten repeats): model -> loss -> (mean, std).
PAPER_FIG3 = {
    "mlp": {"z": (2.60e-2, 1.01e-2), "partial": (1.34e-3, 0.26e-3)},
    "onsager": {"z": (4.45e-3, 2.03e-3), "partial": (1.17e-3, 0.18e-3)},
    "gfinn": {"z": (1.28e-2, 0.74e-2), "partial": (2.84e-3, 0.99e-3)},
}
MODEL_NAMES = {"mlp": "MLP", "onsager": "OnsagerNet", "gfinn": "GFINNs"}


# --------------------------------------------------------------------- data


def make_system(n_atoms, engine="auto"):
    if engine == "auto":
        engine = "lammps" if _lammps.lammps_available() else "numpy"
    return LennardJones(n_atoms=n_atoms, engine=engine)


def load_or_simulate(system, args):
    """Train and test trajectories (``args.n_train``, ``args.n_test``), float32,
    cached in an .npz under ``args.cache_dir``, keyed by the initial states
    themselves so that a change of the system's preparation is never served
    stale data."""
    X0_train = system.sample_initial(
        args.n_train, random_state=args.seed, microstates="shared"
    )
    X0_test = system.sample_initial(
        args.n_test, random_state=args.seed + 1, microstates="shared"
    )
    digest = hashlib.sha1(X0_train.tobytes() + X0_test.tobytes())
    digest.update(
        json.dumps(dict(n_steps=args.steps, dt=args.dt, engine=system.engine)).encode()
    )
    tag = digest.hexdigest()[:8]
    path = os.path.join(
        args.cache_dir,
        f"lj_temperature_{system.n_atoms}at_{args.n_train}+{args.n_test}traj_"
        f"{args.steps}steps_{tag}.npz",
    )
    if os.path.exists(path):
        with np.load(path) as data:
            print(f"data: loaded {path}", flush=True)
            return data["train"], data["test"]
    start = time.perf_counter()
    kwargs = dict(t_end=args.steps * args.dt, dt=args.dt, n_jobs=args.n_jobs)
    train = system.simulate(X0_train, dtype=np.float32, **kwargs)
    test = system.simulate(X0_test, dtype=np.float32, **kwargs)
    elapsed = time.perf_counter() - start
    os.makedirs(args.cache_dir, exist_ok=True)
    np.savez(path, train=train, test=test)
    print(
        f"data: simulated {args.n_train}+{args.n_test} trajectories x "
        f"{args.steps + 1} states with {system.engine} in {elapsed:.1f} s, "
        f"cached in {path}",
        flush=True,
    )
    return train, test


# ------------------------------------------------------------------- forces


def partial_forces_sparse(system, X, k, random_state, free_coordinates=False):
    """Algorithm 1 with ``k`` atoms per configuration, as CSR (computed on
    row chunks of the float32 ``X`` inside ``sample_partial_forces``); with
    ``free_coordinates`` also every atom's ``dr/dt = v``, and then the
    coordinates' inclusion probabilities as well."""
    return sample_partial_forces(
        system,
        X,
        p=k / system.n_particles,
        random_state=random_state,
        format="sparse",
        free_coordinates=free_coordinates,
        return_inclusion_proba=free_coordinates,
    )


def lz_rows(n_configs, n_traj, n_states, budget_configs, mode, rng):
    """Rows of the L_z training set: ``budget_configs`` random configurations,
    or enough whole random trajectories to match that budget."""
    if mode == "configurations":
        return np.sort(rng.choice(n_configs, budget_configs, replace=False))
    n_pick = max(1, round(budget_configs / n_states))
    trajs = np.sort(rng.choice(n_traj, n_pick, replace=False))
    return (trajs[:, None] * n_states + np.arange(n_states)).ravel()


# ----------------------------------------------------------------- training


#: PyTorch's own Adam settings (``--ae-adam torch``), which ClosureAutoencoder
#: replaces by the paper's reference code's unless told otherwise.
TORCH_ADAM = {"optimizer__betas": (0.9, 0.999), "optimizer__weight_decay": 0.0}


def fit_autoencoder(system, X, args, seed, verbose=0):
    """The closure autoencoder of the common arguments (latent size, epochs,
    lambda_cond, closure_pca, Adam's settings)."""
    ae = ClosureAutoencoder(
        observables=system.observables,
        n_components=args.latent_dim,
        lambda_cond=args.lambda_cond,
        closure_pca=args.closure_pca,
        max_epochs=args.ae_epochs,
        random_state=seed,
        verbose=verbose,
        **(TORCH_ADAM if args.ae_adam == "torch" else {}),
    )
    return ae.fit(X)


def add_ae_adam_argument(parser):
    """``--ae-adam``, part of the common arguments and of scripts that take
    only some of them (read by :func:`fit_autoencoder`)."""
    parser.add_argument(
        "--ae-adam",
        choices=["reference", "torch"],
        default="reference",
        help="the autoencoder's Adam settings: the reference code's (betas "
        "(0.9, 0.95), L2 weight decay 1e-4; ClosureAutoencoder's default), or "
        "PyTorch's (0.9, 0.999, no decay), which gave a 4x larger mean L_x,p "
        "error on T over ten Fig. 3 repeats (docs/method.md, \"Adam's "
        'settings")',
    )


def dynamics_epochs(n_configs, args):
    """``--dyn-epochs``, or with ``--dyn-steps`` the epochs that give every
    training set that many optimiser steps at the estimator's default batch
    size and validation split (so that a small L_z set is not trained for a
    fraction of the steps of a large L_x,p set)."""
    if args.dyn_steps is None:
        return args.dyn_epochs
    defaults = PartialForceDynamics()
    n_train = max(1, math.floor(n_configs * (1 - defaults.validation_fraction)))
    batches = math.ceil(n_train / defaults.batch_size)
    return max(1, math.ceil(args.dyn_steps / batches))


def fit_dynamics(
    Z, F, *, latent_model, loss, epochs, seed, control, verbose=0, inclusion_proba=None
):
    dyn = PartialForceDynamics(
        latent_model=latent_model,
        loss=loss,
        control_variate=control,
        max_epochs=epochs,
        random_state=seed,
        verbose=verbose,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        return dyn.fit(Z, F, inclusion_proba=inclusion_proba)


def test_error(ae, dyn, test, dt):
    """Unsquared Eq. 43 error on T of latent RK4 rollouts (dt) against the
    ground-truth trajectories ``test`` (n, T, N)."""
    pipe = Pipeline([("ae", ae), ("dyn", dyn)])
    t = np.arange(test.shape[1]) * dt
    error, _, _ = rollout_error(pipe, t, test, dt=dt, squared=False)
    return error


def fmt(values):
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.3e}"
    return f"{values.mean():.3e} +- {values.std(ddof=0):.2e}"


# --------------------------------------------------------------------- main


def add_common_arguments(parser):
    """Options every Lennard-Jones experiment script shares (read them with
    :func:`parse_common_arguments`)."""
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--dt", type=float, default=0.001)
    parser.add_argument("--atoms-per-config", type=int, default=50)
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--ae-epochs", type=int, default=30)
    parser.add_argument(
        "--lambda-cond",
        type=float,
        default=1e-6,
        help="autoencoder condition-number weight (the library's default; "
        "with PyTorch's Adam settings 1e-4 did better, docs/method.md)",
    )
    parser.add_argument(
        "--closure-pca",
        type=float,
        default=None,
        help="ClosureAutoencoder(closure_pca=...): after training keep the "
        "closure's first-layer weight along this many leading principal "
        "directions (a fraction below 1: of the variance)",
    )
    add_ae_adam_argument(parser)
    parser.add_argument("--dyn-epochs", type=int, default=200)
    parser.add_argument(
        "--dyn-steps",
        type=int,
        default=None,
        help="optimiser steps per dynamics fit (epochs scaled to the training "
        "set, batch 512); overrides --dyn-epochs",
    )
    parser.add_argument(
        "--control-variate", choices=["none", "neighbors"], default="none"
    )
    parser.add_argument("--engine", choices=["auto", "numpy", "lammps"], default="auto")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)


def add_repeat_arguments(parser, repeats):
    """``--repeats`` and ``--first-repeat``: repeat r (counted from 1) seeds
    its masks, subsets and networks with ``--seed + 1000 r``, so a run
    with ``--first-repeat 2 --repeats 2`` makes repeats 2 and 3 of
    ``--repeats 3`` on the same data."""
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument(
        "--first-repeat",
        type=int,
        default=1,
        help="number of the first repeat (its seeds follow from it), to split "
        "the repeats over several runs on the same data",
    )


def parse_common_arguments(parser):
    """Parse, apply ``--threads``, and turn ``--control-variate none`` into the
    estimators' ``None``."""
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.closure_pca is not None and args.closure_pca >= 1:
        args.closure_pca = int(args.closure_pca)
    if args.control_variate == "none":
        args.control_variate = None
    return args


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--latent-models", nargs="+", default=["mlp"], choices=sorted(PAPER_FIG3)
    )
    add_repeat_arguments(parser, repeats=10)
    parser.add_argument("--atoms", type=int, default=800)
    parser.add_argument("--n-train", type=int, default=90)
    parser.add_argument("--n-test", type=int, default=10)
    parser.add_argument(
        "--ae-once",
        action="store_true",
        help="train the autoencoder once, shared by all repeats",
    )
    parser.add_argument(
        "--lz-subset",
        choices=["configurations", "trajectories"],
        default="configurations",
    )
    parser.add_argument("--free-velocities", action="store_true")
    add_common_arguments(parser)
    parser.add_argument("--cache-dir", default="outputs")
    parser.add_argument("--verbose", type=int, default=0)
    parser.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="seconds: start no new repeat that would likely "
        "end after this (the table reports the repeats done)",
    )
    args = parse_common_arguments(parser)

    system = make_system(args.atoms, args.engine)
    k = args.atoms_per_config
    p = k / system.n_particles
    train, test = load_or_simulate(system, args)
    n_traj, n_states, N = train.shape
    X = train.reshape(-1, N)
    K = len(X)
    budget = round(K * p)  # full-force configurations of the same force cost
    print(
        f"system: {system.n_atoms} atoms (N = {N}), engine {system.engine}; "
        f"{n_traj} train / {len(test)} test trajectories x {n_states} states; "
        f"K = {K} configurations; d = {args.latent_dim}; p = {k}/{system.n_atoms}"
        f" = {p:.4g}; control variate: {args.control_variate}",
        flush=True,
    )
    print(
        f"force budget: L_x,p {K} configs x {k} atoms = {K * k}; L_z "
        f"{args.lz_subset} with ~{budget} configs x {system.n_atoms} atoms",
        flush=True,
    )
    print(
        "autoencoder: "
        + (
            "trained ONCE, shared by all repeats"
            if args.ae_once
            else "retrained in every repeat"
        )
        + f"; lambda_cond {args.lambda_cond:g}; closure_pca {args.closure_pca}"
        + f"; Adam settings: {args.ae_adam}",
        flush=True,
    )

    losses = ["z", "partial"] + (["free"] if args.free_velocities else [])
    results = {m: {loss: [] for loss in losses} for m in args.latent_models}
    ae = None
    run_start = time.perf_counter()
    done = 0
    ae_once_time = 0.0
    for r in range(args.repeats):
        elapsed = time.perf_counter() - run_start
        # Predicted end of the next repeat (a shared autoencoder's one-off
        # training time is not part of a repeat's cost).
        per_repeat = (elapsed - ae_once_time) / done if done else 0.0
        if args.time_budget and done and elapsed + per_repeat > args.time_budget:
            print(
                f"time budget {args.time_budget:.0f} s: stopping after {done} "
                "repeat(s)",
                flush=True,
            )
            break
        seed = args.seed + 1000 * (r + args.first_repeat)
        rng = np.random.default_rng(seed)
        times = {}
        if ae is None or not args.ae_once:
            start = time.perf_counter()
            ae = fit_autoencoder(system, X, args, seed, args.verbose)
            times["ae"] = time.perf_counter() - start
            if args.ae_once:
                ae_once_time = times["ae"]
        Z = ae.transform(X)

        start = time.perf_counter()
        F_p = partial_forces_sparse(system, X, k, seed)
        rows = lz_rows(K, n_traj, n_states, budget, args.lz_subset, rng)
        F_z = system.forces(X[rows])
        times["forces"] = time.perf_counter() - start
        data = {"z": (Z[rows], F_z, None), "partial": (Z, F_p, None)}
        if args.free_velocities:
            # The same atoms as F_p (same seed), plus every atom's velocity.
            data["free"] = (Z, *partial_forces_sparse(system, X, k, seed, True))

        for model in args.latent_models:
            for loss in losses:
                Zl, Fl, proba = data[loss]
                start = time.perf_counter()
                dyn = fit_dynamics(
                    Zl,
                    Fl,
                    latent_model=model,
                    loss="z" if loss == "z" else "partial",
                    epochs=dynamics_epochs(len(Zl), args),
                    seed=seed,
                    control=None if loss == "z" else args.control_variate,
                    verbose=args.verbose,
                    inclusion_proba=proba,
                )
                fit_time = time.perf_counter() - start
                error = test_error(ae, dyn, test, args.dt)
                results[model][loss].append(error)
                times[f"{model}/{loss}"] = fit_time
                print(
                    f"repeat {r + args.first_repeat} {MODEL_NAMES[model]:>10} "
                    f"{loss:>7}: error on T = {error:.3e} "
                    f"(fit {fit_time:.1f} s, {len(Zl)} configs)",
                    flush=True,
                )
        print(
            f"repeat {r + args.first_repeat} times (s): "
            + ", ".join(f"{name} {value:.1f}" for name, value in times.items()),
            flush=True,
        )
        done += 1

    print()
    print(
        f"Test error on T (unsquared Eq. 43, {len(test)} test trajectories, "
        f"{done} repeat(s), mean +- std; autoencoder "
        f"{'trained once' if args.ae_once else 'retrained per repeat'})"
    )
    header = f"{'model':>10} {'loss':>16} {'this run':>24} {'paper Fig. 3':>24}"
    print(header)
    print("-" * len(header))
    label = {"z": "L_z", "partial": "L_x,p", "free": "L_x,p + free v"}
    for model in args.latent_models:
        for loss in losses:
            paper = PAPER_FIG3[model].get(loss)
            paper_text = f"{paper[0]:.3e} +- {paper[1]:.2e}" if paper else "-"
            print(
                f"{MODEL_NAMES[model]:>10} {label[loss]:>16} "
                f"{fmt(results[model][loss]):>24} {paper_text:>24}"
            )


if __name__ == "__main__":
    main()
