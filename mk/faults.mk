# Issue 10's proof (included by the Makefile).
#   make faults                    every case against a real sidecar; the table goes to
#                                  docs/reliability-last-run.md and README "Reliability"
#   make faults FAULTS_ARGS='--only 2,5 --scale 0.5'   some cases, fewer calls

FAULTS_ARGS ?=

.PHONY: faults

faults: venv ## hostile events, answers and watchers against a real sidecar: one table (README "Reliability")
	@$(PY) tools/faults.py --readme README.md $(FAULTS_ARGS)
