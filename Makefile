# The two commands of the README: `make run` and `make test`.
BUILD ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo
ARGS ?=
PREFIX ?= /usr/local

.PHONY: all build run test install uninstall asan tsan lab bench clean

all: build

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)

build: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j$(JOBS)

# Starts the echo server in the foreground; pass flags with ARGS="--port 9000".
run: build
	./$(BUILD)/bin/evmux-echo-server $(ARGS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

# Library, header, evmux.pc, CMake package and the three programs under
# $(PREFIX) (DESTDIR is honoured); the files go in $(BUILD)/install_manifest.txt.
install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

# Removes what the last install listed in $(BUILD)/install_manifest.txt
# (which names the files without DESTDIR: pass the same DESTDIR again).
uninstall:
	@test -f $(BUILD)/install_manifest.txt || { echo "no $(BUILD)/install_manifest.txt: nothing installed from $(BUILD)"; exit 1; }
	sed 's|^|$(DESTDIR)|' $(BUILD)/install_manifest.txt | xargs -d '\n' rm -fv

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer.
asan:
	$(MAKE) test BUILD=build-asan CMAKE_FLAGS="-DCMAKE_BUILD_TYPE=Debug -DEVMUX_SANITIZE=address,undefined"

# The thread code's tests (ctest label "threads") under ThreadSanitizer.
tsan:
	$(MAKE) build BUILD=build-tsan CMAKE_FLAGS="-DCMAKE_BUILD_TYPE=Debug -DEVMUX_SANITIZE=thread"
	cd build-tsan && ctest --output-on-failure -j$(JOBS) -L threads

# The I/O-models lab: results/lab.csv and docs/lab-*.png (bench/setup.sh
# installs the peer libraries and gnuplot first).
lab: build
	python3 bench/run.py lab

# Every benchmark: lab, echo comparison, memory, event-loop core, timers.
bench: build
	python3 bench/run.py all

clean:
	rm -rf build build-asan build-tsan
