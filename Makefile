# The README's two commands: `make demo` and `make test`. Each creates .venv when it is missing.
# TORCH=<pip requirement> chooses the torch to install (e.g. TORCH=torch==2.5.1); by default a wheel
# already on this machine is used, else the CPU build where there is no NVIDIA GPU, else the default index's torch.
PYTHON ?= python3
VENV ?= .venv
TORCH ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.mct-installed

.PHONY: demo test bench recipes venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
	@if [ -n "$(TORCH)" ]; then \
		$(BIN)/pip install -q "$(TORCH)"; \
	elif $(BIN)/python -c "import torch" 2>/dev/null; then \
		true; \
	elif $(BIN)/pip install -q --no-index --no-deps torch 2>/dev/null; then \
		echo "torch: installed the wheel found on this machine"; \
		$(BIN)/pip install -q torch; \
	elif ! command -v nvidia-smi >/dev/null 2>&1; then \
		echo "torch: no NVIDIA GPU found, installing the CPU build"; \
		$(BIN)/pip install -q --retries 1 --timeout 20 --extra-index-url https://download.pytorch.org/whl/cpu \
			torch || $(BIN)/pip install -q torch; \
	else \
		$(BIN)/pip install -q torch; \
	fi
	$(BIN)/pip install -q -e ".[dev]"
	@# the tl extra (TransformerLens, for mct export and its tests), never at the cost of the torch chosen above
	@$(BIN)/python -c "import torch; print('torch==' + torch.__version__)" > $(VENV)/torch-pin.txt
	@$(BIN)/pip install -q -e ".[dev,tl]" -c $(VENV)/torch-pin.txt || \
		echo "transformer_lens: not installed (it needs torch>=2.6; this venv has $$(cat $(VENV)/torch-pin.txt)); the export tests are skipped"
	@touch $(STAMP)

# The demo (re)creates runs/demo: train the default 3-digit adder, evaluate it, draw its attention.
DEMO := runs/demo
demo: venv
	$(BIN)/mct doctor
	$(BIN)/mct train --out $(DEMO) --force
	$(BIN)/mct eval $(DEMO)/best.pt $(DEMO)/data/test.jsonl --errors $(DEMO)/errors.jsonl --force
	$(BIN)/mct generate $(DEMO)/best.pt "12+34=" "999+1=" "505+495="
	$(BIN)/mct attn $(DEMO)/best.pt "12+34=" --layer 1 --out $(DEMO)/attention.png --force
	@echo
	@echo "Results in $(DEMO)/: best.pt (model), eval.json (test metrics), curves.png (training curves),"
	@echo "errors.jsonl (wrong answers, if any), attention.png (layer 1 of the model, every head, on 12+34=)."

test: venv
	$(BIN)/python -m pytest

recipes: venv
	$(BIN)/python benchmarks/recipes.py $(RECIPES_ARGS)

bench: venv
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
