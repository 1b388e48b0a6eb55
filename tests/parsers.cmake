# tests/parsers.cmake — the untrusted-input parsers: the run manifest
# (pipeline/run/manifest), config.json (pipeline/arch/config) and .npy token streams
# (io/formats/tokens). Hand-made invalid inputs for every rule.

add_executable(test_manifest ${CMAKE_SOURCE_DIR}/tests/test_manifest.c)
target_link_libraries(test_manifest PRIVATE slicepipe_core)
add_test(NAME parsers.manifest COMMAND test_manifest)
set_tests_properties(parsers.manifest PROPERTIES LABELS "parsers;unit")

# Passed python3 (numpy writes reference .npy files) and ../shared (the real
# stories260k config and calibration stream); parts without them are skipped.
add_executable(test_config_tokens ${CMAKE_SOURCE_DIR}/tests/test_config_tokens.c)
target_link_libraries(test_config_tokens PRIVATE slicepipe_core)
add_test(NAME parsers.config_tokens COMMAND test_config_tokens ${SP_PYTHON} ${SP_SHARED_DIR})
set_tests_properties(parsers.config_tokens PROPERTIES LABELS "parsers;unit")
