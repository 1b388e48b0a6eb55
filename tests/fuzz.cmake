# tests/fuzz.cmake — libFuzzer targets for the untrusted-input parsers other
# than safetensors (whose target fuzz_safetensors is in tests/safetensors.cmake):
#
#   fuzz_manifest   pipeline/run/manifest.c  sp_manifest_load
#   fuzz_config     pipeline/arch/config.c          sp_config_load (DIR/config.json)
#   fuzz_tokens     io/formats/tokens.c          sp_tokens_load (.npy)
#   fuzz_journal    io/base/journal.c         sp_journal_open replay, sp_run_identity_read
#   fuzz_mctask     io/text/mctask.c          sp_mctask_load (eval --task files)
#
# Only with -DSLICEPIPE_FUZZ=ON and clang (the option itself is declared in
# tests/safetensors.cmake, which is included after this file); nothing here
# exists in a normal build. Each target gets a short ctest smoke run labelled
# "fuzz" (20000 inputs from the seeds, fixed seed). How to build and fuzz for
# longer: tests/fuzz/README.md.

if(SLICEPIPE_FUZZ AND CMAKE_C_COMPILER_ID MATCHES "Clang")
  # The parser's sources are compiled into each target so that libFuzzer's
  # coverage instrumentation covers them (slicepipe_core is built without it).
  # Without -DSLICEPIPE_SANITIZE the targets still get ASan and UBSan.
  set(SP_FUZZ_FLAGS -fsanitize=fuzzer)
  if(NOT SLICEPIPE_SANITIZE)
    list(APPEND SP_FUZZ_FLAGS -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all)
  endif()
  set(SP_FUZZ_COMMON ${CMAKE_SOURCE_DIR}/io/base/fileio.c ${CMAKE_SOURCE_DIR}/io/base/error.c ${CMAKE_SOURCE_DIR}/io/base/dtype.c
                     ${CMAKE_SOURCE_DIR}/io/base/utf8.c ${CMAKE_SOURCE_DIR}/io/base/json.c
                 ${CMAKE_SOURCE_DIR}/io/base/modelfile.c)

  function(sp_fuzz_target name parser_source)
    add_executable(${name} ${CMAKE_SOURCE_DIR}/tests/fuzz/${name}.c ${parser_source} ${SP_FUZZ_COMMON})
    target_include_directories(${name} PRIVATE ${SP_IO_DIRS} ${SP_PIPELINE_DIRS} ${SP_LINALG_DIRS})
    target_compile_options(${name} PRIVATE ${SP_FUZZ_FLAGS})
    target_link_options(${name} PRIVATE ${SP_FUZZ_FLAGS})
    target_link_libraries(${name} PRIVATE ${ARGN} PkgConfig::XXHASH PkgConfig::CJSON ${MATH_LIB}) # fileio.c hashes; json.c
  endfunction()

  # manifest.c checks [resources] backend against the backend registry (linalg/backend.c, which opens the CPU one)
  # and parses [output] gguf with the GGUF writer's type names (io/formats/gguf.c).
  sp_fuzz_target(fuzz_manifest "${CMAKE_SOURCE_DIR}/pipeline/run/manifest.c;${CMAKE_SOURCE_DIR}/io/formats/gguf.c;${CMAKE_SOURCE_DIR}/linalg/backend.c;${CMAKE_SOURCE_DIR}/linalg/cpu.c;${CMAKE_SOURCE_DIR}/linalg/cpu_blas.c"
                 PkgConfig::OPENBLAS PkgConfig::LAPACKE)
  # config.json is parsed against the architecture table (the families' keys and refusals).
  file(GLOB SP_FUZZ_ARCH CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/pipeline/arch/arch*.c)
  sp_fuzz_target(fuzz_config "${CMAKE_SOURCE_DIR}/pipeline/arch/config.c;${SP_FUZZ_ARCH}" PkgConfig::CJSON)
  sp_fuzz_target(fuzz_tokens ${CMAKE_SOURCE_DIR}/io/formats/tokens.c)
  sp_fuzz_target(fuzz_journal ${CMAKE_SOURCE_DIR}/io/base/journal.c)
  sp_fuzz_target(fuzz_mctask ${CMAKE_SOURCE_DIR}/io/text/mctask.c)

  # Binary seeds (journals, .npy) are generated; text seeds are checked in.
  add_executable(gen_fuzz_seeds ${CMAKE_SOURCE_DIR}/tests/fuzz/gen_fuzz_seeds.c)
  target_link_libraries(gen_fuzz_seeds PRIVATE slicepipe_core)

  set(SP_FUZZ_SEEDS ${CMAKE_BINARY_DIR}/fuzz_seeds)
  add_test(NAME fuzz.seeds COMMAND gen_fuzz_seeds ${SP_FUZZ_SEEDS})
  set_tests_properties(fuzz.seeds PROPERTIES FIXTURES_SETUP fuzz_seeds LABELS "fuzz")

  # libFuzzer adds the inputs it finds to the first corpus folder only: a
  # scratch folder in the build tree, never the checked-in seeds.
  foreach(t manifest config tokens journal mctask)
    if(t STREQUAL "manifest" OR t STREQUAL "config" OR t STREQUAL "mctask")
      set(seeds ${CMAKE_SOURCE_DIR}/tests/fuzz/corpus/${t})
    else()
      set(seeds ${SP_FUZZ_SEEDS}/${t})
    endif()
    add_test(NAME fuzz.${t}
             COMMAND fuzz_${t} -runs=20000 -seed=1 -max_len=4096 -max_total_time=60 -create_missing_dirs=1
                     -artifact_prefix=${CMAKE_BINARY_DIR}/fuzz_corpus/${t}-
                     ${CMAKE_BINARY_DIR}/fuzz_corpus/${t} ${seeds})
    set_tests_properties(fuzz.${t} PROPERTIES FIXTURES_REQUIRED fuzz_seeds TIMEOUT 120 LABELS "fuzz")
  endforeach()
endif()
