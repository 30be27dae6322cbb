# Which CUDA device the CUDA path is built for. Sets FUSEDLOSS_WITH_CUDA (the CUDA path is built)
# and FUSEDLOSS_EMULATED (it is built for the emulated device in sim/).
#   FUSEDLOSS_DEVICE=auto      nvcc when a CUDA toolkit is found, else the CPU path only
#   FUSEDLOSS_DEVICE=emulated  kernels compiled by the host compiler, run on the CPU (sim/)
#   FUSEDLOSS_DEVICE=none      the CPU path only (as FUSEDLOSS_ENABLE_CUDA=OFF)
set(FUSEDLOSS_DEVICE auto CACHE STRING "CUDA device: auto | emulated | none")
set_property(CACHE FUSEDLOSS_DEVICE PROPERTY STRINGS auto emulated none)
set(FUSEDLOSS_WITH_CUDA OFF)
set(FUSEDLOSS_EMULATED OFF)
if(FUSEDLOSS_DEVICE STREQUAL "emulated")
  set(FUSEDLOSS_WITH_CUDA ON)
  set(FUSEDLOSS_EMULATED ON)
  message(STATUS "fusedloss: CUDA path ON for the emulated device (host compiler, sim/)")
elseif(FUSEDLOSS_ENABLE_CUDA AND NOT FUSEDLOSS_DEVICE STREQUAL "none")
  if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX} AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    # Never `native`: the build machine may have no GPU. Hopper (90) and Ampere (80) by default.
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES "80;90" CACHE STRING "CUDA architectures to build for")
    endif()
    enable_language(CUDA)
    if(NOT DEFINED CMAKE_CUDA_STANDARD)
      set(CMAKE_CUDA_STANDARD 17)
      set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    endif()
    find_package(CUDAToolkit REQUIRED)
    set(FUSEDLOSS_WITH_CUDA ON)
    message(STATUS "fusedloss: CUDA path ON (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES})")
  else()
    message(STATUS "fusedloss: no CUDA compiler found, building the CPU path only")
  endif()
else()
  message(STATUS "fusedloss: CUDA disabled, building the CPU path only")
endif()

# Adds CUDA sources (kernels and the host code around them) to a target. With nvcc they are
# CUDA; for the emulated device they are C++ compiled by the host compiler, instrumented so the
# emulated device sees every memory access of the kernels (sim/src/checkers.cpp), and the target
# links the emulated runtime instead of libcudart. -fno-strict-aliasing: device code reads
# __half2 / uint4 through reinterpret_cast, as CUDA allows; ISO C++ does not.
function(fusedloss_cuda_sources target)
  target_sources(${target} PRIVATE ${ARGN})
  if(FUSEDLOSS_EMULATED)
    set_source_files_properties(${ARGN} TARGET_DIRECTORY ${target} PROPERTIES LANGUAGE CXX
      COMPILE_OPTIONS "-xc++;-fsanitize=thread;--param=tsan-instrument-func-entry-exit=0;-fno-strict-aliasing;-Wno-unknown-pragmas")
    target_link_libraries(${target} PRIVATE fusedloss::sim)
  else()
    target_link_libraries(${target} PRIVATE CUDA::cudart_static)
  endif()
endfunction()
