# tests/global.cmake — [slicing] basis = "global" outputs in stock llama.cpp
# (tests/test_global_llamacpp.py): the four shared models, the example and the
# hf-tiny RMSNorm families sliced at 0.25 with one basis, exported to GGUF;
# llama.cpp's NLL equals `slicepipe eval` of the output (label llamacpp; needs
# the gguf_npm fixture of tests/gguf.cmake).
add_test(NAME global.llamacpp
         COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_global_llamacpp.py --slicepipe $<TARGET_FILE:slicepipe>
                 --shared ${SP_SHARED_DIR} --root ${CMAKE_SOURCE_DIR} --npm ${CMAKE_BINARY_DIR}/npm-gguf
                 --work ${CMAKE_BINARY_DIR}/global_work)
set_tests_properties(global.llamacpp PROPERTIES FIXTURES_REQUIRED gguf_npm LABELS "llamacpp;gguf;global"
                     SKIP_RETURN_CODE 77 TIMEOUT 600)
# global.resume: a global-basis job (llama2xs) killed at every commit point of
# every stage, each rerun byte-identical (tests/test_global_resume.py).
add_test(NAME global.resume
         COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_global_resume.py $<TARGET_FILE:slicepipe> ${SP_SHARED_DIR}
                 ${CMAKE_BINARY_DIR}/global_resume)
set_tests_properties(global.resume PROPERTIES LABELS "crash;global" SKIP_RETURN_CODE 77 TIMEOUT 300)
