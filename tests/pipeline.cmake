# The stage processes of `slicepipe run` (tests/test_pipeline.py): a budget
# smaller than the checkpoint, pread/short reads, killed stages and supervisor.
# Under sanitizers the RSS figures are reported but not held to the budget.
add_test(NAME pipeline_processes
         COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_pipeline.py $<TARGET_FILE:slicepipe>
                 ${CMAKE_BINARY_DIR}/test_out/pipeline ${SP_SANITIZED_FLAG})
set_tests_properties(pipeline_processes PROPERTIES TIMEOUT 600 LABELS "pipeline")

# Resident spills ([resources] activations) against spills on disk: the same
# rows, hashes and file bytes at every sync; a resume's kept spill read back.
add_executable(test_spill ${CMAKE_SOURCE_DIR}/tests/test_spill.c)
target_link_libraries(test_spill PRIVATE slicepipe_core)
add_test(NAME spill_resident COMMAND test_spill ${CMAKE_BINARY_DIR}/test_out/spill)
set_tests_properties(spill_resident PROPERTIES TIMEOUT 60 LABELS "pipeline;unit")
