# tests/uring.cmake — the batched reader io/base/uring_reader.{c,h}: io_uring and
# pread paths against a plain read() of an 8 MiB seeded file, forced short
# reads, fake -EAGAIN, io_uring refused by seccomp, and the 65/74 statuses.
#
#   uring_reader              the environment is set per case inside the test
#   uring_reader_short_reads  the same with SLICEPIPE_SHORT_READS=1 for the whole
#                             process, so io/base/fileio.c's pread path (which reads it
#                             once per process) is short too; uses a 512 KiB file

add_executable(test_uring_reader ${CMAKE_SOURCE_DIR}/tests/test_uring_reader.c)
target_link_libraries(test_uring_reader PRIVATE slicepipe_core)

add_test(NAME uring_reader COMMAND test_uring_reader ${CMAKE_BINARY_DIR}/test_out/uring_reader)
add_test(NAME uring_reader_short_reads
         COMMAND test_uring_reader ${CMAKE_BINARY_DIR}/test_out/uring_reader_short)
set_tests_properties(uring_reader uring_reader_short_reads PROPERTIES LABELS "io;unit" TIMEOUT 120)
set_tests_properties(uring_reader_short_reads PROPERTIES ENVIRONMENT "SLICEPIPE_SHORT_READS=1")
