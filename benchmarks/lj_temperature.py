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
that this script's default includes. ``lj_published_models.py`` scores the
paper's own published models against the ground truth.

``--free-velocities`` (beyond the paper) adds a third model: positions'
derivatives dr/dt = v cost nothing, so every position coordinate is observed
(inclusion probability 1) and the interatomic forces only on the same 50
atoms (inclusion probability p); same force cost as L_x,p.

``--control-variate neighbors`` switches on the library's variance reduction
for the partial-force models; the default (none) is the paper's estimator.
``--closure-pca 200`` keeps the closure's first-layer weight only along the
200 leading principal directions of the training states
(``ClosureAutoencoder(closure_pca=200)``).

The simulated trajectories are cached (float32) in
``$SKMACRO_DATA_DIR/lj_temperature_<...>.npz`` (default ``outputs/``); reruns
skip the MD.

Run (the paper's protocol; hours on 2 CPU cores)::

    python benchmarks/lj_temperature.py --latent-models mlp onsager gfinn

A quick check::

    python benchmarks/lj_temperature.py --n-train 6 --n-test 2 --steps 50 \\
        --repeats 1 --ae-epochs 2 --dyn-epochs 5
"""

import argparse
import time

from skmacro.experiments import lennard_jones as lj
from skmacro.experiments.protocol import format_mean_std
from skmacro.experiments.published import FIG3

MODEL_NAMES = {"mlp": "MLP", "onsager": "OnsagerNet", "gfinn": "GFINNs"}
LABELS = {"z": "L_z", "partial": "L_x,p", "free": "L_x,p + free v"}


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--latent-models", nargs="+", default=["mlp"], choices=sorted(FIG3)
    )
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--first-repeat",
        type=int,
        default=1,
        help="number of the first repeat (repeat r seeds its masks, subsets and "
        "networks with --seed + 1000 r), to split repeats over several runs",
    )
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
    lj.add_arguments(parser)
    parser.add_argument("--verbose", type=int, default=0)
    args = lj.parse_arguments(parser)

    system = lj.make_system(args.atoms, args.engine)
    train, test = lj.simulate_cached(
        system,
        args.n_train,
        args.n_test,
        **lj.data_settings(args),
    )
    X = train.reshape(-1, train.shape[-1])
    print(
        f"system: {system.n_atoms} atoms (N = {X.shape[1]}), engine "
        f"{system.engine}; {len(train)} train / {len(test)} test trajectories x "
        f"{train.shape[1]} states; d = {args.latent_dim}; {args.atoms_per_config} "
        f"atoms per configuration; control variate: {args.control_variate}; "
        "autoencoder "
        + ("trained once" if args.ae_once else "retrained in every repeat"),
        flush=True,
    )
    losses = ["z", "partial"] + (["free"] if args.free_velocities else [])
    errors = {(m, loss): [] for m in args.latent_models for loss in losses}
    encoder = None
    for r in range(args.first_repeat, args.first_repeat + args.repeats):
        seed = args.seed + 1000 * r
        start = time.perf_counter()
        if encoder is None or not args.ae_once:
            encoder = lj.fit_autoencoder(
                system,
                X,
                **lj.autoencoder_settings(args),
                random_state=seed,
                verbose=args.verbose,
            )
        print(
            f"repeat {r}: autoencoder {time.perf_counter() - start:.1f} s", flush=True
        )
        results = lj.temperature_comparison(
            system,
            train,
            test,
            encoder,
            latent_models=args.latent_models,
            lz_subset=args.lz_subset,
            free_velocities=args.free_velocities,
            **lj.dynamics_settings(args),
            random_state=seed,
            verbose=args.verbose,
        )
        for key, result in results.items():
            errors[key].append(result.error)

    print()
    print(
        f"Test error on T (unsquared Eq. 43, {len(test)} test trajectories, "
        f"{args.repeats} repeat(s), mean +- std)"
    )
    header = f"{'model':>10} {'loss':>16} {'this run':>24} {'paper Fig. 3':>24}"
    print(header)
    print("-" * len(header))
    for model in args.latent_models:
        for loss in losses:
            paper = FIG3[model].get(loss)
            paper_text = f"{paper[0]:.3e} +- {paper[1]:.2e}" if paper else "-"
            print(
                f"{MODEL_NAMES[model]:>10} {LABELS[loss]:>16} "
                f"{format_mean_std(errors[model, loss]):>24} {paper_text:>24}"
            )


if __name__ == "__main__":
    main()
