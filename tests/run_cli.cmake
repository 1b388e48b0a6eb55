# `slicepipe run` end to end through the command line (tests/test_run_cli.py).
add_test(NAME run_local
         COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_run_cli.py $<TARGET_FILE:slicepipe>
                 ${CMAKE_BINARY_DIR}/test_out/run_local ${SP_SHARED_DIR} local)
set_tests_properties(run_local PROPERTIES TIMEOUT 600 LABELS "slice")
# ../shared/data/REFERENCE.md parity on the shared models; skipped (77)
# without ../shared.
add_test(NAME run_reference
         COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_run_cli.py $<TARGET_FILE:slicepipe>
                 ${CMAKE_BINARY_DIR}/test_out/run_reference ${SP_SHARED_DIR} reference)
set_tests_properties(run_reference PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 900 LABELS "slice;long")
