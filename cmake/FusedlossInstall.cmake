# Install rules and the CMake package: find_package(fusedloss CONFIG) → fusedloss::fusedloss,
# the same target name add_subdirectory / FetchContent users get through the ALIAS.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(FUSEDLOSS_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/fusedloss)

install(TARGETS fusedloss EXPORT fusedlossTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
# Public headers only: the CUDA device headers (include/fusedloss/cuda) are installed too, for
# users who write their own kernels on top, but nothing in the public API includes them.
install(DIRECTORY include/fusedloss DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT fusedlossTargets NAMESPACE fusedloss:: DESTINATION ${FUSEDLOSS_INSTALL_CMAKEDIR})

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/fusedlossConfig.cmake.in
  ${PROJECT_BINARY_DIR}/fusedlossConfig.cmake INSTALL_DESTINATION ${FUSEDLOSS_INSTALL_CMAKEDIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/fusedlossConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/fusedlossConfig.cmake ${PROJECT_BINARY_DIR}/fusedlossConfigVersion.cmake
  DESTINATION ${FUSEDLOSS_INSTALL_CMAKEDIR})
if(TARGET fusedloss_cli)
  install(TARGETS fusedloss_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
