# gguf-trim: set-up, vendor sources, test models, tests, demo.
PY          ?= python3
VENV        ?= .venv
VPY         := $(VENV)/bin/python
SHARED      ?= ../shared
TRAIN       := --corpus $(SHARED)/corpus/train/en.txt --corpus $(SHARED)/corpus/train/vi.txt
HELDOUT     := --text $(SHARED)/corpus/dev/en.txt --text $(SHARED)/corpus/dev/vi.txt
LLAMA_CPP_PYTHON_VERSION := 0.3.36
LLAMA_CPP_PYTHON_SHA256  := 832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
# A native build segfaults in ggml_backend_amx_mul_mat on this project's CPUs: build a portable AVX2 one,
# plus AVX-512 (VNNI, VBMI, BF16) and AVX-VNNI where /proc/cpuinfo shows them (batched decoding ~1.3x
# faster on this project's CPUs; docs/benchmarks.md), never AMX. `make setup AVX512=0` leaves them out.
AVX512      ?= 1
cpu_has      = $(shell grep -q -w -m1 '$(1)' /proc/cpuinfo 2>/dev/null && echo yes)
AVX512_ARGS := $(if $(filter 1,$(AVX512)),$(if $(and $(call cpu_has,avx512f),$(call cpu_has,avx512bw),\
	$(call cpu_has,avx512dq),$(call cpu_has,avx512vl),$(call cpu_has,avx512cd)),-DGGML_AVX512=ON \
	$(if $(call cpu_has,avx512_vnni),-DGGML_AVX512_VNNI=ON) $(if $(call cpu_has,avx512vbmi),-DGGML_AVX512_VBMI=ON) \
	$(if $(call cpu_has,avx512_bf16),-DGGML_AVX512_BF16=ON)) $(if $(call cpu_has,avx_vnni),-DGGML_AVX_VNNI=ON))
CPU_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	$(if $(call cpu_has,bmi2),-DGGML_BMI2=ON) $(AVX512_ARGS)
GPU_CMAKE_ARGS := -DGGML_CUDA=ON -DGGML_NATIVE=OFF

.PHONY: llama-tools cmake-args setup setup-gpu setup-train setup-ray vendor models models-big lang-texts test test-train test-ray lint demo bench bench-translate \
	bench-refine bench-finetune bench-train-cost bench-grammar bench-runtimes bench-languages frontier clean docs-cli

# The venv with llama-cpp-python, and llama.cpp's own tools for the tests of stock llama-server (marker `server`).
setup: $(VENV)/.installed llama-tools

cmake-args:
	@echo $(strip $(CPU_CMAKE_ARGS))

# llama-cpp-python is built once per set of CMAKE_ARGS: the stamp is named after them, so changed flags
# (or a new CPU) rebuild it in an existing venv.
LLAMA_STAMP := $(VENV)/.llama-$(shell echo '$(LLAMA_CPP_PYTHON_VERSION) $(strip $(CPU_CMAKE_ARGS))' | cksum | cut -d' ' -f1)

$(VPY):
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip

$(LLAMA_STAMP): | $(VPY)
	@echo "llama-cpp-python CMAKE_ARGS: $(strip $(CPU_CMAKE_ARGS))"
	CMAKE_ARGS="$(strip $(CPU_CMAKE_ARGS))" $(VPY) -m pip install --force-reinstall --no-deps --no-cache-dir \
		"llama-cpp-python==$(LLAMA_CPP_PYTHON_VERSION)"
	$(VPY) -m pip install "llama-cpp-python==$(LLAMA_CPP_PYTHON_VERSION)"
	rm -f $(VENV)/.llama-*
	touch $@

$(VENV)/.installed: pyproject.toml $(LLAMA_STAMP)
	$(VPY) -m pip install -e ".[dev,hf]"
	$(VPY) -c "import llama_cpp, gguf_trim; print('llama-cpp-python', llama_cpp.__version__)"
	touch $@

