# The numpy float64 references of every family (tests/ref/model_ref.py and
# tests/ref/slicegpt_ref.py) against HF transformers' own float64 logits of the
# shared hf-tiny fixtures, and SliceGPT's invariance at sparsity 0 for each
# family. Pure numpy (no slicepipe binary); skips (77) without the shared dir.
add_test(NAME family_ref_numpy
         COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_family_ref.py ${SP_SHARED_DIR}/hf-tiny)
set_tests_properties(family_ref_numpy PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 120 LABELS "reference;numpy")
