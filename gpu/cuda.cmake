# gpu/cuda.cmake — the CUDA backend (gpu/*.cu), included by the top-level
# CMakeLists.txt after slicepipe_core exists, when SLICEPIPE_CUDA is AUTO or ON.
#
#   AUTO  builds it when find_package(CUDAToolkit) finds the toolkit and a CUDA
#         compiler works; otherwise the build is CPU-only, as with OFF;
#   ON    requires it (configure fails without the toolkit);
#   OFF   never looks.
#
# The objects go into slicepipe_core (an OBJECT library folded into it, as
# io/, linalg/ and pipeline/ are, so
# the archive has no cycle: the .cu code calls sp_fail from io/base/error.c), which
# then links the static CUDA runtime (cuBLAS and cuSOLVER are loaded at run
# time by the process that uses a device) and carries the PUBLIC
# definition SLICEPIPE_HAVE_CUDA. Nothing outside gpu/ includes a CUDA header.
#
# Flags: the directory's C flags (-Wall ..., -fsanitize=...) are not given to
# nvcc; the .cu files get their own warnings (host side through -Xcompiler),
# -Werror all-warnings with SLICEPIPE_WERROR, and are never sanitized.

if(NOT SLICEPIPE_CUDA MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "SLICEPIPE_CUDA must be AUTO, ON or OFF, not \"${SLICEPIPE_CUDA}\"")
endif()
set(SLICEPIPE_HAVE_CUDA OFF)
find_package(CUDAToolkit QUIET)
if(CUDAToolkit_FOUND)
  if(NOT CMAKE_CUDA_COMPILER)
    set(CMAKE_CUDA_COMPILER ${CUDAToolkit_NVCC_EXECUTABLE})
  endif()
  if(NOT CMAKE_CUDA_HOST_COMPILER)
    find_program(SP_CUDA_HOST_CXX NAMES g++ PATHS /usr/bin NO_DEFAULT_PATH)
    if(SP_CUDA_HOST_CXX)
      set(CMAKE_CUDA_HOST_COMPILER ${SP_CUDA_HOST_CXX})
    endif()
  endif()
  include(CheckLanguage)
  check_language(CUDA)
endif()
if(CUDAToolkit_FOUND AND CMAKE_CUDA_COMPILER)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    # Ampere SASS, Hopper SASS + PTX (the PTX also runs on newer chips).
    set(CMAKE_CUDA_ARCHITECTURES "80-real;90")
  endif()
  enable_language(CUDA)
  # Consumers keep linking with the C compiler (the sanitizer flags are C
  # link options nvcc would not take); cudart and the C++ runtime that the
  # nvcc host code needs are linked explicitly below.
  set(CMAKE_CUDA_LINKER_PREFERENCE_PROPAGATES 0)
  set(SLICEPIPE_HAVE_CUDA ON)
elseif(SLICEPIPE_CUDA STREQUAL "ON")
  message(FATAL_ERROR "SLICEPIPE_CUDA=ON but no usable CUDA toolkit was found "
                      "(find_package(CUDAToolkit): ${CUDAToolkit_FOUND}, nvcc: ${CMAKE_CUDA_COMPILER})")
endif()

if(SLICEPIPE_HAVE_CUDA)
  message(STATUS "slicepipe: CUDA backend ON (toolkit ${CUDAToolkit_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES})")
  file(GLOB SP_CUDA_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/gpu/*.cu)
  add_library(slicepipe_cuda OBJECT ${SP_CUDA_SOURCES})
  # Replace the directory's C options (inherited at creation) with nvcc's own.
  set(SP_CUDA_HOST_WARN -Wall,-Wextra,-Wshadow,-Wno-unused-parameter)
  set(SP_CUDA_OPTIONS --fmad=false -Xcompiler=${SP_CUDA_HOST_WARN})
  if(SLICEPIPE_WERROR)
    list(APPEND SP_CUDA_OPTIONS --Werror=all-warnings -Xcompiler=-Werror)
  endif()
  set_property(TARGET slicepipe_cuda PROPERTY COMPILE_OPTIONS ${SP_CUDA_OPTIONS})
  set_target_properties(slicepipe_cuda PROPERTIES CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON CUDA_EXTENSIONS OFF
                                                  POSITION_INDEPENDENT_CODE ON)
  target_compile_definitions(slicepipe_cuda PRIVATE SLICEPIPE_HAVE_CUDA)
  target_include_directories(slicepipe_cuda PRIVATE ${SP_IO_DIRS} ${SP_LINALG_DIRS}
                             ${CUDAToolkit_INCLUDE_DIRS})
  target_sources(slicepipe_core PRIVATE $<TARGET_OBJECTS:slicepipe_cuda>)
  # slicepipe_core was created before CUDA was enabled: give it the architectures.
  set_property(TARGET slicepipe_core PROPERTY CUDA_ARCHITECTURES ${CMAKE_CUDA_ARCHITECTURES})
  target_compile_definitions(slicepipe_core PUBLIC SLICEPIPE_HAVE_CUDA)
  target_compile_definitions(sp_linalg PRIVATE SLICEPIPE_HAVE_CUDA) # the registry lists it
  # cuBLAS and cuSOLVER are dlopen'ed by the process that uses the device
  # (backend_cuda.cu says why); the runtime is linked statically.
  target_compile_definitions(slicepipe_cuda PRIVATE SP_CUDA_LIBDIR="${CUDAToolkit_LIBRARY_DIR}")
  target_link_libraries(slicepipe_core PUBLIC CUDA::cudart_static ${CMAKE_DL_LIBS} stdc++)
else()
  message(STATUS "slicepipe: CUDA backend OFF (SLICEPIPE_CUDA=${SLICEPIPE_CUDA})")
endif()
