# tests/gguf.cmake — slicepipe export (GGUF) (tests/test_gguf.py):
#   gguf.unit      io/formats/gguf.c byte-for-byte against a hand-built layout, and the
#                  file parsed by the independent tests/gguf_read.py
#   gguf.export    exports of a shared model, the example and every hf-tiny
#                  family, every key and tensor checked; refusals
#   gguf.calib     --quant-weighting calib: weighted error against plain rounding, with the
#                  reader statistics computed independently in numpy
#   gguf.resume    the journaled export killed at every commit point and
#                  within tensors, torn and corrupt tails, changed inputs
#   gguf.outputkey [output] gguf in `slicepipe run` (synthetic models)
#   gguf.npm       installs node-llama-cpp@3.21.1 (prebuilt llama.cpp) into
#                  ${CMAKE_BINARY_DIR}/npm-gguf; 77 if npm cannot   (label llamacpp)
#   gguf.llamacpp  llama.cpp's NLL and tokenization against slicepipe's (label llamacpp)
#   gguf.quant     q4_0 q4_1 q5_0 q5_1 q8_0: blocks against a numpy ggml reference rounding,
#                  llama.cpp's NLLs against numpy's on the dequantized model with its input
#                  rounding: per token at early positions, the mean against noisy draws (label llamacpp)
add_executable(test_gguf ${CMAKE_SOURCE_DIR}/tests/test_gguf.c)
target_link_libraries(test_gguf PRIVATE slicepipe_core)
set(SP_GGUF_ARGS --slicepipe $<TARGET_FILE:slicepipe> --test-bin $<TARGET_FILE:test_gguf> --shared ${SP_SHARED_DIR}
                 --root ${CMAKE_SOURCE_DIR} --npm ${CMAKE_BINARY_DIR}/npm-gguf --work ${CMAKE_BINARY_DIR}/gguf_work)
foreach(mode unit export calib resume outputkey)
  add_test(NAME gguf.${mode} COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_gguf.py ${mode} ${SP_GGUF_ARGS})
  set_tests_properties(gguf.${mode} PROPERTIES LABELS "gguf" SKIP_RETURN_CODE 77 TIMEOUT 300)
endforeach()
add_test(NAME gguf.npm COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_gguf.py npm ${SP_GGUF_ARGS})
set_tests_properties(gguf.npm PROPERTIES FIXTURES_SETUP gguf_npm LABELS "llamacpp;gguf" SKIP_RETURN_CODE 77 TIMEOUT 900)
add_test(NAME gguf.llamacpp COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_gguf.py llamacpp ${SP_GGUF_ARGS})
set_tests_properties(gguf.llamacpp PROPERTIES FIXTURES_REQUIRED gguf_npm LABELS "llamacpp;gguf" SKIP_RETURN_CODE 77 TIMEOUT 600)
add_test(NAME gguf.quant COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_gguf.py quant ${SP_GGUF_ARGS})
set_tests_properties(gguf.quant PROPERTIES FIXTURES_REQUIRED gguf_npm LABELS "llamacpp;gguf" SKIP_RETURN_CODE 77 TIMEOUT 600)
