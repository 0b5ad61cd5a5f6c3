// SPDX-License-Identifier: MIT
// effattn::star: the synthetic tasks that rank STAR candidates by quality
// (issue 15, item 2). No LibTorch here: a task is token sequences with
// targets, produced by a seeded generator; star/torch/train.hpp trains on
// them, and the effattn inference path scores on them.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "../core/config.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace star {

/// One batch of a next-token task: `batch` sequences of `length` tokens,
/// row-major. targets[b * length + t] is the token the model must predict
/// after reading tokens[b * length + 0 .. t] (its logits row t), or -1 where
/// that position is not scored (the loss and the accuracy skip it).
struct TaskBatch {
  index_t batch = 0;
  index_t length = 0;
  std::vector<index_t> tokens;   ///< [batch * length], ids in [0, vocab)
  std::vector<index_t> targets;  ///< [batch * length], ids in [0, vocab) or -1
};

/// A seeded batch generator: the same (batch, seed) always gives the same
/// batch. Training draws seeds from its own seed; validation uses a fixed,
/// disjoint seed range.
using TaskSampler = std::function<TaskBatch(index_t batch, std::uint64_t seed)>;

}  // namespace star
EFFATTN_NAMESPACE_END
