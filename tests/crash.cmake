# Crash safety and resume (tests/test_crash.py): kill -9 at every commit point
# of every stage and at random moments, journal damage, injected faults.
add_test(NAME crash_harness
         COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_crash.py $<TARGET_FILE:slicepipe>
                 ${CMAKE_BINARY_DIR}/test_out/crash ${SP_SHARED_DIR})
set_tests_properties(crash_harness PROPERTIES TIMEOUT 1200 LABELS "crash")
