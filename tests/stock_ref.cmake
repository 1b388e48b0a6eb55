# `slicepipe run` with [slicing] policy = "stock" (issue 21: FFN neurons pruned
# by energy, down_proj refit by ridge least squares, split 0) against the
# float64 numpy reference tests/ref/stock_ref.py on stories260k and
# babyllama105: the kept neurons, every tensor (relative Frobenius 1e-5),
# config.json and the NLL (1e-5); the reference's own invariance (k = F, ridge 0)
# and refit-beats-pruning checks first. Skips (77) without the shared dir, or
# while `slicepipe run` rejects the key 'policy'.
add_test(NAME stock_ref
         COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_stock_ref.py $<TARGET_FILE:slicepipe>
                 ${CMAKE_BINARY_DIR}/test_out/stock_ref ${SP_SHARED_DIR})
set_tests_properties(stock_ref PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300 LABELS "stock;reference;numpy")
# stock_ref.layernorm: the LayerNorm families (synthetic OPT and Phi-2 from
# `slicepipe synth`, no shared data) at params 0.8, split 0: the MLP cut alone
# with fc2's bias refit as a constant column, against the same reference: the
# kept neurons, every tensor (1e-5), config.json's ffn_dim / intermediate_size
# and parameter counts, the NLL (1e-5); byte-identical shards on the staged
# backend and after a kill and resume; split > 0 refused (64), split = "auto"
# the split-0 job; and a synthetic Llama given mlp_bias (gate, up and down
# biases) through the same checks.
add_test(NAME stock_ref.layernorm
         COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_stock_ln.py $<TARGET_FILE:slicepipe>
                 ${CMAKE_BINARY_DIR}/test_out/stock_ref_ln)
set_tests_properties(stock_ref.layernorm PROPERTIES TIMEOUT 120 LABELS "stock;reference;numpy")
