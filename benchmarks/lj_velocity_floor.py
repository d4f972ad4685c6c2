"""How much of a Lennard-Jones temperature curve its velocity pattern sets.

For each size, ``--placements`` fresh relaxed placements are each run with
``--draws`` velocity patterns at the same T0 (the paper's 250 steps), and the
unsquared Eq. 43 error on T between a curve and the mean curve of its
placement is printed (``lj.velocity_draw_spread``). A temperature model
that reads a state through pooled descriptors of its particles cannot
predict the part of T(t) that the velocity pattern sets beyond what those
descriptors record, so this spread is about the lowest error such a model
can reach on fresh samples (``docs/results.md``, "Generalisation to new
microstates").

Run::

    python benchmarks/lj_velocity_floor.py --sizes 800 2700 6400 \\
        --placements 20 --draws 4
"""

import argparse
import time

from skmacro.experiments import lennard_jones as lj


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[800, 2700, 6400])
    parser.add_argument("--placements", type=int, default=20)
    parser.add_argument("--draws", type=int, default=4)
    parser.add_argument("--stride", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-jobs", type=int, default=None)
    args = parser.parse_args(argv)
    print(
        f"error on T between velocity patterns of one placement and T0 "
        f"({args.placements} placements x {args.draws} patterns, every "
        f"{args.stride}th step)"
    )
    for n in args.sizes:
        start = time.perf_counter()
        spread = lj.velocity_draw_spread(
            lj.make_system(n),
            args.placements,
            args.draws,
            stride=args.stride,
            random_state=args.seed,
            n_jobs=args.n_jobs,
        )
        print(f"  {n:>6} atoms: {spread:.3e}  ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
