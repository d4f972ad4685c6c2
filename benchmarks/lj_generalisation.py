"""Generalisation of a Lennard-Jones temperature model to new microstates.

Trains on ``--train`` trajectories of 800 atoms, each from its own random
placement and velocity draw (``microstates="independent"``), and tests on
``--test`` fresh placements drawn with another seed. Every model sees the
states every ``--stride`` steps (dt 0.001, 250 steps) with forces on
``--atoms`` atoms per configuration (L_x,p; with ``--free-velocities`` also
every atom's ``dr/dt = v``, which costs no force computation);
``d = --latent-dim``. ``--all-forces`` (a diagnostic off the issue's
budget) trains every model with L_z on all forces instead.

Printed, as the unsquared Eq. 43 error on T over the test trajectories:

* the particle-set closure (``LennardJones.particle_closure()``), an
  invariant feature closure trained on its features computed once;
* (a) the mean curve: each test T(t) predicted as T0 times the training
  mean of T(t)/T0;
* (b) the MLP closure (the library default) on the same data and budget;
* (c) the hand-made invariant latent (T, U/n, (dU/dt)/n): an MLP vector
  field fitted to finite-difference derivatives of the training curves
  (all forces, so not on the partial-force budget), rolled out with RK4;
* a diagnostic, not a model: each test curve predicted directly from the
  particle closure's pooled features of its initial state by kernel ridge
  regression on the training curves (no latent model, no rollout; the
  trained horizon only), which shows how much of the curves the features
  carry;

and, with ``--shared``, the particle closure trained on one shared family
(the paper's protocol, ``--train`` trajectories) and tested on the same
fresh placements (an extrapolation).

With ``--transfer-sizes``, the size transfer: for each size, ``--test``
fresh placements of that many atoms (same density and T0 range), the
800-atom particle model's error on them (through the ordinary
``transform`` and rollout calls) beside a particle model trained at that
size on ``--transfer-train`` placements with the same settings, and the
mean curve of those placements.

Run::

    python benchmarks/lj_generalisation.py --train 80 --test 20 --stride 10

    python benchmarks/lj_generalisation.py --train 80 --test 10 --stride 10 \\
        --free-velocities --no-mlp --no-invariant --transfer-sizes 2700 6400
"""

import argparse
import time

import numpy as np
import torch
from sklearn.pipeline import Pipeline

from skmacro import ClosureAutoencoder, PartialForceDynamics
from skmacro.experiments import lennard_jones as lj
from skmacro.metrics import rollout_error


def fit_model(system, X, forces, closure, args, log):
    """Autoencoder and L_x,p dynamics on the states ``X``; a Pipeline."""
    start = time.perf_counter()
    params = dict(
        observables=system.observables,
        n_components=args.latent_dim,
        max_epochs=args.ae_epochs,
        random_state=args.seed,
    )
    if closure is not None:
        params.update(closure=closure, lr=args.ae_lr)
    ae = ClosureAutoencoder(**params).fit(X)
    ae_seconds = time.perf_counter() - start
    start = time.perf_counter()
    dyn = PartialForceDynamics(
        loss="z" if args.all_forces else "partial",
        control_variate=lj.resolve_control_variate(
            system, None if args.control_variate == "none" else args.control_variate
        ),
        random_state=args.seed,
    )
    if args.dynamics_min_steps is not None:
        dyn.set_params(min_steps=args.dynamics_min_steps)
    if args.free_velocities and not args.all_forces:
        F, proba = forces
        dyn.fit(ae.transform(X), F, inclusion_proba=proba)
    else:
        dyn.fit(ae.transform(X), forces)
    log(
        f"    autoencoder {ae_seconds:.1f} s, dynamics (statistics pass and "
        f"training) {time.perf_counter() - start:.1f} s, kappa "
        f"{ae.condition_number_:.3g}"
    )
    return Pipeline([("ae", ae), ("dyn", dyn)])


def placements(system, n_train, n_test, args, log):
    """Independent-placement training and test trajectories, every
    ``--stride``-th state; and their states as rows."""
    train, test = lj.simulate_cached(
        system,
        n_train,
        n_test,
        seed=args.seed,
        cache=args.cache_dir,
        log=log,
        microstates="independent",
    )
    train, test = train[:, :: args.stride], test[:, :: args.stride]
    return train, test, train.reshape(-1, train.shape[2])


def observed_forces(system, X, args):
    """The forces the models train on: all (``--all-forces``) or on
    ``--atoms`` atoms per configuration."""
    if args.all_forces:
        return system.forces(X)
    return lj.partial_forces(
        system, X, args.atoms, args.seed, free_coordinates=args.free_velocities
    )


