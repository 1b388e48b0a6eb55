# tests/refit.cmake — [slicing] refit = true: per-layer SliceGPT with o_proj
# and down_proj refit to the dense model's signals (docs/algorithm.md §14).

# Every family it serves (synthetic llama, mistral, qwen2, qwen3, phi3, gemma)
# against the float64 numpy reference tests/ref/refit_ref.py: tensors and NLL;
# the same bytes twice and on the staged backend; resume with refit changed
# refused; and the refusals (OPT, Phi-2, policy stock, basis global,
# refit_ridge alone). No shared data.
add_test(NAME refit.families
         COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_refit_families.py $<TARGET_FILE:slicepipe>
                 ${CMAKE_BINARY_DIR}/test_out/refit_families)
set_tests_properties(refit.families PROPERTIES TIMEOUT 300 LABELS "slice;reference;numpy")

# A refit job (llama2xs, 0.25) killed at every commit point of every stage,
# and twice, resumes byte-identically (tests/test_global_resume.py refit).
add_test(NAME refit.resume
         COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_global_resume.py $<TARGET_FILE:slicepipe> ${SP_SHARED_DIR}
                 ${CMAKE_BINARY_DIR}/refit_resume refit)
set_tests_properties(refit.resume PROPERTIES LABELS "crash;slice" SKIP_RETURN_CODE 77 TIMEOUT 300)

# `slicepipe run` with [slicing] refit = true (per-layer SliceGPT with o_proj
# and down_proj refit by ridge least squares to the dense model's signals,
# refit_ridge 1e-4) against the float64 numpy reference tests/ref/refit_ref.py
# on stories260k and babyllama105 at sparsity 0.25: the tensor set and shapes,
# every tensor (relative Frobenius 1e-4: babyllama105's bases are
# ill-conditioned, see the test) and the NLL (1e-5); the reference's own checks
# first (refit = false is slicegpt_ref's SliceGPT; the refit's calibration
# error at most plain SliceGPT's in every layer; LayerNorm families and writer
# biases refused). Skips (77) without the shared dir.
add_test(NAME refit_ref
         COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_refit_ref.py $<TARGET_FILE:slicepipe>
                 ${CMAKE_BINARY_DIR}/test_out/refit_ref ${SP_SHARED_DIR})
set_tests_properties(refit_ref PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300 LABELS "slice;reference;numpy")
