// SPDX-License-Identifier: MIT
// effattn Transfusion (Zhou et al. 2024, arXiv 2408.11039): everything for
// mixed text / image-patch sequences.
//
//   layout.hpp        sequence layout from segments, spans or per-token arrays;
//                     per-token type, image, patch coordinates, positions; batches
//   patchify.hpp      H x W x C latent <-> (H/p)(W/p) tokens of p*p*C values
//   block_causal.hpp  key limits, block-causal attention on the tiled engine,
//                     the dense boolean mask
//   diffusion.hpp     cosine schedule, per-image noising, the t <= 500 cap,
//                     the DDPM epsilon-prediction step
//
// The demonstration transformer over mixed sequences and its cached denoising
// (TinyTransfusion, TransfusionDenoisingCache) are a model, not part of the
// method: models/transfusion.hpp.
#pragma once

#include "layout.hpp"
#include "patchify.hpp"
#include "block_causal.hpp"
#include "diffusion.hpp"
