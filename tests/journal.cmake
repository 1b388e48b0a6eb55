# tests/journal.cmake — crash safety: the job journal (io/base/journal), commit-point
# kill injection (io/base/faults), the job lock (io/base/lock) and `slicepipe verify`
# (pipeline/model/verify). Real files, real processes, kill -9.

add_executable(test_journal ${CMAKE_SOURCE_DIR}/tests/test_journal.c)
target_link_libraries(test_journal PRIVATE slicepipe_core)
add_test(NAME journal COMMAND test_journal ${CMAKE_BINARY_DIR}/test_out/journal)
set_tests_properties(journal PROPERTIES TIMEOUT 120 LABELS "resume;unit")

add_executable(test_lock ${CMAKE_SOURCE_DIR}/tests/test_lock.c)
target_link_libraries(test_lock PRIVATE slicepipe_core)
add_test(NAME lock COMMAND test_lock ${CMAKE_BINARY_DIR}/test_out/lock)
set_tests_properties(lock PROPERTIES TIMEOUT 60 LABELS "resume;unit")

add_test(NAME verify
         COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_verify.py $<TARGET_FILE:slicepipe>
                 ${CMAKE_BINARY_DIR}/test_out/verify)
set_tests_properties(verify PROPERTIES TIMEOUT 600 LABELS "resume")
