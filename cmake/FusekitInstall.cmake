include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS fusekit EXPORT fusekitTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/fusekit DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
if(TARGET fusekit_cli)
  install(TARGETS fusekit_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
install(EXPORT fusekitTargets NAMESPACE fusekit:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/fusekit)

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/fusekitConfig.cmake.in
  ${PROJECT_BINARY_DIR}/fusekitConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/fusekit)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/fusekitConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/fusekitConfig.cmake ${PROJECT_BINARY_DIR}/fusekitConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/fusekit)
