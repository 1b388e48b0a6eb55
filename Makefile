# The two commands of the README. Each installs what is missing (Debian),
# configures, builds, and then runs the demo or the whole test suite.
#
#   make demo    slice the example model and show dense vs sliced perplexity
#   make test    build (with -Werror), run ctest, then again under ASan+UBSan
#                (the ASan pass skips labels 'numpy', the checks of the numpy references
#                themselves, and 'long', the shared test data's REFERENCE.md parity the
#                release pass runs)
JOBS ?= $(shell nproc)

.PHONY: all build demo test test-release test-asan deps deps-test clean

all: build

deps:
	./tools/install-deps.sh

deps-test:
	./tools/install-deps.sh --test

build: deps
	cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DSLICEPIPE_WERROR=ON
	cmake --build build -j $(JOBS)

demo: build
	./tools/demo.sh build/slicepipe examples/kjv/manifest.toml

test: deps-test test-release test-asan

test-release:
	cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DSLICEPIPE_WERROR=ON
	cmake --build build -j $(JOBS)
	cd build && ctest --output-on-failure -j $(JOBS)

test-asan:
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DSLICEPIPE_WERROR=ON -DSLICEPIPE_SANITIZE=address,undefined
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j $(JOBS) -LE 'numpy|long'

clean:
	rm -rf build build-asan out
