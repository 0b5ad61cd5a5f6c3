// SPDX-License-Identifier: MIT
// effattn::star: STAR (Thomas et al., Liquid AI, ICLR 2025), part 1: the LIV
// operators for inference (liv_operators.hpp), the integer genome with its
// analytic cost model (genome.hpp), NSGA-II (nsga2.hpp), the genome
// compiled to a model (model.hpp) and the search objectives (objectives.hpp). See docs/star.md.
// Not part of effattn.hpp (the attention operators); include this header.
#pragma once

#include "genome.hpp"
#include "liv_operators.hpp"
#include "model.hpp"
#include "nsga2.hpp"
#include "objectives.hpp"
