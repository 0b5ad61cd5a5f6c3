// SPDX-License-Identifier: MIT
// effattn::perceiver_ar: the Perceiver AR family in one include.
//
//   masks.hpp      latent positions (the official -1 convention), the encoder
//                  and processor masks as engine policies, dense oracles
//   attention.hpp  cross_attention (M latents -> N inputs, causal) and
//                  latent_attention (causal among latents), + references
//   model.hpp      a complete inference network (Model::forward)
//   decoder.hpp    cached decoding with fixed-size memory (Decoder)
#pragma once

#include "masks.hpp"
#include "attention.hpp"
#include "model.hpp"
#include "decoder.hpp"
