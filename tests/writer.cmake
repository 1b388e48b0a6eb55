# tests/writer.cmake — output writers: sharded safetensors (io/formats/st_writer) and the
# human-readable report (pipeline/run/report).

add_executable(test_st_writer ${CMAKE_SOURCE_DIR}/tests/test_st_writer.c)
target_link_libraries(test_st_writer PRIVATE slicepipe_core)
add_test(NAME st_writer COMMAND test_st_writer)
set_tests_properties(st_writer PROPERTIES LABELS "writer;unit")

# slicing.json: parsed back with cJSON, EVR arithmetic checked independently.
add_executable(test_report ${CMAKE_SOURCE_DIR}/tests/test_report.c)
target_link_libraries(test_report PRIVATE slicepipe_core)
add_test(NAME report_json COMMAND test_report ${CMAKE_BINARY_DIR}/test_out/report_json)
set_tests_properties(report_json PROPERTIES LABELS "writer;report;unit")

# report.html rendered by headless chromium; skipped (77) where it is not installed.
add_test(NAME report_html
         COMMAND sh ${CMAKE_SOURCE_DIR}/tests/test_report.sh $<TARGET_FILE:test_report>
                 ${CMAKE_BINARY_DIR}/test_out/report_html)
set_tests_properties(report_html PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300 LABELS "writer;report" ENVIRONMENT "SP_PYTHON=${SP_PYTHON}")
