// SPDX-License-Identifier: MIT
// effattn::models: the demonstration models built from the methods (random
// weights, for examples, benchmarks and end-to-end tests). Not part of
// effattn.hpp, which holds the operators only.
#pragma once

#include "perceiver_ar.hpp"
#include "transfusion.hpp"
#include "vit_tome.hpp"
