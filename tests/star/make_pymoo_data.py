#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Expected data for tests/star/nsga2_test.cpp from pymoo (PyPI).

For a few fixed objective matrices (random, integer grids with ties and
duplicates, 1-3 objectives, infinities) this writes pymoo's non-dominated
sorting ranks (pymoo.util.nds.non_dominated_sorting.NonDominatedSorting) and
the crowding distances that pymoo's NSGA-II survival assigns
(pymoo.operators.survival.rank_and_crowding.RankAndCrowding, crowding "cd" =
metrics.calc_crowding_distance, computed per front) to
tests/data/golden/star/pymoo_nsga2.json. The C++ test needs no Python.

Run with a Python that has pymoo, kept outside the repository:
  python3 -m venv /opt/pymooenv && /opt/pymooenv/bin/pip install pymoo
  /opt/pymooenv/bin/python tests/star/make_pymoo_data.py

JSON cannot hold infinities: +inf / -inf are written as the strings "inf" / "-inf".
pymoo's crowding distance is the sum over objectives divided by the number of
objectives; effattn's (Deb 2002) is the sum: the test multiplies pymoo's by m.
"""
import json
import os

import numpy as np
import pymoo
from pymoo.core.population import Population
from pymoo.core.problem import Problem
from pymoo.operators.survival.rank_and_crowding import RankAndCrowding
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting


def enc(x):
    x = float(x)
    if np.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def case(name, F):
    F = np.asarray(F, dtype=float)
    fronts, rank = NonDominatedSorting().do(F, return_rank=True)
    pop = Population.new("F", F)
    # n_survive = everyone: no truncation, so no random tie-breaking is involved
    RankAndCrowding().do(Problem(n_var=1, n_obj=F.shape[1]), pop, n_survive=len(F), random_state=0)
    # Population.new keeps the order; survival returns survivors front by front,
    # but rank/crowding are set on the individuals themselves.
    cd = pop.get("crowding")
    rank2 = pop.get("rank")
    assert np.array_equal(rank, rank2), name
    return {
        "name": name,
        "F": [[enc(v) for v in row] for row in F],
        "rank": [int(r) for r in rank],
        "fronts": [[int(i) for i in f] for f in fronts],
        "crowding": [enc(c) for c in cd],
    }


def main():
    rng = np.random.default_rng(20241126)
    cases = [
        case("random_2obj_n20", rng.random((20, 2))),
        case("random_3obj_n30", rng.random((30, 3))),
        case("grid_ties_2obj_n25", rng.integers(0, 5, size=(25, 2))),
        case("grid_ties_3obj_n40", rng.integers(0, 4, size=(40, 3))),
        case("duplicates_2obj", [[1, 4], [1, 4], [2, 3], [2, 3], [3, 1], [4, 0], [4, 0], [2, 5], [5, 5]]),
        case("one_objective_n12", rng.integers(0, 6, size=(12, 1))),
        case("constant_objective_3obj", [[i, 6 - i, 2] for i in range(7)] + [[3, 4, 2], [1, 6, 2], [5, 5, 5]]),
        case("linear_front_2obj", [[i, 10 - i] for i in range(11)]),
        case("infinities_2obj", [[0, np.inf], [1, 3], [2, 2], [3, 1], [np.inf, 0], [2, np.inf], [4, 4]]),
    ]
    out = {
        "generator": "tests/star/make_pymoo_data.py",
        "pymoo": pymoo.__version__,
        "numpy": np.__version__,
        "crowding_convention": "pymoo: sum over objectives / number of objectives",
        "cases": cases,
    }
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "data", "golden", "star", "pymoo_nsga2.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1, allow_nan=False)
        f.write("\n")
    print("wrote", os.path.normpath(path))


if __name__ == "__main__":
    main()
