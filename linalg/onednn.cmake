# linalg/onednn.cmake — the oneDNN backend (linalg/onednn.c), included by the
# top-level CMakeLists.txt after sp_linalg and slicepipe_core exist.
#
#   AUTO  builds it when oneDNN 2.x is found (Debian's libdnnl-dev: its
#         header and library) with the OpenMP or the sequential CPU runtime; otherwise the backend is
#         "known but not built", as cuda is without the toolkit;
#   ON    requires it (configure fails without it);
#   OFF   never looks.
#
# When built, sp_linalg gets oneDNN's headers and SLICEPIPE_HAVE_ONEDNN (the
# registry lists the backend), and slicepipe_core carries the PUBLIC
# definition (the tests see it). libdnnl itself is not linked: the backend
# dlopen's libdnnl.so.<major> when a process first needs it (linalg/onednn.c
# says why: ~2.8 MiB of RSS a process), and takes OpenMP's two calls it makes
# (omp_set_num_threads: oneDNN is kept to one thread per caller, the pool is
# the one runtime) from the libgomp that libdnnl loads. So a slicepipe built
# here also runs where libdnnl is absent, with the backend not usable there.

if(NOT SLICEPIPE_ONEDNN MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "SLICEPIPE_ONEDNN must be AUTO, ON or OFF, not \"${SLICEPIPE_ONEDNN}\"")
endif()
set(SLICEPIPE_HAVE_ONEDNN OFF)
set(SP_ONEDNN_WHY "")
if(NOT SLICEPIPE_ONEDNN STREQUAL "OFF")
  # The header and library by name, not find_package(dnnl CONFIG): Debian's
  # dnnl-config.cmake requires OpenCL (a Recommends of libdnnl-dev, absent
  # under --no-install-recommends) and stops the configure when it is missing,
  # even with QUIET; nothing here links libdnnl, so its targets are not needed.
  find_path(SP_DNNL_INCLUDE oneapi/dnnl/dnnl.h)
  find_library(SP_DNNL_LIB dnnl)
  if(SP_DNNL_INCLUDE AND SP_DNNL_LIB)
    set(SP_DNNL_FOUND ON)
  endif()
  if(NOT SP_DNNL_FOUND OR NOT SP_DNNL_INCLUDE)
    set(SP_ONEDNN_WHY "oneDNN not found (install libdnnl-dev: tools/install-deps.sh)")
  else()
    # The version and the CPU runtime, from the headers the code compiles against.
    list(GET SP_DNNL_INCLUDE 0 SP_DNNL_INC0)
    file(STRINGS ${SP_DNNL_INC0}/oneapi/dnnl/dnnl_version.h SP_DNNL_MAJOR REGEX "#define DNNL_VERSION_MAJOR")
    file(STRINGS ${SP_DNNL_INC0}/oneapi/dnnl/dnnl_config.h SP_DNNL_RT REGEX "#define DNNL_CPU_RUNTIME ")
    string(REGEX MATCH "[0-9]+" SP_DNNL_MAJOR "${SP_DNNL_MAJOR}")
    string(REGEX MATCH "DNNL_RUNTIME_[A-Z]+" SP_DNNL_RT "${SP_DNNL_RT}")
    if(NOT SP_DNNL_MAJOR STREQUAL "2")
      set(SP_ONEDNN_WHY "oneDNN major version ${SP_DNNL_MAJOR}: linalg/onednn.c is written for the 2.x C API")
    elseif(SP_DNNL_RT STREQUAL "DNNL_RUNTIME_OMP" OR SP_DNNL_RT STREQUAL "DNNL_RUNTIME_SEQ")
      set(SLICEPIPE_HAVE_ONEDNN ON)
    else()
      set(SP_ONEDNN_WHY "oneDNN's CPU runtime is ${SP_DNNL_RT}; linalg/onednn.c needs OpenMP or sequential")
    endif()
  endif()
  if(NOT SLICEPIPE_HAVE_ONEDNN AND SLICEPIPE_ONEDNN STREQUAL "ON")
    message(FATAL_ERROR "SLICEPIPE_ONEDNN=ON but ${SP_ONEDNN_WHY}")
  endif()
endif()

if(SLICEPIPE_HAVE_ONEDNN)
  message(STATUS "slicepipe: oneDNN backend ON (headers ${SP_DNNL_INC0}, oneDNN ${SP_DNNL_MAJOR}.x, runtime "
                 "${SP_DNNL_RT}; libdnnl is loaded at run time)")
  target_compile_definitions(sp_linalg PRIVATE SLICEPIPE_HAVE_ONEDNN)
  target_include_directories(sp_linalg SYSTEM PRIVATE ${SP_DNNL_INCLUDE})
  target_compile_definitions(slicepipe_core PUBLIC SLICEPIPE_HAVE_ONEDNN)
  target_link_libraries(slicepipe_core PUBLIC ${CMAKE_DL_LIBS})
else()
  if(SP_ONEDNN_WHY)
    set(SP_ONEDNN_WHY ": ${SP_ONEDNN_WHY}")
  endif()
  message(STATUS "slicepipe: oneDNN backend OFF (SLICEPIPE_ONEDNN=${SLICEPIPE_ONEDNN}${SP_ONEDNN_WHY})")
endif()
