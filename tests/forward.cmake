# tests/forward.cmake — the float32 layer forward (linalg/forward.c) and
# `slicepipe eval`, against hand-computed values and the float64 numpy
# reference tests/ref/llama_ref.py.

add_executable(test_forward ${CMAKE_SOURCE_DIR}/tests/test_forward.c)
target_link_libraries(test_forward PRIVATE slicepipe_core)
add_test(NAME forward_unit COMMAND test_forward)
set_tests_properties(forward_unit PROPERTIES LABELS "forward;unit")

# Random GQA models (F32 tied/untied, BF16 in 2 shards, F16, llama3 RoPE,
# sliced): NLL within 1e-5, logits within 1e-4 + 1e-4·|ref|.
add_test(NAME forward_parity
         COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_forward_parity.py synthetic
                 $<TARGET_FILE:slicepipe> ${CMAKE_BINARY_DIR}/test_out/forward_parity)
set_tests_properties(forward_parity PROPERTIES TIMEOUT 300 LABELS "forward;reference")

# The shared models against ../shared/data/REFERENCE.md; skipped (77)
# without ../shared.
add_test(NAME forward_shared
         COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_forward_parity.py shared
                 $<TARGET_FILE:slicepipe> ${SP_SHARED_DIR})
set_tests_properties(forward_shared PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 600 LABELS "forward;reference;numpy")