# CUDA build for 24G/40G cards (needs nvcc); reinstalls llama-cpp-python in the same venv.
setup-gpu: setup
	CMAKE_ARGS="$(GPU_CMAKE_ARGS)" $(VPY) -m pip install --force-reinstall --no-deps --no-cache-dir \
		"llama-cpp-python==$(LLAMA_CPP_PYTHON_VERSION)"

# GPU check (docs/benchmarks.md#gpu-check). gpu-pack, here (online): gpu-pack/ with llama-cpp-python's sources pruned
# to a CPU + CUDA build, the wheels of the trim path a PyTorch machine may lack, and vocab-qwen2.gguf; it fails
# over 60 MB. gpu-check, on an offline machine with one NVIDIA GPU, nvcc, CMake and PyTorch, the pack beside the
# repository: builds for that GPU's compute capability only, trims a Qwen2.5-7B-shaped model and times both
# (tok/s, GPU memory) within GPU_CHECK_BUDGET seconds, writes $(OUT)/gpu-check.json and .md.
.PHONY: gpu-pack gpu-check
GPU_PACK         ?= gpu-pack
OUT              ?= build/gpu-check/report
GPU_CHECK_BUDGET ?= 540
GPU_CHECK_ARGS   ?=
gpu-pack: vendor
	test -f models/vocab-qwen2.gguf || $(PY) scripts/fetch_models.py vocabs
	$(PY) scripts/gpu_pack.py --out $(GPU_PACK) --version $(LLAMA_CPP_PYTHON_VERSION) \
		--sha256 $(LLAMA_CPP_PYTHON_SHA256) --vocab models/vocab-qwen2.gguf

gpu-check:
	@$(PY) scripts/gpu_check.py --pack $(GPU_PACK) --out $(OUT) --budget $(GPU_CHECK_BUDGET) $(GPU_CHECK_ARGS)

# The `train` extra for `gguf-trim refine`: PyTorch, transformers, accelerate. torch 2.13.0 because this
# project's machines hold a CPU build of it that pip takes without a download; elsewhere pip fetches PyPI's
# (CUDA) build of it. TORCH_SPEC=torch picks the newest instead.
TORCH_SPEC ?= torch==2.13.0
setup-train: $(VENV)/.installed-train

$(VENV)/.installed-train: $(VENV)/.installed pyproject.toml
	$(VPY) -m pip install "$(TORCH_SPEC)"
	$(VPY) -m pip install -e ".[dev,train]"
	$(VPY) -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
	touch $@

# The `ray` extra for `gguf-trim translate --ray` (install the same on every node of a cluster).
RAY_SPEC ?= ray==2.60.0
setup-ray: $(VENV)/.installed-ray

$(VENV)/.installed-ray: $(VENV)/.installed pyproject.toml
	$(VPY) -m pip install "$(RAY_SPEC)"
	$(VPY) -m pip install -e ".[dev,ray]"
	$(VPY) -c "import ray; print('ray', ray.__version__)"
	touch $@

vendor: vendor/llama.cpp/.extracted

vendor/llama.cpp/.extracted:
	mkdir -p vendor/.sdist
	$(PY) -m pip download --quiet --no-deps --no-binary :all: -d vendor/.sdist \
		"llama-cpp-python==$(LLAMA_CPP_PYTHON_VERSION)"
	echo "$(LLAMA_CPP_PYTHON_SHA256)  vendor/.sdist/llama_cpp_python-$(LLAMA_CPP_PYTHON_VERSION).tar.gz" | sha256sum -c -
	rm -rf vendor/llama.cpp && mkdir -p vendor/llama.cpp
	tar -xzf vendor/.sdist/llama_cpp_python-$(LLAMA_CPP_PYTHON_VERSION).tar.gz -C vendor/llama.cpp \
		--strip-components=3 llama_cpp_python-$(LLAMA_CPP_PYTHON_VERSION)/vendor/llama.cpp
	touch $@

