// SPDX-License-Identifier: MIT
// effattn::selective: selective attention (Leviathan, Kalman, Matias 2024, arXiv
// 2410.02703), umbrella header:
//   selection.hpp  options, the dense float64 reference, the memory measure
//   prefill.hpp    selective_attention(): the tiled prefill on the engine
//   kv_cache.hpp   SelectiveKVCache: decoding with a pruned KV cache
#pragma once

#include "selection.hpp"
#include "prefill.hpp"
#include "kv_cache.hpp"
