# tests/ring.cmake — the shared-memory SPSC ring between stage processes
# (pipeline/run/ring): real forked processes, SIGKILLed peers, corrupt shared
# headers, timeouts. About 3 s.

add_executable(test_ring ${CMAKE_SOURCE_DIR}/tests/test_ring.c)
target_link_libraries(test_ring PRIVATE slicepipe_core)
add_test(NAME ring COMMAND test_ring)
set_tests_properties(ring PROPERTIES TIMEOUT 60 LABELS "pipeline;unit")
