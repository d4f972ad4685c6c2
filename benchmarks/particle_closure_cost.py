"""Cost per configuration of the particle-set closure against today's MLP
closure, at module level (no estimator), on Lennard-Jones states.

What it measures
----------------
For each size (``--sizes``, density 0.8), on relaxed independent states
(``LennardJones(n_atoms=n).sample_initial(...)``, cached as .npy under
``--cache-dir``; at 51,200 atoms each takes a few minutes to relax), in
milliseconds per configuration, the best of ``--repeats`` runs:

* statistics pass, in chunks of ``--chunk`` rows: the encoder's
  ``jacobian(x)`` cast to float64 as the pass does (particle: the features
  and the head's Jacobian; MLP:
  ``jacobian(x, frozen)`` of ``ClosureAutoencoderModule(observables=
  lj.observables, n_observables=1)``; both with ``--latent-dim`` latent
  coordinates, 32 by default, the Lennard-Jones experiments' MLP's), then
  ``columns`` at the 6 coordinates of 50 random atoms (for the particle
  closure this forms its k rows ``(F^T rho'^T)^T`` once), ``gram()`` and
  ``matvec`` of one vector (the velocities in the position slots, as free
  forces);
* training: ``features`` is what the particle closure pays once per state
  and fit (the MLP's row is its forward pass); a step on ``--batch`` rows
  (particle: on the rows ``(T, s(x))``, head, decoder, reconstruction of
  the standardised features, backward; MLP: its forward, decoder and
  reconstruction of the standardised state, backward), and one
  condition-number row (particle: from a precomputed Gram matrix of
  ``[J_o; F]``; MLP: the encoder's ``J J^T``), kappa, backward. An epoch is
  a step plus ``--cond-fraction`` condition-number rows per configuration
  (the autoencoder's default: 32 of 256). ``pool gram`` is the particle
  closure's one-time Gram matrix of ``[J_o; F]`` per pool state (128 pool
  states per fit at the default ``cond_batch_size``).

Ratios MLP / particle above 1 mean the particle closure is cheaper.

The particle closure has its defaults unless ``--n-radial`` is given; the
Lennard-Jones experiments run it with ``--latent-dim 8 --n-radial 8``.

Run (single thread, the three sizes of the issue, on cached trajectories)::

    python benchmarks/particle_closure_cost.py --sizes 800 6400 51200 --threads 1 \\
        --trajectory traj_{n}.npy
"""

import argparse
import os
import resource
import time

import numpy as np
import torch

from skmacro.nn import ClosureAutoencoderModule, MLPClosure
from skmacro.nn.autoencoder import condition_number
from skmacro.systems import LennardJones

N_COMPUTED = 50


