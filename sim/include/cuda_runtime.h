// fusedloss emulated device — stands in for the CUDA toolkit's cuda_runtime.h when the project is
// built with -DFUSEDLOSS_DEVICE=emulated (this folder comes ahead of the toolkit's include folder).
//
// The C runtime API is the toolkit's own declaration (cuda_runtime_api.h, driver_types.h: the
// real types and error codes); sim/src implements it on the CPU. What the toolkit's
// cuda_runtime.h adds for nvcc — the device language and the C++ template overloads — comes from
// fusedloss_sim/device.hpp and fusedloss_sim/runtime_templates.hpp.
#pragma once

#include <cuda_runtime_api.h>
#include <math_constants.h>
#include <vector_functions.h>
#include <vector_types.h>

#include "fusedloss_sim/device.hpp"
#include "fusedloss_sim/runtime_templates.hpp"
