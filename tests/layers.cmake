# The layers of CMakeLists.txt hold: io/ and linalg/, compiled with their own
# targets' include directories, reach their own and lower headers, and an
# upward include (io/ to linalg/ or pipeline/, linalg/ to pipeline/) fails to
# compile (tests/check_layers.sh). pipeline/ is below only tools/, which has
# no headers.
add_test(NAME layers
         COMMAND sh ${CMAKE_SOURCE_DIR}/tests/check_layers.sh ${CMAKE_C_COMPILER} ${CMAKE_BINARY_DIR}/test_out/layers
                 "io:$<JOIN:$<TARGET_PROPERTY:sp_io,INCLUDE_DIRECTORIES>,;>:fileio.h:backend.h"
                 "io-pipeline:$<JOIN:$<TARGET_PROPERTY:sp_io,INCLUDE_DIRECTORIES>,;>:tokenizer.h:arch.h"
                 "linalg:$<JOIN:$<TARGET_PROPERTY:sp_linalg,INCLUDE_DIRECTORIES>,;>:error.h:model.h"
                 "linalg-plan:$<JOIN:$<TARGET_PROPERTY:sp_linalg,INCLUDE_DIRECTORIES>,;>:backend.h:slice_plan.h")
set_tests_properties(layers PROPERTIES LABELS "unit;layers" TIMEOUT 60)
