# tests/generate.cmake — `slicepipe generate` (pipeline/model/generate.c): the
# KV-cache path against the full forward of `slicepipe eval --dump-logits`
# and the numpy float64 forward (tests/test_generate.py; label "generate").
#
#   generate.stories    stories260k greedy from a TinyStories prompt (fluent
#                       English, printed), resident and streamed layers (77
#                       without ../shared)
#   generate.sliced     stories260k sliced at 0.125 and 0.25 in the test (77 without ../shared)
#   generate.families   a synthetic model of every family `slicepipe --version`
#                       lists, dense and sliced, through --prompt-ids / --prompt-tokens
#   generate.sampling   seeded sampling: determinism and the documented rule (77
#                       without ../shared)
#   generate.utf8       printing as it generates never splits a character (GPT-2
#                       tokenizer.json on a synthetic model; 77 without ../shared)
#   generate.bad        usage and data errors
foreach(mode stories sliced families sampling utf8 bad)
  add_test(NAME generate.${mode}
           COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_generate.py ${mode} $<TARGET_FILE:slicepipe>
                   ${CMAKE_BINARY_DIR}/test_out/generate ${SP_SHARED_DIR})
  set_tests_properties(generate.${mode} PROPERTIES LABELS "generate" SKIP_RETURN_CODE 77 TIMEOUT 600)
endforeach()
