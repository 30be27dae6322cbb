// fusedloss — umbrella header. Plain C++17; no CUDA headers needed.
#pragma once

#include "fusedloss/api.hpp"
#include "fusedloss/float16.hpp"
#include "fusedloss/types.hpp"
#include "fusedloss/version.hpp"
