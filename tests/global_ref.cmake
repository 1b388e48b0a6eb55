# `slicepipe run` with [slicing] basis = "global" (docs/algorithm.md §10, a
# stock model at width d) against the float64 numpy reference tests/ref/global_ref.py:
# stories260k at 0.25 and 0 (trace and raw weighting) and the hf-tiny RMSNorm
# families at 0.25 and 0, every tensor, config.json, the stock shapes and the
# NLL; the LayerNorm families refused (64). Skips (77) without the shared dir.
add_test(NAME global_ref
         COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_global_ref.py $<TARGET_FILE:slicepipe>
                 ${CMAKE_BINARY_DIR}/test_out/global_ref ${SP_SHARED_DIR})
set_tests_properties(global_ref PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300 LABELS "global;families;reference;numpy")
