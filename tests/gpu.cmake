# tests/gpu.cmake — the CUDA backend's own programs, built only when the
# backend is (SLICEPIPE_HAVE_CUDA, set by gpu/cuda.cmake). The op parity test
# backend_ops_cuda (test_backend_ops cuda, label gpu, 77 = skip) is registered
# in tests/backend.cmake.
#
# bench_cuda is no ctest test: it times ops at 7B/70B widths for
# tests/gpu/device_check.sh and needs a device (it exits 77 without one).
if(SLICEPIPE_HAVE_CUDA)
  add_executable(bench_cuda ${CMAKE_SOURCE_DIR}/tests/gpu/bench_cuda.c)
  target_link_libraries(bench_cuda PRIVATE slicepipe_core)
  # Without a device it must skip cleanly, never crash (label cudabench, not gpu:
  # the device check runs it itself, outside ctest -L gpu).
  add_test(NAME bench_cuda_skip COMMAND bench_cuda ops)
  set_tests_properties(bench_cuda_skip PROPERTIES LABELS "cudabench" SKIP_RETURN_CODE 77 TIMEOUT 300)
endif()
