// SPDX-License-Identifier: MIT
// effattn::star: every LIV operator (one include).
//
//   class (STAR)         type                                   header
//   1 SA-1               SoftmaxAttention(AttentionConfig::sa1) liv_attention.hpp
//   2 SA-2               SoftmaxAttention(AttentionConfig::sa2) liv_attention.hpp
//   3 SA-3               SoftmaxAttention(AttentionConfig::sa3) liv_attention.hpp
//   4 SA-4               SoftmaxAttention(AttentionConfig::sa4) liv_attention.hpp
//   5 Rec-1              Recurrence(RecurrenceConfig::rec1)     liv_recurrence.hpp
//   6 Rec-2              Recurrence(RecurrenceConfig::rec2)     liv_recurrence.hpp
//   7 GConv-1            ShortConv                              liv_conv.hpp
//   8 GConv-2            LongConv                               liv_longconv.hpp
//   9 GMemless           SwiGLU                                 liv_mlp.hpp
//   10-17 differential   Differential<Op> of classes 1-8        liv_differential.hpp
//
// The contract every operator follows is in liv.hpp.
#pragma once

#include "liv.hpp"
#include "liv_attention.hpp"
#include "liv_conv.hpp"
#include "liv_differential.hpp"
#include "liv_longconv.hpp"
#include "liv_mlp.hpp"
#include "liv_recurrence.hpp"
