"""Per-profile sizes of the book's own experiments that belong to no library module.

Read with :func:`dmmlib.profiles.by_profile`, e.g. ``by_profile(MATCHING_CHAPTERS)``.
"""

#: Part I, chapters 1 (the matching problem) and 2 (projections).
#:
#: * ``lp_checks`` -- random cost matrices on which the LP relaxation (HiGHS) is compared
#:   with the Hungarian method and tested for integrality (chapter 1);
#: * ``lp_max_n`` / ``lp_max_m`` -- largest number of templates / proposals of those problems;
#: * ``coin_examples`` -- seeds of the coins scene on which greedy and Hungarian are compared;
#: * ``unimodularity_samples`` -- random square submatrices of the constraint matrix whose
#:   determinant is checked to lie in {-1, 0, 1};
#: * ``projection_examples`` -- random matrices X on which Dykstra and alternating projections
#:   are measured against the exact projection (chapter 2);
#: * ``max_n_proj`` -- the largest number of projection rounds N_proj on those curves (Dykstra's
#:   slowest examples need a few hundred rounds to come within 1e-6 of the projection).
MATCHING_CHAPTERS = {
    "smoke": {"lp_checks": 25, "lp_max_n": 5, "lp_max_m": 8, "coin_examples": 3,
              "unimodularity_samples": 300, "projection_examples": 3, "max_n_proj": 200},
    "cpu": {"lp_checks": 400, "lp_max_n": 8, "lp_max_m": 16, "coin_examples": 20,
            "unimodularity_samples": 5000, "projection_examples": 6, "max_n_proj": 400},
    "gpu": {"lp_checks": 2000, "lp_max_n": 10, "lp_max_m": 25, "coin_examples": 50,
            "unimodularity_samples": 20000, "projection_examples": 10, "max_n_proj": 500},
}
