# tests/synth.cmake — `slicepipe synth` (pipeline/model/synth.c): shapes through
# `slicepipe inspect`, determinism, weight and token statistics checked with
# numpy, `slicepipe run` + `eval` on the result, bad options.

add_test(NAME synth
         COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_synth.py $<TARGET_FILE:slicepipe>
                 ${CMAKE_BINARY_DIR}/test_out/synth)
set_tests_properties(synth PROPERTIES TIMEOUT 120 LABELS "synth")
