# The layers of CMakeLists.txt hold: io/'s parts and linalg/, compiled with
# their own targets' include directories, reach their own and lower headers,
# and an upward include (io/base/ to io/formats/ or io/text/, io/ to linalg/
# or pipeline/, linalg/ to pipeline/) fails to compile (tests/check_layers.sh).
# pipeline/ is below only tools/, which has no headers.
add_test(NAME layers
         COMMAND sh ${CMAKE_SOURCE_DIR}/tests/check_layers.sh ${CMAKE_C_COMPILER} ${CMAKE_BINARY_DIR}/test_out/layers
                 "io-base:$<JOIN:$<TARGET_PROPERTY:sp_io_base,INCLUDE_DIRECTORIES>,;>:fileio.h:safetensors.h"
                 "io-base-text:$<JOIN:$<TARGET_PROPERTY:sp_io_base,INCLUDE_DIRECTORIES>,;>:journal.h:tokenizer.h"
                 "io-formats:$<JOIN:$<TARGET_PROPERTY:sp_io_formats,INCLUDE_DIRECTORIES>,;>:gguf.h:backend.h"
                 "io-text:$<JOIN:$<TARGET_PROPERTY:sp_io_text,INCLUDE_DIRECTORIES>,;>:tokenizer.h:arch.h"
                 "linalg:$<JOIN:$<TARGET_PROPERTY:sp_linalg,INCLUDE_DIRECTORIES>,;>:error.h:model.h"
                 "linalg-plan:$<JOIN:$<TARGET_PROPERTY:sp_linalg,INCLUDE_DIRECTORIES>,;>:backend.h:slice_plan.h")
set_tests_properties(layers PROPERTIES LABELS "unit;layers" TIMEOUT 60)
