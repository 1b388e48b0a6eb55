# tests/safetensors.cmake — tests for io/formats/safetensors.{c,h}.
#
#   st_unit, st_unit_short_reads  C unit tests (values read back from unaligned
#                                 F16/BF16/F32/F64 data, strict JSON/UTF-8 rules,
#                                 checkpoint lookups and shape checks)
#   st_corpus_driver              the generated bad-input corpus through the
#                                 test driver (does not need tools/slicepipe.c)
#   st_corpus                     the same corpus through `slicepipe inspect`
#
# -DSLICEPIPE_FUZZ=ON (clang only) builds the libFuzzer target fuzz_safetensors;
# it is not part of ctest. Run: build/fuzz_safetensors -max_len=4096 corpus_dir/

add_executable(test_safetensors ${CMAKE_SOURCE_DIR}/tests/test_safetensors.c)
target_link_libraries(test_safetensors PRIVATE slicepipe_core)

add_test(NAME st_unit COMMAND test_safetensors unit ${CMAKE_CURRENT_BINARY_DIR})
add_test(NAME st_unit_short_reads COMMAND test_safetensors unit ${CMAKE_CURRENT_BINARY_DIR})
set_tests_properties(st_unit_short_reads PROPERTIES ENVIRONMENT "SLICEPIPE_SHORT_READS=1")

add_test(NAME st_corpus_driver
         COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_st_corpus.py
                 --inspect $<TARGET_FILE:test_safetensors> --dump $<TARGET_FILE:test_safetensors>
                 --models ${SP_SHARED_DIR}/models)
add_test(NAME st_corpus
         COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_st_corpus.py
                 --inspect $<TARGET_FILE:slicepipe> --dump $<TARGET_FILE:test_safetensors>
                 --models ${SP_SHARED_DIR}/models)
set_tests_properties(st_unit st_unit_short_reads PROPERTIES LABELS "safetensors;cpu;unit")
set_tests_properties(st_corpus_driver st_corpus PROPERTIES LABELS "safetensors;cpu")

option(SLICEPIPE_FUZZ "Build the libFuzzer targets (clang only)" OFF)
if(SLICEPIPE_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "SLICEPIPE_FUZZ needs clang (configure with CC=clang)")
  endif()
  # The reader's sources are compiled into the target itself so that libFuzzer's
  # coverage instrumentation covers them (slicepipe_core is built without it).
  add_executable(fuzz_safetensors ${CMAKE_SOURCE_DIR}/tests/fuzz/fuzz_safetensors.c
                 ${CMAKE_SOURCE_DIR}/io/formats/safetensors.c ${CMAKE_SOURCE_DIR}/io/base/fileio.c
                 ${CMAKE_SOURCE_DIR}/io/base/dtype.c ${CMAKE_SOURCE_DIR}/io/base/error.c
                 ${CMAKE_SOURCE_DIR}/io/base/utf8.c ${CMAKE_SOURCE_DIR}/io/base/json.c
                 ${CMAKE_SOURCE_DIR}/io/base/modelfile.c)
  target_include_directories(fuzz_safetensors PRIVATE ${SP_IO_DIRS})
  target_compile_options(fuzz_safetensors PRIVATE -fsanitize=fuzzer)
  target_link_options(fuzz_safetensors PRIVATE -fsanitize=fuzzer)
  target_link_libraries(fuzz_safetensors PRIVATE PkgConfig::CJSON ${MATH_LIB} PkgConfig::XXHASH)
endif()
