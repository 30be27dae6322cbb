// fusedloss — library version (kept in step with project() in CMakeLists.txt).
#pragma once

#define FUSEDLOSS_VERSION_MAJOR 0
#define FUSEDLOSS_VERSION_MINOR 1
#define FUSEDLOSS_VERSION_PATCH 0
#define FUSEDLOSS_VERSION_STRING "0.1.0"