# llama.cpp's own tools (llama-server, llama-cli, llama-perplexity) from the same vendored sources as
# llama-cpp-python, with the same CPU flags (never AMX), out of tree in build/llama.cpp (~11 min on 2 cores).
# Built once per set of flags (stamp named after them, as for llama-cpp-python). No web UI: the prebuilt one
# would be downloaded from a model hub.
LLAMA_TOOLS_DIR   := build/llama.cpp
LLAMA_TOOLS_STAMP := $(LLAMA_TOOLS_DIR)/.tools-$(shell echo '$(LLAMA_CPP_PYTHON_VERSION) $(strip $(CPU_CMAKE_ARGS))' | cksum | cut -d' ' -f1)
LLAMA_TOOLS       := llama-server llama-cli llama-perplexity

llama-tools: $(LLAMA_TOOLS_STAMP)

$(LLAMA_TOOLS_STAMP): vendor/llama.cpp/.extracted
	cmake -S vendor/llama.cpp -B $(LLAMA_TOOLS_DIR) -DCMAKE_BUILD_TYPE=Release $(strip $(CPU_CMAKE_ARGS)) \
		-DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_UI=OFF \
		-DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF
	cmake --build $(LLAMA_TOOLS_DIR) --target $(LLAMA_TOOLS) -j$$(nproc)
	rm -f $(LLAMA_TOOLS_DIR)/.tools-*
	touch $@

models: vendor
	$(PY) scripts/fetch_models.py gemma-3-270m-q4_k_m.gguf qwen2.5-coder-0.5b-instruct.gguf \
		smollm2-135m-instruct-q4_1.gguf vocabs
	$(MAKE) lang-texts

# Qwen2.5-Coder-1.5B-Instruct (1.1 GB): for demos and benchmarks, not for every test run.
models-big:
	$(PY) scripts/fetch_models.py qwen2.5-coder-1.5b-instruct-q4_k_m.gguf

# Per-language test texts and English-X pairs (ko ja ru th hi ar zh-Hans zh-Hant fr de es pt it id tr uk fa bn vi)
# from the gettext catalogues of ~20 Debian packages (apt-get download, cached in models/langs/.debs).
lang-texts:
	$(PY) scripts/build_lang_texts.py --out models/langs

# One tests/ tree: the tests of the train and ray extras (pytest markers; skipped, with the reason, where
# the extra is missing) are left out here even in a venv that has the extras.
test: setup models
	$(VPY) -m pytest -q tests -m "not train and not ray"

# Training tests (refine): need the train extra.
test-train: setup-train models
	$(VPY) -m pytest -q tests -m train

# Ray tests (translate --ray on a 2-worker Ray head the tests start on this machine): need the ray extra.
test-ray: setup-ray models
	$(VPY) -m pytest -q tests -m ray

lint: setup
	$(VPY) -m ruff check gguf_trim tests scripts

demo: setup models
	$(VPY) -m gguf_trim.cli demo

# docs/cli.md from every command's --help (tests/test_cli.py fails when it is stale).
docs-cli: setup
	$(VPY) -m gguf_trim.cli.docs > docs/cli.md

