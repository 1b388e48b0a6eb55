# tests/zeroshot.cmake — `slicepipe eval --task` (zero-shot multiple choice,
# pipeline/model/zeroshot.c) against the numpy reference tests/ref/zeroshot_ref.py
# written from lm-eval-harness's definition, and its refusals of bad task files.
#
#   zeroshot.ref   stories260k and a random sliced model, JSONL edge cases and
#                  the first HellaSwag tasks, at the model's context and with a
#                  short --max-length: predictions identical, log-likelihoods
#                  within 1e-5 + 1e-6·|ref| (77 without ../shared)
#   zeroshot.bad   malformed task files: 65 naming file, line and reason; 64/66
add_test(NAME zeroshot.ref
         COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_zeroshot.py ref $<TARGET_FILE:slicepipe> ${SP_SHARED_DIR}
                 ${CMAKE_BINARY_DIR}/test_out/zeroshot_ref)
set_tests_properties(zeroshot.ref PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300 LABELS "zeroshot;reference;numpy")
add_test(NAME zeroshot.bad
         COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_zeroshot.py bad $<TARGET_FILE:slicepipe>
                 ${CMAKE_BINARY_DIR}/test_out/zeroshot_bad)
set_tests_properties(zeroshot.bad PROPERTIES TIMEOUT 120 LABELS "zeroshot;hostile")
# llama.cpp (node-llama-cpp, installed by gguf.npm) on the F32 GGUFs of stories260k
# and the example model: every choice's log-likelihood within 1e-4.
add_test(NAME zeroshot.llamacpp
         COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_zeroshot.py llamacpp $<TARGET_FILE:slicepipe> ${SP_SHARED_DIR}
                 ${CMAKE_SOURCE_DIR} ${CMAKE_BINARY_DIR}/npm-gguf ${CMAKE_BINARY_DIR}/test_out/zeroshot_llamacpp)
set_tests_properties(zeroshot.llamacpp PROPERTIES FIXTURES_REQUIRED gguf_npm SKIP_RETURN_CODE 77 TIMEOUT 600
                     LABELS "zeroshot;llamacpp")
# bench/tinystories_cloze.py: seeded and reproducible (pinned SHA-256), items well formed.
add_test(NAME zeroshot.cloze
         COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_zeroshot.py cloze ${SP_SHARED_DIR} ${CMAKE_SOURCE_DIR}
                 ${CMAKE_BINARY_DIR}/test_out/zeroshot_cloze)
set_tests_properties(zeroshot.cloze PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 120 LABELS "zeroshot")
