# fusekit_add_test(NAME <name> SOURCES <files...> LABELS <cpu|gpu|multi-gpu...>)
# One GoogleTest executable per test file, registered with CTest under its labels.
# `gpu` tests skip themselves (GTEST_SKIP) when no GPU is present.
function(fusekit_add_test)
  cmake_parse_arguments(ARG "" "NAME" "SOURCES;LABELS" ${ARGN})
  add_executable(${ARG_NAME} ${ARG_SOURCES})
  target_link_libraries(${ARG_NAME} PRIVATE fusekit fusekit_internal fusekit_test_support)
  add_test(NAME ${ARG_NAME} COMMAND ${ARG_NAME})
  set_tests_properties(${ARG_NAME} PROPERTIES LABELS "${ARG_LABELS}")
endfunction()

# Apply fusekit's CUDA flags to a target that compiles .cu files.
function(fusekit_cuda_target target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:${FUSEKIT_CUDA_GENCODE}>
    $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr>
    $<$<COMPILE_LANGUAGE:CUDA>:-Xptxas=-warn-spills>
    $<$<COMPILE_LANGUAGE:CUDA>:-lineinfo>)
endfunction()
