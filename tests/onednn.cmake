# tests/onednn.cmake — the oneDNN backend (linalg/onednn.c; docs/determinism.md,
# "The oneDNN backend"). The tests skip with exit 77 and a message when this
# build has no oneDNN backend (libdnnl-dev not installed, SLICEPIPE_ONEDNN=OFF)
# or this CPU cannot run it (no AVX2).
#
#   onednn_ops  tests/test_onednn.c: sgemm against float64 and against the cpu
#               backend (f32, and bf16 where the CPU has it), its bits at 1, 2
#               and 3 threads, no OpenMP threads, the registry and identity;
#               onednn_ops_avx2 runs it at oneDNN's AVX2 kernels;
#   onednn_run  tests/test_onednn.py: stories260k sliced on onednn and on cpu
#               (held-out NLL within 1e-4, eval --backend onednn too), auto
#               keeping cpu's output where there is no AMX, a onednn job
#               resumed on cpu refused and resumed on onednn byte-identical,
#               precision = "bf16" refused where it cannot run (64) and run
#               where it can.

add_executable(test_onednn ${CMAKE_SOURCE_DIR}/tests/test_onednn.c)
target_link_libraries(test_onednn PRIVATE slicepipe_core)
add_test(NAME onednn_ops COMMAND test_onednn)
set_tests_properties(onednn_ops PROPERTIES LABELS "backend;unit;onednn" SKIP_RETURN_CODE 77 TIMEOUT 300)
# The same at oneDNN's AVX2 kernels (what an explicit backend = "onednn" runs
# on an AVX2-only CPU), where bf16 must be refused.
add_test(NAME onednn_ops_avx2 COMMAND test_onednn)
set_tests_properties(onednn_ops_avx2 PROPERTIES LABELS "backend;unit;onednn" SKIP_RETURN_CODE 77 TIMEOUT 300
                     ENVIRONMENT "ONEDNN_MAX_CPU_ISA=AVX2")


add_test(NAME onednn_run
         COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_onednn.py $<TARGET_FILE:slicepipe>
                 ${CMAKE_BINARY_DIR}/test_out/onednn ${SP_SHARED_DIR} ${SP_SANITIZED_FLAG})
set_tests_properties(onednn_run PROPERTIES LABELS "backend;onednn" SKIP_RETURN_CODE 77 TIMEOUT 600)