def best(fn, repeats):
    """Best wall time of ``repeats`` calls after a warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def states(n, count, cache_dir, trajectory=None):
    if trajectory:
        return np.load(trajectory.format(n=n))[:count].astype(np.float32)
    path = os.path.join(cache_dir, f"lj_states_{n}.npy")
    if os.path.exists(path):
        X = np.load(path)
        if len(X) >= count:
            return X[:count]
    start = time.perf_counter()
    X = LennardJones(n_atoms=n).sample_initial(count, random_state=0)
    X = X.astype(np.float32)
    print(f"relaxed {count} states of {n} atoms in {time.perf_counter() - start:.0f} s")
    os.makedirs(cache_dir, exist_ok=True)
    np.save(path, X)
    return X


def rows(X, count):
    return torch.as_tensor(np.tile(X, (-(-count // len(X)), 1))[:count])


def condition_row_loss(J_closure_gram, J_closure_matvec, lj, x):
    """(kappa - 1)^2 of [J_o; J_c] formed as the autoencoder forms it."""
    xg = x.clone().requires_grad_(True)
    J_o = torch.autograd.grad(lj.observables(xg).sum(), xg)[0][:, None, :]
    G_co = J_closure_matvec(J_o.transpose(1, 2))  # (B, k, 1)
    top = torch.cat([J_o @ J_o.transpose(1, 2), G_co.transpose(1, 2)], dim=2)
    G = torch.cat([top, torch.cat([G_co, J_closure_gram()], dim=2)], dim=1)
    return ((condition_number(G) - 1) ** 2).mean()


def measure(n, args):
    X = states(n, args.states, args.cache_dir, args.trajectory)
    lj = LennardJones(n_atoms=n)
    N = 6 * n
    repeats = args.repeats if n <= 6400 else 1
    generator = torch.Generator().manual_seed(0)
    batch, chunk = rows(X, args.batch), rows(X, args.chunk)
    cond_rows = batch[: args.cond_rows]
    atoms = [torch.randperm(n, generator=generator)[:N_COMPUTED] for _ in chunk]
    index = torch.stack([(6 * a)[:, None] + torch.arange(6) for a in atoms])
    index = index.reshape(len(chunk), -1)
    velocities = chunk.view(len(chunk), n, 6)[..., 3:]
    v = torch.cat([velocities, torch.zeros_like(velocities)], -1).reshape(len(chunk), N)
    v = v.double()  # the statistics pass works in float64
    t = {}

    torch.manual_seed(0)
    closure_params = {} if args.n_radial is None else {"n_radial": args.n_radial}
    closure = lj.particle_closure(**closure_params).build(N, args.latent_dim - 1)
    closure.prepare(lambda: iter([torch.as_tensor(X)]))
    module_p = ClosureAutoencoderModule(
        observables=lj.observables,
        n_observables=1,
        closure=closure,
        decoder_hidden=(64, 64),
        activation="softplus",
    )
    with torch.no_grad():
        t["p features"] = best(lambda: closure.features(chunk), repeats)
        J = module_p.jacobian(chunk).to(torch.float64)
        t["p jacobian"] = best(
            lambda: module_p.jacobian(chunk).to(torch.float64), repeats
        )

        def columns():
            # The closure's k rows are formed at the first product.
            module_p.jacobian(chunk).to(torch.float64).columns(index)

        t["p columns"] = best(columns, repeats) - t["p jacobian"]
        J.columns(index)
        t["p gram"] = best(lambda: J.gram(), repeats)
        t["p matvec"] = best(lambda: J.matvec(v), repeats)
        # One-time per pool state: the Gram matrix of [J_o; F].
        F = closure.feature_jacobian(cond_rows)
        t["p pool gram"] = best(lambda: F.gram(), repeats) * len(chunk) / len(cond_rows)
        s_batch = closure.features(batch)
        Y = torch.cat([lj.observables(batch), s_batch], dim=1)
        G = torch.eye(1 + closure.feature_width).expand(len(cond_rows), -1, -1)
        s_cond = s_batch[: len(cond_rows)]

    def particle_step():
        target = closure.target_from_features(Y[:, 1:])
        (
            module_p.decode_target(module_p.encode_features(Y)) - target
        ).square().mean().backward()

    def particle_cond():
        kappa = condition_number(module_p.gram_from_features(G, s_cond))
        ((kappa - 1) ** 2).mean().backward()

    t["p step"] = best(particle_step, repeats) * len(chunk) / len(batch)
    t["p cond row"] = best(particle_cond, repeats) * len(chunk) / len(cond_rows)

    torch.manual_seed(0)
    mlp = MLPClosure((64, 64)).build(N, args.latent_dim - 1)
    module = ClosureAutoencoderModule(
        observables=lj.observables,
        n_observables=1,
        closure=mlp,
        decoder_hidden=(64, 64),
        activation="softplus",
    )
    with torch.no_grad():
        frozen = mlp.frozen()
        t["m features"] = best(lambda: module.encode(chunk), repeats)
        F = module.jacobian(chunk, frozen).to(torch.float64)
        t["m jacobian"] = best(
            lambda: module.jacobian(chunk, frozen).to(torch.float64), repeats
        )
        t["m columns"] = best(lambda: F.columns(index), repeats)
        t["m gram"] = best(lambda: F.gram(), repeats)
        t["m matvec"] = best(lambda: F.matvec(v), repeats)

    def mlp_step():
        (module(batch) - mlp.target(batch)).square().mean().backward()

    def mlp_cond():
        kappa = condition_number(module.jacobian(cond_rows).gram())
        ((kappa - 1) ** 2).mean().backward()

    t["m step"] = best(mlp_step, repeats) * len(chunk) / len(batch)
    t["m cond row"] = best(mlp_cond, repeats) * len(chunk) / len(cond_rows)
    per = {key: value / len(chunk) for key, value in t.items()}
    for p in "pm":
        per[f"{p} stats"] = sum(
            per[f"{p} {part}"] for part in ("jacobian", "columns", "gram", "matvec")
        )
        per[f"{p} epoch"] = per[f"{p} step"] + args.cond_fraction * per[f"{p} cond row"]
    print(
        f"\n{n} atoms (N = {N}), d = {args.latent_dim}, P = "
        f"{closure.feature_width} features, {torch.get_num_threads()} thread(s), "
        "ms/configuration"
    )
    print(f"{'':12s} {'particle':>10s} {'MLP':>10s} {'MLP/particle':>13s}")
    per["m pool gram"] = 0.0
    for key in ["features", "jacobian", "columns", "gram", "matvec", "stats"]:
        p, m = per["p " + key], per["m " + key]
        print(f"{key:12s} {1e3 * p:10.2f} {1e3 * m:10.2f} {m / p:13.3g}")
    for key in ["step", "cond row", "epoch", "pool gram"]:
        p, m = per["p " + key], per["m " + key]
        print(f"{key:12s} {1e3 * p:10.2f} {1e3 * m:10.2f} {m / p:13.3g}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS so far {peak:.2f} GiB", flush=True)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[800, 6400])
    parser.add_argument("--states", type=int, default=2, help="distinct states")
    parser.add_argument("--latent-dim", type=int, default=32, help="d of both encoders")
    parser.add_argument(
        "--n-radial",
        type=int,
        default=None,
        help="the particle closure's radial functions (default: the closure's)",
    )
    parser.add_argument("--chunk", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--cond-rows", type=int, default=4)
    parser.add_argument("--cond-fraction", type=float, default=32 / 256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cache-dir", default="outputs")
    parser.add_argument(
        "--trajectory",
        default=None,
        help="states from a .npy file of shape (count, 6 n), '{n}' the size",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for n in args.sizes:
        measure(n, args)


if __name__ == "__main__":
    main()
