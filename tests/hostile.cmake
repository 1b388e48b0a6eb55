# Careless and hostile use of slicepipe (tests/test_hostile.py, issue 14): shared
# spill folders, outputs overlapping the input, foreign files, changed inputs,
# damaged finished jobs, non-finite output, planted links, FIFOs, closed standard
# streams, overflowing limits, status, --dump-logits and usage errors.
# Under sanitizers the [eval] memory figure is printed, not held to the budget.
add_test(NAME hostile_inputs
         COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_hostile.py $<TARGET_FILE:slicepipe>
                 ${CMAKE_BINARY_DIR}/test_out/hostile ${SP_SANITIZED_FLAG})
set_tests_properties(hostile_inputs PROPERTIES TIMEOUT 300 LABELS "crash;io")