# Inference benchmark (fresh process per run, original/trimmed interleaved, medians of 5) and trim
# throughput against cp, on Gemma-3-270m and Qwen2.5-Coder-0.5B plus a generated 7B-shaped file, then
# translation throughput (bench-translate).
bench: setup models
	mkdir -p docs/results
	$(VPY) -m gguf_trim.cli trim models/gemma-3-270m-q4_k_m.gguf -o models/gemma-3-270m-q4_k_m.envi.gguf
	$(VPY) -m gguf_trim.cli trim models/qwen2.5-coder-0.5b-instruct.gguf -o models/qwen2.5-coder-0.5b-instruct.envi.gguf
	$(VPY) -m gguf_trim.cli trim models/gemma-3-270m-q4_k_m.gguf -o models/gemma-3-270m-q4_k_m.compact.gguf \
		--profile compact --target-size 131072 $(TRAIN)
	$(VPY) -m gguf_trim.cli trim models/qwen2.5-coder-0.5b-instruct.gguf \
		-o models/qwen2.5-coder-0.5b-instruct.compact.gguf --profile compact --target-size 75968 $(TRAIN)
	$(VPY) -m gguf_trim.cli bench infer models/gemma-3-270m-q4_k_m.gguf models/gemma-3-270m-q4_k_m.envi.gguf \
		models/gemma-3-270m-q4_k_m.gguf models/gemma-3-270m-q4_k_m.compact.gguf \
		models/qwen2.5-coder-0.5b-instruct.gguf models/qwen2.5-coder-0.5b-instruct.envi.gguf \
		models/qwen2.5-coder-0.5b-instruct.gguf models/qwen2.5-coder-0.5b-instruct.compact.gguf \
		--runs 5 --json docs/results/bench.json --md docs/results/bench.md --png docs/results/bench.png
	$(VPY) -m gguf_trim.cli bench trim models/gemma-3-270m-q4_k_m.gguf models/qwen2.5-coder-0.5b-instruct.gguf \
		--synthetic-7b models --synthetic-split 2G --vocab models/vocab-qwen2.gguf --runs 5 --json docs/results/bench-trim.json
	$(VPY) -m gguf_trim.cli bench vram --spec all --quant Q4_K_M
	$(MAKE) bench-translate

# Translation throughput: sequential vs batched decoding (output tok/s on 64 dev segments), identical
# outputs and chrF, for Gemma-3-270m (few-shot) and Qwen2.5-Coder-0.5B (chat), and against stock
# llama-server -np 16 on the same segments (the ratio). Run on an idle machine.
bench-translate: setup models
	mkdir -p docs/results
	$(VPY) -m gguf_trim.cli trim models/qwen2.5-coder-0.5b-instruct.gguf -o models/qwen2.5-coder-0.5b-instruct.envi.gguf
	$(VPY) -m gguf_trim.cli bench translate models/gemma-3-270m-q4_k_m.gguf models/qwen2.5-coder-0.5b-instruct.gguf \
		models/qwen2.5-coder-0.5b-instruct.envi.gguf --pairs $(SHARED)/corpus/dev/prose.en-vi.tsv --n 64 \
		--server-parallel 16 --json docs/results/bench-translate.json

# Refining an extension (issue 12): Gemma-3-270m trimmed, extended with 2,000 compound words ranked on the
# training text, then the new rows trained on train/vi.txt (train/en.txt is given too: refine's --mix auto
# holds it out for scoring and does not train on it, as it has no added tokens); bits per byte against the
# trimmed model on the dev text and on the lines refine held out, tokens, and greedy Vietnamese generation
# speed (completions of dev lines, En->Vi translations of dev pairs; the three models timed in turns). The
# curve (about ten points) also scores 300 dev lines (--eval-text: never trained on).
# The default 1.3M tokens (docs/results/refine.json, with refine's compound-or-first-piece loss and the model's own
# continuations of 4,000 line heads, --self-text, drawn for a quarter of the sequences) took 1 h 18 min on
# the 2-core CPU, plus 10 min for the bench (the 2M-token run without those, docs/results/refine-2m-ce.json,
# 1 h 38 min); REFINE_TOKENS=200000 is a quick look. On a GPU box add
# REFINE_ARGS="--device cuda"; REFINE_ARGS="--threads 1" is faster on a CPU another job shares.
REFINE_TOKENS ?= 1300000
REFINE_ARGS   ?=
GEMMA_ENVI    := models/gemma-3-270m-q4_k_m.envi
bench-refine: setup-train models
	mkdir -p docs/results
	$(VPY) -m gguf_trim.cli trim models/gemma-3-270m-q4_k_m.gguf -o $(GEMMA_ENVI).gguf
	$(VPY) -m gguf_trim.cli extend $(GEMMA_ENVI).gguf --words $(SHARED)/lexicon/vi_compounds.tsv --top 2000 \
		--corpus $(SHARED)/corpus/train/vi.txt -o $(GEMMA_ENVI).vi2000.gguf
	$(VPY) -m gguf_trim.cli refine $(GEMMA_ENVI).vi2000.gguf --corpus $(SHARED)/corpus/train/vi.txt \
		--corpus $(SHARED)/corpus/train/en.txt -o $(GEMMA_ENVI).vi2000.refined.gguf --tokens $(REFINE_TOKENS) \
		--eval-text $(SHARED)/corpus/dev/vi.txt --batch 4 --seq-len 256 --lr 3e-4 --warmup 10 \
		--eval-every $$(( $(REFINE_TOKENS) / 10240 )) --json docs/results/refine.json $(REFINE_ARGS)
	$(VPY) -m gguf_trim.cli bench refine $(GEMMA_ENVI).gguf $(GEMMA_ENVI).vi2000.gguf $(GEMMA_ENVI).vi2000.refined.gguf \
		--vi $(SHARED)/corpus/dev/vi.txt --en $(SHARED)/corpus/dev/en.txt --json docs/results/refine-bench.json \
		--corpus $(SHARED)/corpus/train/vi.txt --corpus $(SHARED)/corpus/train/en.txt \
		--pairs $(SHARED)/corpus/dev/prose.en-vi.tsv

