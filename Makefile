# Quick start:  make demo   (sets up .venv, builds fastnn, installs fonts when root, runs the
#                            validation of fastnn against torch: python -m fastnn.validate --quick)
#               make test   (sets up .venv, builds fastnn, runs the test suite)
PYTHON ?= python3
VENV   ?= .venv
VPY    := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
# CUDA compile check: a second venv with the CUDA build of torch (installs from local disk here).
CUDA_VENV  ?= .venv-cuda
CUDA_TORCH ?= torch==2.14.1
CUDA_HOME  ?= /usr/local/cuda
export MAX_JOBS ?= 2

SOURCES := $(shell find csrc -type f) setup.py pyproject.toml

.PHONY: demo test build bench fonts cuda-build sanitize clean

$(VENV)/.deps: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q "$(TORCH)" numpy ninja pybind11 "setuptools>=64" wheel pytest pytest-benchmark \
		hypothesis tqdm matplotlib Pillow scikit-learn
	touch $@

$(VENV)/.built: $(VENV)/.deps $(SOURCES)
	FASTNN_CUDA=0 $(VPY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

build: $(VENV)/.built

fonts:
	@bash scripts/install_fonts.sh

demo: build fonts
	$(VPY) -m fastnn.validate --quick

test: build
	$(VPY) -m pytest -q tests

# The benchmark suite (python -m fastnn.bench): quick set, tables + benchmarks/bench-results/results.json + plots.
# BENCH_ARGS="all" for the full set; render RESULTS.md with python -m fastnn.bench.render.
BENCH_ARGS ?= all --quick
bench: build
	$(VPY) -m fastnn.bench $(BENCH_ARGS) --out benchmarks/bench-results

$(CUDA_VENV)/.deps:
	$(PYTHON) -m venv $(CUDA_VENV)
	$(CUDA_VENV)/bin/python -m pip install -q "$(CUDA_TORCH)" numpy ninja pybind11 "setuptools>=64" wheel
	touch $@

# The portable CPU table alone (FASTNN_CPU_TABLES=base): the per-ISA tables include no torch or CUDA
# header, `make build` compiles them, and they would be most of this check's time.
cuda-build: $(CUDA_VENV)/.deps
	rm -rf build/cuda && CUDA_HOME=$(CUDA_HOME) FASTNN_CUDA=1 FASTNN_CPU_TABLES=base $(CUDA_VENV)/bin/python setup.py \
		build_ext --build-temp build/cuda/tmp --build-lib build/cuda/lib
	cd build/cuda/lib && ../../../$(CUDA_VENV)/bin/python -c \
		"import torch, fastnn._C as c; assert c.built_with_cuda(), 'CUDA kernels missing'; \
		 print('fastnn CUDA build OK with torch', torch.__version__)"

# ASan + UBSan build of the CPU extension in build/asan (the normal build is untouched), then the CPU
# test suite against it with the ASan runtime preloaded into the (uninstrumented) Python. Only the
# kernel tables this CPU runs (FASTNN_CPU_TABLES=native): the suite cannot exercise the others.
# libstdc++ goes in too: Python does not link it, and ASan's __cxa_throw interceptor must find it
# at start-up (otherwise the first C++ exception aborts).
ASAN_LIB = $(shell $(CXX) -print-file-name=libasan.so) $(shell $(CXX) -print-file-name=libstdc++.so)
sanitize: $(VENV)/.deps
	rm -rf build/asan && FASTNN_SANITIZE=1 FASTNN_CUDA=0 FASTNN_CPU_TABLES=native $(VPY) setup.py build_ext \
		--build-temp build/asan/tmp --build-lib build/asan/lib
	cp fastnn/*.py build/asan/lib/fastnn/
	cd build/asan/lib && LD_PRELOAD="$(ASAN_LIB)" \
		ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1 \
		UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 HYPOTHESIS_PROFILE=sanitize \
		../../../$(VPY) -m pytest -q -p no:cacheprovider ../../../tests \
		--deselect ../../../tests/test_validate.py -k "not notmnist"
	@echo "make sanitize: clean (ASan + UBSan)"

clean:
	rm -rf build *.egg-info fastnn/*.so
