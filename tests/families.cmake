# tests/families.cmake — every family of the architecture table end to end:
# the hf-tiny fixtures against HF's own float64 logits (dense and at sparsity 0;
# opt-350m refused), and synthetic checkpoints of each family against the numpy
# float64 forward and SliceGPT references, with a kill-and-resume each.
add_test(NAME families_hf
         COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_families.py hf $<TARGET_FILE:slicepipe>
                 ${CMAKE_BINARY_DIR}/test_out/families_hf ${SP_SHARED_DIR})
set_tests_properties(families_hf PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300 LABELS "families;reference;numpy")
add_test(NAME families_synth
         COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_families.py synth $<TARGET_FILE:slicepipe>
                 ${CMAKE_BINARY_DIR}/test_out/families_synth)
set_tests_properties(families_synth PROPERTIES TIMEOUT 600 LABELS "families;reference;numpy")
