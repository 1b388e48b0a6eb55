# Settings every test group shares (included by CMakeLists.txt before tests/*.cmake).
# The shared real models and data live beside the checkout; tests that use them
# skip with a message when the folder is absent. The product never needs it.
set(SP_SHARED_DIR ${CMAKE_SOURCE_DIR}/../shared)

# Tests that measure RSS print it but do not hold it to a budget under
# sanitizers (shadow memory, the allocator's quarantine): they take this flag.
set(SP_SANITIZED_FLAG "")
if(SLICEPIPE_SANITIZE)
  set(SP_SANITIZED_FLAG --sanitized)
endif()
