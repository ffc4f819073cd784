# daetalker_jax — see README.md. Every target runs on CPU; set DATA/WORKDIR to your own paths.
SHELL := /bin/bash
VENV ?= .venv
PYTHON := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export TF_CPP_MIN_LOG_LEVEL ?= 2

DATA ?= runs/data
SYNTH ?= runs/synth_videos
DAE_WORKDIR ?= runs/dae
S2L_WORKDIR ?= runs/s2l
DIFFTALK_WORKDIR ?= runs/demo_difftalk/difftalk
LANDMARK_WORKDIR ?= runs/demo_landmark/talkformer
METHOD ?= dae_talker
DAE_CONFIG ?= configs/dae.py:variant=demo
S2L_CONFIG ?= configs/s2l.py:variant=demo
AUDIO ?=
OUT ?= runs/generated.mp4
EVAL_FLAGS ?= --steps 10 --max-clips 2 --max-frames 100
# Accelerator runtime: empty = the CPU jaxlib only (requirements.txt); `make install ACCEL=tpu` (Cloud TPU VM,
# libtpu) or `ACCEL=cuda12` (NVIDIA GPUs) installs requirements-$(ACCEL).txt, the same pins plus jax[$(ACCEL)].
ACCEL ?=
ifneq ($(filter-out tpu cuda12,$(ACCEL)),)
$(error ACCEL=$(ACCEL): choose tpu or cuda12, or leave ACCEL empty for the CPU)
endif
REQUIREMENTS := requirements$(if $(ACCEL),-$(ACCEL)).txt
INSTALLED := $(VENV)/.installed$(if $(ACCEL),-$(ACCEL))

.PHONY: install test demo train_dae extract train_s2l generate eval bench plan synth prepare clean

install: $(INSTALLED)

$(INSTALLED): $(REQUIREMENTS) requirements.txt
	@command -v espeak-ng >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing espeak-ng (Debian package)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null; \
	  else \
	    echo "espeak-ng is missing; install it with: sudo apt-get install -y espeak-ng"; exit 1; \
	  fi; }
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check -r $(REQUIREMENTS)
	touch $@

# Two pytest-xdist workers (the CI machine's 2 cores; TEST_WORKERS=0 runs in one process), each module with
# expensive fixtures on one worker (--dist loadgroup), one compilation cache for the run (tests/conftest.py).
TEST_WORKERS ?= 2
test: install
	$(PYTHON) -m pytest -q --durations=25 -n $(TEST_WORKERS) --dist loadgroup tests

synth: install
	$(PYTHON) -m data_prep.synthface --out $(SYNTH) --clips 40 --seconds 8 --size 128 --seed 0

prepare: install
	$(PYTHON) -m data_prep.prepare --src $(SYNTH) --out $(DATA) --size 128 --crop none --overwrite

train_dae: install
	$(PYTHON) -m daetalker_jax.main --config=$(DAE_CONFIG) --workdir=$(DAE_WORKDIR) \
	  --config.data.data_dir=$(DATA)

extract: install
	$(PYTHON) -m daetalker_jax.main --config=$(DAE_CONFIG) --config.task=extract --workdir=$(DAE_WORKDIR) \
	  --config.data.data_dir=$(DATA)

train_s2l: extract
	$(PYTHON) -m daetalker_jax.main --config=$(S2L_CONFIG) --workdir=$(S2L_WORKDIR) \
	  --config.data.data_dir=$(DATA)

generate: install
	@test -n "$(AUDIO)" || { echo "usage: make generate AUDIO=speech.wav [OUT=video.mp4]"; exit 2; }
	$(PYTHON) -m daetalker_jax.generate --audio $(AUDIO) --dae $(DAE_WORKDIR) --s2l $(S2L_WORKDIR) --out $(OUT)

demo: install
	$(PYTHON) -m daetalker_jax.demo

# On the demo's models: make eval DAE_WORKDIR=runs/demo/dae S2L_WORKDIR=runs/demo/s2l DATA=runs/demo/data
eval: install
ifeq ($(METHOD),difftalk)
	$(PYTHON) -m daetalker_jax.evaluate --method difftalk --model $(DIFFTALK_WORKDIR) --data $(DATA) --split test \
	  --out runs/eval_difftalk/ $(EVAL_FLAGS)
else ifeq ($(METHOD),landmark)
	$(PYTHON) -m daetalker_jax.evaluate --method landmark --model $(LANDMARK_WORKDIR) --data $(DATA) --split test \
	  --out runs/eval_landmark/ $(EVAL_FLAGS)
else
	$(PYTHON) -m daetalker_jax.evaluate --dae $(DAE_WORKDIR) --s2l $(S2L_WORKDIR) --data $(DATA) --split test \
	  --out runs/eval $(EVAL_FLAGS)
endif

bench: install
	$(PYTHON) benchmarks/run_all.py --out runs/bench

# Pod plans (docs/SCALING.md): every method's full-size train step compiled for TPU topologies by libtpu on this
# host; JSON and a table in runs/plan. PLANS=NAME,NAME picks rows of benchmarks/plan_all.py (slow: minutes each).
PLANS ?=
plan: install
	$(PYTHON) -m benchmarks.plan_all --out runs/plan $(if $(PLANS),--only $(PLANS))

clean:
	rm -rf runs
