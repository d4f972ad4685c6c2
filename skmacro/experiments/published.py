"""The paper's published numbers (Chen & Li), as ``(mean, std)`` of the
unsquared Eq. 43 test error unless noted."""

#: Table 1, every row: system -> {loss: (mean, std)}; ``"z"`` is L_z,
#: ``"partial"`` L_x,p at the row's p (Predator-Prey 1/5, Allen-Cahn 1/25,
#: Lennard-Jones small 1/16, large 1/1024). L_z of the large Lennard-Jones
#: system was not reported.
TABLE1 = {
    "predator_prey": {"z": (3.19e-3, 0.60e-3), "partial": (1.34e-3, 0.16e-3)},
    "allen_cahn": {"z": (6.93e-3, 2.80e-3), "partial": (3.98e-3, 1.58e-3)},
    "lennard_jones_small": {"z": (4.45e-3, 2.03e-3), "partial": (1.17e-3, 0.18e-3)},
    "lennard_jones_large": {"partial": (4.96e-3, 0.56e-3)},
}

#: Table 2 (Predator-Prey): equivalent full-force training size -> column ->
#: (mean, std); columns ``"x"`` (L_x) and the L_x,p inclusion probabilities.
TABLE2_COLUMNS = ("x", "3/4", "1/2", "1/4", "1/5")
_TABLE2_ROWS = {
    600: [(1.09e-2, 0.57e-2), (1.79e-2, 1.11e-2), (9.22e-3, 4.46e-3),
          (3.50e-3, 1.33e-3), (4.00e-3, 1.78e-3)],
    1500: [(4.70e-3, 0.46e-3), (4.56e-3, 1.97e-3), (3.30e-3, 1.60e-3),
           (2.19e-3, 0.57e-3), (1.92e-3, 0.47e-3)],
    3000: [(2.90e-3, 1.63e-3), (2.07e-3, 0.41e-3), (1.57e-3, 0.45e-3),
           (1.23e-3, 0.16e-3), (1.34e-3, 0.20e-3)],
    6000: [(1.24e-3, 0.16e-3), (1.07e-3, 0.18e-3), (1.46e-3, 0.59e-3),
           (9.08e-4, 0.25e-4), (1.13e-3, 0.31e-3)],
    12000: [(9.20e-4, 2.30e-4), (8.13e-4, 0.64e-4), (8.23e-4, 0.13e-4),
            (7.66e-4, 3.14e-4), (8.36e-4, 1.94e-4)],
    24000: [(6.76e-4, 0.93e-4), (6.85e-4, 0.95e-4), (6.98e-4, 1.20e-4),
            (5.64e-4, 0.18e-4), (5.70e-4, 1.00e-4)],
}  # fmt: skip
TABLE2 = {
    size: dict(zip(TABLE2_COLUMNS, row, strict=True))
    for size, row in _TABLE2_ROWS.items()
}

#: Table 3 (Predator-Prey, L_x,p with p = 1/5, mean over three repeats; no
#: std printed): lambda_cond -> error.
TABLE3 = {
    0.0: 6.42e-2,
    1e-8: 2.62e-3,
    1e-7: 2.84e-3,
    1e-6: 8.36e-4,
    1e-5: 3.66e-3,
    1e-4: 2.60e-3,
    1e-2: 4.24e-3,
}

#: Fig. 3 (Lennard-Jones, 800 atoms, p = 1/16, ten repeats): latent model ->
#: loss -> (mean, std).
FIG3 = {
    "mlp": {"z": (2.60e-2, 1.01e-2), "partial": (1.34e-3, 0.26e-3)},
    "onsager": {"z": (4.45e-3, 2.03e-3), "partial": (1.17e-3, 0.18e-3)},
    "gfinn": {"z": (1.28e-2, 0.74e-2), "partial": (2.84e-3, 0.99e-3)},
}

#: Fig. 4: the tolerance on the test error at which force computations are
#: counted, and the system sizes.
FIG4_E_TOL = 3e-3
FIG4_SIZES = (800, 2700, 6400, 21600)
