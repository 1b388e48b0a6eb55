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