def size_transfer(pipe, sizes, t, dt, args, log):
    """Error on T of ``pipe`` (trained at ``--atoms-total``) on fresh
    placements of each size, beside a model trained at that size and the
    mean curve of its training placements."""
    results = {}
    for n in sizes:
        system = lj.make_system(n)
        start = time.perf_counter()
        train, test, X = placements(system, args.transfer_train, args.test, args, log)
        log(f"  {n} atoms: data {time.perf_counter() - start:.0f} s")
        mean_curve, _ = lj.mean_curve_error(
            lj.temperature_curves(system, train), lj.temperature_curves(system, test)
        )
        transferred, *_ = rollout_error(pipe, t, test, dt=dt / 5)
        log(f"  {args.atoms_total} -> {n} atoms: {transferred:.3e}")
        closure = system.particle_closure(n_radial=args.n_radial)
        own = fit_model(system, X, observed_forces(system, X, args), closure, args, log)
        trained_there, *_ = rollout_error(own, t, test, dt=dt / 5)
        log(
            f"  trained at {n} atoms ({args.transfer_train} placements): "
            f"{trained_there:.3e}"
        )
        results[n] = transferred, trained_there, mean_curve
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms-total", type=int, default=800)
    parser.add_argument("--train", type=int, default=80)
    parser.add_argument("--test", type=int, default=20)
    parser.add_argument("--stride", type=int, default=10)
    parser.add_argument("--atoms", type=int, default=50)
    parser.add_argument("--latent-dim", type=int, default=8)
    parser.add_argument("--ae-epochs", type=int, default=300)
    parser.add_argument("--ae-lr", type=float, default=1e-3)
    parser.add_argument("--n-radial", type=int, default=16)
    parser.add_argument(
        "--dynamics-min-steps",
        type=int,
        default=None,
        help="PartialForceDynamics(min_steps=...); default: the library's",
    )
    parser.add_argument(
        "--free-velocities",
        action="store_true",
        help="also observe every atom's dr/dt = v (no force computation)",
    )
    parser.add_argument(
        "--all-forces",
        action="store_true",
        help="diagnostic: every force of every configuration, loss L_z",
    )
    # The library's default, as this benchmark always had.
    lj.add_control_variate_argument(parser, default="neighbors")
    parser.add_argument("--no-mlp", action="store_true")
    parser.add_argument("--no-invariant", action="store_true")
    parser.add_argument("--shared", action="store_true")
    parser.add_argument(
        "--transfer-sizes",
        type=int,
        nargs="*",
        default=[],
        help="test the particle model on these sizes (same density)",
    )
    parser.add_argument(
        "--transfer-train",
        type=int,
        default=20,
        help="placements of the model trained at each transfer size",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    def log(message):
        print(message, flush=True)

    total = time.perf_counter()
    system = lj.make_system(args.atoms_total)
    train, test, X = placements(system, args.train, args.test, args, log)
    dt = lj.DT * args.stride
    t = np.arange(test.shape[1]) * dt
    N = X.shape[1]
    forces = observed_forces(system, X, args)
    log(
        f"{system.n_atoms} atoms, {args.train} training placements x "
        f"{train.shape[1]} states = {len(X)} configurations, "
        f"{'all forces (L_z)' if args.all_forces else f'forces on {args.atoms} atoms'}"
        f" each; {args.test} test placements; d = "
        f"{args.latent_dim}"
    )
    results = {}
    train_T, test_T = (
        lj.temperature_curves(system, train),
        lj.temperature_curves(system, test),
    )
    results["(a) mean curve"], _ = lj.mean_curve_error(train_T, test_T)
    log(f"  (a) mean curve: {results['(a) mean curve']:.3e}")

    log("  particle closure:")
    closure = system.particle_closure(n_radial=args.n_radial)
    pipe = fit_model(system, X, forces, closure, args, log)
    results["particle closure"], *_ = rollout_error(pipe, t, test, dt=dt / 5)
    log(f"  particle closure: {results['particle closure']:.3e}")
    direct = "features of x(0), kernel ridge (diagnostic)"
    results[direct] = lj.feature_regression_error(system, closure, train, test)
    log(f"  {direct}: {results[direct]:.3e}")
    if args.transfer_sizes:
        log("  size transfer:")
        transfer = size_transfer(pipe, args.transfer_sizes, t, dt, args, log)

    if not args.no_mlp:
        log("  (b) MLP closure:")
        pipe = fit_model(system, X, forces, None, args, log)
        results["(b) MLP closure"], *_ = rollout_error(pipe, t, test, dt=dt / 5)
        log(f"  (b) MLP closure: {results['(b) MLP closure']:.3e}")

    if not args.no_invariant:
        start = time.perf_counter()
        results["(c) (T, U/n, dU/dt/n)"] = lj.invariant_latent_error(
            system, train, test, dt, random_state=args.seed
        )
        log(
            f"  (c) (T, U/n, dU/dt/n): {results['(c) (T, U/n, dU/dt/n)']:.3e} "
            f"({time.perf_counter() - start:.1f} s)"
        )

    if args.shared:
        shared, _ = lj.simulate_cached(
            system, args.train, 1, seed=args.seed, cache=args.cache_dir, log=log
        )
        Xs = shared[:, :: args.stride].reshape(-1, N)
        log("  particle closure trained on one shared family:")
        pipe = fit_model(
            system,
            Xs,
            observed_forces(system, Xs, args),
            system.particle_closure(n_radial=args.n_radial),
            args,
            log,
        )
        results["shared family -> new placements"], *_ = rollout_error(
            pipe, t, test, dt=dt / 5
        )

    ours = results["particle closure"]
    log("\nerror on T (unsquared Eq. 43) on fresh placements:")
    for name, error in results.items():
        ratio = "" if name == "particle closure" else f"  ({error / ours:.2f}x ours)"
        log(f"  {name:<44} {error:.3e}{ratio}")
    if args.transfer_sizes:
        log(f"\nsize transfer, error on T on {args.test} fresh placements per size:")
        log(
            f"  {'atoms':>6}  trained at {args.atoms_total:<6} trained there"
            "    mean curve there"
        )
        for n, (transferred, trained_there, mean_curve) in transfer.items():
            log(
                f"  {n:>6}  {transferred:<16.3e} {trained_there:<16.3e}"
                f" {mean_curve:.3e}"
            )
    log(f"total {time.perf_counter() - total:.0f} s")


if __name__ == "__main__":
    main()
