// SPDX-License-Identifier: MIT
// effattn::tome umbrella: token merging (ToMe) and ToMe for diffusion.
//   matching.hpp      bipartite soft matching -> MergePlan (+ threshold, explicit partition)
//   merge.hpp         merge (mean/sum/amax), merge_wavg, merge_source(+_map), restore_order, unmerge
//   proportional.hpp  proportional attention (+ log size per key) on the tiled engine
//   schedule.hpp      parse_r (constant, (r, inflect), list), tokens_after_layers
//   diffusion.hpp     ToMe for diffusion: random2d partition and matching
// The method only: a timm-style ViT encoder with ToMe placed as in the
// official patch is a model, effattn/models/vit_tome.hpp (effattn::models).
#pragma once

#include "diffusion.hpp"
#include "matching.hpp"
#include "merge.hpp"
#include "proportional.hpp"
#include "schedule.hpp"
