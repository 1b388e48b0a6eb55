# Settings every test group shares (included by CMakeLists.txt before tests/*.cmake).
# The shared real models and data live beside the checkout; tests that use them
# skip with a message when the folder is absent. The product never needs it.
set(SP_SHARED_DIR ${CMAKE_SOURCE_DIR}/../shared)
