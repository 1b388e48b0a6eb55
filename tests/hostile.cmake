# Careless and hostile use of slicepipe (tests/test_hostile.py, issue 14): shared
# spill folders, outputs overlapping the input, foreign files, changed inputs,
# damaged finished jobs, non-finite output, planted links, FIFOs, closed standard
# streams, overflowing limits, status, --dump-logits and usage errors.
# Under sanitizers the [eval] memory figure is printed, not held to the budget.
add_test(NAME hostile_inputs
         COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_hostile.py $<TARGET_FILE:slicepipe>
                 ${CMAKE_BINARY_DIR}/test_out/hostile ${SP_SANITIZED_FLAG})
set_tests_properties(hostile_inputs PROPERTIES TIMEOUT 300 LABELS "crash;io")

# The model folder's link rule and single-file outputs (tests/test_hostile_files.py):
#   hostile_files.hfcache  a Hugging Face cache snapshot of stories260k built in the
#                          test: every command works on it as on the plain folder;
#                          links out of its repository's blobs/ are refused (77
#                          without ../shared)
#   hostile_files.outputs  tokenize -o/--decoded, eval/generate --dump-logits,
#                          generate --out-ids, synth's calib.npy: planted links,
#                          FIFOs, folders, an input as output, write and fsync
#                          faults, two tokenizations to one output at once
foreach(group hfcache outputs)
  add_test(NAME hostile_files.${group}
           COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_hostile_files.py ${group} $<TARGET_FILE:slicepipe>
                   ${CMAKE_BINARY_DIR}/test_out/hostile_files ${SP_SHARED_DIR} ${CMAKE_SOURCE_DIR})
  set_tests_properties(hostile_files.${group} PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77 LABELS "crash;io")
endforeach()

# Hostile files for the parsers, and sizes that come from input
# (tests/test_hostile_input.py; groups described at its top):
#   hostile_input.json       the one strict JSON reader for every JSON file and .jsonl line
#   hostile_input.tokenizer  ids given twice, ids that would size tables past the limit,
#                            an unknown SentencePiece model_type
#   hostile_input.limits     sizes from input bounded before they are allocated
#   hostile_input.regex      a per-document budget on regex work
#   hostile_input.gguf       GGUF export refusals: values a type cannot hold
#   hostile_input.export     the export's output path, lock and [output] gguf refusals before any work
#   hostile_input.leaks      components refused half-built: 65 and, under ASan, no leak
#   hostile_input.resume     a model folder deleted and put back (cp -r) between a kill and
#                            the rerun: re-hashed, resumed, byte-identical; one changed bit:
#                            65 naming file and tensor; a finished job without its journal
foreach(group json tokenizer limits regex gguf export leaks resume)
  add_test(NAME hostile_input.${group}
           COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_hostile_input.py ${group} $<TARGET_FILE:slicepipe>
                   ${CMAKE_BINARY_DIR}/test_out/hostile_input ${SP_SHARED_DIR} ${CMAKE_SOURCE_DIR} ${SP_SANITIZED_FLAG})
  set_tests_properties(hostile_input.${group} PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77 LABELS "crash;io")
endforeach()
