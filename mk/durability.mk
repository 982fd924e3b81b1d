# Issue 11's proofs of the durable queue (included by the Makefile).
#   make durability                      every proof, (a) to (g), against real processes; the
#                                        table goes to docs/durability-last-run.md and README
#                                        "Durability"; exits 1 when a proof fails (a CI gate)
#   make durability DURABILITY_ARGS='--only a,f'           some proofs
#   make durability DURABILITY_ARGS='--outage 10'          a short outage, while developing
# Proof (d) mounts a 1 MiB tmpfs, so it needs root (CI runs as root).

DURABILITY_ARGS ?=
DURABILITY_TIMEOUT ?= 600

.PHONY: durability

durability: venv ## prove the durable queue: kill -9, outage, SIGTERM, full disk, corrupt file, order, dedup
	@echo "==> durability (tools/durability.py: real sidecars, sandbox, SQLite files)"
	@timeout $(DURABILITY_TIMEOUT) $(PY) tools/durability.py --readme README.md $(DURABILITY_ARGS)
