// SPDX-License-Identifier: MIT
// effattn::perceiver_ar: the Perceiver AR family in one include.
//
//   masks.hpp      latent positions (the official -1 convention), the encoder
//                  and processor masks as engine policies, dense oracles
//   attention.hpp  cross_attention (M latents -> N inputs, causal) and
//                  latent_attention (causal among latents), + references
//
// The demonstration network built from them (PerceiverArModel and its cached
// PerceiverArDecoder) is a model, not part of the method: models/perceiver_ar.hpp.
#pragma once

#include "masks.hpp"
#include "attention.hpp"
