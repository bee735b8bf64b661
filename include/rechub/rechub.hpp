#pragma once
/// rechub: header-only engine for recall (matching) models. Include this one header.
#include "rechub/core/arena.hpp"
#include "rechub/core/error.hpp"
#include "rechub/core/parallel.hpp"
#include "rechub/core/rng.hpp"
#include "rechub/core/tensor.hpp"
#include "rechub/autograd/tape.hpp"
#include "rechub/ops/matmul.hpp"
#include "rechub/nn/module.hpp"
#include "rechub/data/dataset.hpp"
#include "rechub/data/interactions.hpp"
