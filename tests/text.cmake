# tests/text.cmake — calibration and evaluation windows from text
# (pipeline/model/calib.c; tests/test_text.py; every test is labelled "text").
#
#   text.windows   the shared tokenizer.bin models: windows from the TinyStories
#                  stories (.jsonl, .jsonl.gz) = calib.h's rule, reimplemented in
#                  Python, on the shared .npy files; .txt/.txt.gz against the rule
#                  on `slicepipe tokenize`; the PRNG
#   text.hf        tokenizer.json (mistral-v0.3) on a .txt corpus: the rule on HF's
#                  ids (npm `tokenizers`, installed by the tokenizer.npm fixture)
#   text.run       slicepipe run with [calibration]/[eval] text, eval --text
#   text.resume    a killed text job: refused when the text changes, resumes when not
#   text.bad       too little text, missing files, bad bytes: 65/66 with the reason
# All skip (77) without ../shared; text.hf also without npm.
add_executable(test_text_windows ${CMAKE_SOURCE_DIR}/tests/test_text_windows.c)
target_link_libraries(test_text_windows PRIVATE slicepipe_core)
set(SP_TEXT_ARGS --slicepipe $<TARGET_FILE:slicepipe> --windows $<TARGET_FILE:test_text_windows>
                 --shared ${SP_SHARED_DIR} --root ${CMAKE_SOURCE_DIR} --npm ${CMAKE_BINARY_DIR}/npm
                 --work ${CMAKE_BINARY_DIR}/text_work)
foreach(mode windows hf run resume bad)
  add_test(NAME text.${mode} COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_text.py ${mode} ${SP_TEXT_ARGS})
  set_tests_properties(text.${mode} PROPERTIES LABELS "text" SKIP_RETURN_CODE 77 TIMEOUT 600)
endforeach()
set_tests_properties(text.hf PROPERTIES FIXTURES_REQUIRED tok_npm)
