# SliceGPT against the float64 numpy reference (tests/ref/slicegpt_ref.py).

# The C `slicepipe run` / `slicepipe eval` against the reference on a random
# GQA model with an untied head. Never skips: a missing subcommand is a failure.
add_test(NAME slice_parity
         COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_slice_parity.py $<TARGET_FILE:slicepipe>)
set_tests_properties(slice_parity PROPERTIES TIMEOUT 900 LABELS "slice;reference")

# The reference itself against ../shared/data/REFERENCE.md (fast subset:
# stories260k 0.25 and llama2xs 0.25 BF16). Skips (77) without the shared dir.
add_test(NAME slice_reference_numpy
         COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/ref/check_reference.py ${SP_SHARED_DIR} --fast)
set_tests_properties(slice_reference_numpy PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 600 LABELS "slice;reference;numpy")