# LoRA fine-tuning for translation (issue 27): Gemma-3-270m trimmed, finetune on the train prose pairs (both
# directions, the held-out loss every 100 steps), then chrF of the base and base + adapter on 64 dev prose
# pairs. FINETUNE_TOKENS answer tokens: 80,000 take about 45 min on 2 idle cores (a GPU run:
# FINETUNE_TOKENS=1000000 FINETUNE_ARGS="--device cuda").
FINETUNE_TOKENS ?= 80000
FINETUNE_ARGS   ?=
bench-finetune: setup-train models
	mkdir -p docs/results
	$(VPY) -m gguf_trim.cli trim models/gemma-3-270m-q4_k_m.gguf -o $(GEMMA_ENVI).gguf
	$(VPY) -m gguf_trim.cli bench finetune $(GEMMA_ENVI).gguf --pairs $(SHARED)/corpus/train/prose.en-vi.tsv \
		--dev $(SHARED)/corpus/dev/prose.en-vi.tsv --n 64 -o $(GEMMA_ENVI).lora.gguf --tokens $(FINETUNE_TOKENS) \
		--eval-every 100 --json docs/results/bench-finetune.json --md docs/results/bench-finetune.md $(FINETUNE_ARGS)

# What trimming saves in training (issue 33): seconds per step and peak memory of refine (200 added compounds)
# and finetune (LoRA, the same pairs, the same answer tokens per step) on Gemma-3-270m and Qwen2.5-Coder-0.5B,
# their lossless and compact (half the vocabulary) trims; the logits in blocks (as training runs), all at once,
# and with a one-row head (the bound: the LM head's share). Each run in a fresh process; trims in build/train-cost.
# TRAIN_COST_ARGS="--device cuda" on a GPU box; "--steps 3" for a quick look.
TRAIN_COST_ARGS ?=
bench-train-cost: setup-train models
	mkdir -p docs/results
	$(VPY) -m gguf_trim.cli bench train-cost models/gemma-3-270m-q4_k_m.gguf models/qwen2.5-coder-0.5b-instruct.gguf \
		--pairs $(SHARED)/corpus/train/prose.en-vi.tsv --corpus $(SHARED)/corpus/train/en.txt \
		--corpus $(SHARED)/corpus/train/vi.txt --words $(SHARED)/lexicon/vi_compounds.tsv --top 200 \
		--json docs/results/train-cost.json --md docs/results/train-cost.md $(TRAIN_COST_ARGS)

