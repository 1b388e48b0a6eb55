# tests/backend.cmake — the backend table (linalg/backend.h): every op of every
# compiled backend against float64 C references (test_backend_ops), and the
# PCA and rotations on the CPU backend (test_pca).

add_executable(test_backend_ops ${CMAKE_SOURCE_DIR}/tests/test_backend_ops.c)
target_link_libraries(test_backend_ops PRIVATE slicepipe_core)
add_test(NAME backend_ops_cpu COMMAND test_backend_ops cpu)
set_tests_properties(backend_ops_cpu PROPERTIES LABELS "backend;unit" TIMEOUT 120)

# The CUDA backend's parity run, only where it is compiled in (the gpu/ build
# defines the slicepipe_cuda target and SLICEPIPE_HAVE_CUDA, which must reach
# test_backend_ops.c through slicepipe_core's compile definitions). Exit 77
# (no usable device) is a skip.
if(TARGET slicepipe_cuda OR SLICEPIPE_HAVE_CUDA)
  add_test(NAME backend_ops_cuda COMMAND test_backend_ops cuda)
  set_tests_properties(backend_ops_cuda PROPERTIES LABELS "backend;gpu" SKIP_RETURN_CODE 77 TIMEOUT 300)
endif()

add_executable(test_pca ${CMAKE_SOURCE_DIR}/tests/test_pca.c)
target_link_libraries(test_pca PRIVATE slicepipe_core)
add_test(NAME pca COMMAND test_pca)
set_tests_properties(pca PROPERTIES LABELS "backend;unit" TIMEOUT 60)

# Bits and the thread count under every OpenBLAS kernel this CPU can run
# (tests/test_kernels.py, docs/determinism.md): the op tests and an end-to-end
# slice at 1 and 2 threads, with OPENBLAS_CORETYPE unset and set to Prescott,
# Haswell and SkylakeX; a resume that asks for another thread count keeps the
# journaled one.
add_test(NAME backend_kernels
         COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_kernels.py $<TARGET_FILE:slicepipe>
                 $<TARGET_FILE:test_backend_ops> ${CMAKE_BINARY_DIR}/test_out/kernels ${SP_SHARED_DIR})
set_tests_properties(backend_kernels PROPERTIES TIMEOUT 900 LABELS "backend;kernels")

# OpenBLAS's kernels with nothing set (linalg/blas_core.h, tests/test_blas_core.py):
# `slicepipe --version` and a slice name this CPU's best core with
# OPENBLAS_CORETYPE unset and set to Prescott; 77 (skip) on a CPU with
# neither AVX2 nor AVX-512.
foreach(mode unset prescott)
  add_test(NAME blas_core_${mode}
           COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_blas_core.py $<TARGET_FILE:slicepipe> ${mode}
                   ${CMAKE_BINARY_DIR}/test_out/blas_core_${mode})
  set_tests_properties(blas_core_${mode} PROPERTIES LABELS "backend" SKIP_RETURN_CODE 77 TIMEOUT 120)
endforeach()

# Benches built with the project so they keep building (no ctest test):
# bench/kernel_peaks (plain OpenBLAS and LAPACKE, as bench/floor_bench.sh
# compiles it).
add_executable(kernel_peaks ${CMAKE_SOURCE_DIR}/bench/kernel_peaks.c ${CMAKE_SOURCE_DIR}/linalg/blas_core.c)
target_include_directories(kernel_peaks PRIVATE ${CMAKE_SOURCE_DIR}/linalg)
target_link_libraries(kernel_peaks PRIVATE PkgConfig::OPENBLAS PkgConfig::LAPACKE ${MATH_LIB})
# bench/cov_bench: the CPU backend's cov_add at a job's shape (docs/algorithm.md §3 quotes it).
add_executable(cov_bench ${CMAKE_SOURCE_DIR}/bench/cov_bench.c)
target_link_libraries(cov_bench PRIVATE slicepipe_core)

# The CPU backend's vector expf (linalg/cpu_exp.c) equals glibc's expf bit for
# bit on every float of |x| <= 87 and on the special values; 77 (skip) where
# the CPU runs the scalar expf only.
add_executable(test_cpu_exp ${CMAKE_SOURCE_DIR}/tests/test_cpu_exp.c)
target_link_libraries(test_cpu_exp PRIVATE slicepipe_core)
target_include_directories(test_cpu_exp PRIVATE ${CMAKE_SOURCE_DIR}/linalg)
add_test(NAME cpu_exp COMMAND test_cpu_exp)
set_tests_properties(cpu_exp PROPERTIES LABELS "backend;unit" SKIP_RETURN_CODE 77 TIMEOUT 300)
