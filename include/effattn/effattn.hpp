// SPDX-License-Identifier: MIT
// effattn: efficient attention operators for CPU inference. The only include
// users of the operators need; the demonstration models built from them are in
// <effattn/models/models.hpp>.
#pragma once

#include "core/config.hpp"
#include "core/error.hpp"
#include "core/executor.hpp"
#include "core/half.hpp"
#include "core/isa.hpp"
#include "core/view.hpp"
#include "attention/engine.hpp"
#include "attention/materialized.hpp"
#include "attention/options.hpp"
#include "attention/policies.hpp"
#include "attention/reference.hpp"
#include "interop/eigen.hpp"
#include "nn/layers.hpp"
#include "perceiver_ar/perceiver_ar.hpp"
#include "selective/selective.hpp"
#include "tome/tome.hpp"
#include "transfusion/transfusion.hpp"
