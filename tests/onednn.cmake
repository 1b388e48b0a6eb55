# tests/onednn.cmake — the oneDNN backend (linalg/onednn.c; docs/determinism.md,
# "The oneDNN backend"). The tests skip with exit 77 and a message when this
# build has no oneDNN backend (libdnnl-dev not installed, SLICEPIPE_ONEDNN=OFF)
# or this CPU cannot run it (no AVX2).
#
#   onednn_ops  tests/test_onednn.c: sgemm against float64 and against the cpu
#               backend (f32, and bf16 where the CPU has it), its bits at 1, 2
#               and 3 threads, no OpenMP threads, the registry and identity;
#               onednn_ops_avx2 runs it at oneDNN's AVX2 kernels.

add_executable(test_onednn ${CMAKE_SOURCE_DIR}/tests/test_onednn.c)
target_link_libraries(test_onednn PRIVATE slicepipe_core)
add_test(NAME onednn_ops COMMAND test_onednn)
set_tests_properties(onednn_ops PROPERTIES LABELS "backend;unit;onednn" SKIP_RETURN_CODE 77 TIMEOUT 300)
# The same at oneDNN's AVX2 kernels (what an explicit backend = "onednn" runs
# on an AVX2-only CPU), where bf16 must be refused.
add_test(NAME onednn_ops_avx2 COMMAND test_onednn)
set_tests_properties(onednn_ops_avx2 PROPERTIES LABELS "backend;unit;onednn" SKIP_RETURN_CODE 77 TIMEOUT 300
                     ENVIRONMENT "ONEDNN_MAX_CPU_ISA=AVX2")