# Foreign-script outputs on adversarial prompts (asking for Chinese, Japanese, Korean, Russian, Thai) in stock
# llama-server and in gguf-trim's llama-cpp-python path (script guard): original, trimmed --no-suppress,
# trimmed + suppress list, + allowed-character grammar (issue 26). About 25 min on 2 cores.
bench-runtimes: setup models
	mkdir -p docs/results
	$(VPY) -m gguf_trim.cli bench runtimes models/qwen2.5-coder-0.5b-instruct.gguf \
		--json docs/results/runtimes.json --md docs/results/runtimes.md

# Every language set en+X (X: vi ko ja ru th hi ar zh-Hans fr de es uk fa bn) on Qwen2.5-Coder-0.5B and
# Gemma-3-270m: lossless trim (kept tokens, size, suppress list), fidelity and logits on models/langs texts,
# decode speed, and for Qwen (a chat model) 6 adversarial prompts x 8 seeds at T=1.2 in stock llama-server
# (original, no list, list, list + grammar; -np 8) and with the script guard (issue 32). About 1 h on 2 idle
# cores (estimated from one set; llama.cpp slows down many times over on a busy machine). Progress on stderr.
bench-languages: setup models
	mkdir -p docs/results
	$(VPY) -m gguf_trim.cli bench languages models/qwen2.5-coder-0.5b-instruct.gguf models/gemma-3-270m-q4_k_m.gguf \
		--json docs/results/languages.json --md docs/results/languages.md

# A grammar of the allowed characters against the suppress list alone, in stock llama-server (tok/s).
bench-grammar: setup models
	$(VPY) -m gguf_trim.cli trim models/qwen2.5-coder-0.5b-instruct.gguf -o models/qwen2.5-coder-0.5b-instruct.envi.gguf
	$(VPY) -m gguf_trim.cli bench grammar models/qwen2.5-coder-0.5b-instruct.envi.gguf --n 12 --tokens 64 \
		--temperature 0.8 --threads 2 --json docs/results/bench-grammar.json

# Trims at the size users run (issue 33): synthetic Qwen2.5-72B- and Llama-3.1-70B-shaped Q4_K_M files (the
# vendored vocabularies, n_vocab x 8192 vocab tensors, fewer layers) of about 2 GB and 20 GB, trimmed
# against cp with the page cache dropped before every command (root), peak RSS, verify; the files
# (source + one copy: ~41 GB free needed at 20 GB) are deleted at the end. Not part of `make test`.
BENCH_SCALE_ARGS ?= --spec qwen2.5-72b --spec llama-3.1-70b --sizes 2G,20G --runs 3
.PHONY: bench-scale soak
bench-scale: setup models
	mkdir -p docs/results
	$(VPY) -m gguf_trim.cli bench scale $(BENCH_SCALE_ARGS) --json docs/results/bench-scale.json \
		--md docs/results/bench-scale.md

# Soak (issue 33; minutes, not part of `make test`): a 2,000-segment translate job killed with SIGKILL 20
# times and resumed, trim killed 10 times, trim into a full 100 MB tmpfs, and (with the train extra) a
# finetune killed 5 times and resumed; one summary line, exit 1 on any failure.
SOAK_ARGS ?=
soak: setup models
	mkdir -p docs/results
	$(VPY) scripts/soak.py --json docs/results/soak.json $(SOAK_ARGS)

# Compact profile frontier: sizes 35-60% chosen from the train corpus; line fidelity on the held-out
# dev text for all three, bits per byte for the two models with weights; counting speed.
frontier: setup models
	mkdir -p docs/results
	$(VPY) -m gguf_trim.cli bench frontier models/vocab-qwen2.gguf models/gemma-3-270m-q4_k_m.gguf \
		models/qwen2.5-coder-0.5b-instruct.gguf $(TRAIN) $(HELDOUT) --bpb-lines 200 \
		--json docs/results/frontier.json --md docs/results/frontier.md --png docs/results/frontier.png

clean:
	rm -rf $(VENV) vendor build models/*.gguf models/.wheels .pytest_cache
