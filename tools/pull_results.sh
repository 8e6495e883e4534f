#!/usr/bin/env bash
# Fetch finished results from the DVC remote and make Snakemake accept them as up to date.
#
#   tools/pull_results.sh [extra dvc pull options]
#
# Use it after cloning, and after each `git checkout`/`git pull` that moves dvc.lock: it runs
# `dvc pull` (data and every stage's outputs), then checks with `dvc status` that what is on
# disk is exactly what dvc.lock records for this checkout's code, data and parameters.
#
# Why the last step: a checkout writes every file with the time of the checkout, in no
# particular order, and a fresh clone has no Snakemake metadata (.snakemake/). Snakemake would
# plan reruns wherever an input looks newer than its outputs, and could not see a later change
# of parameters or code. Once DVC has vouched for the outputs, `snakemake --touch --forceall`
# re-stamps them in the order of the DAG and records their metadata, as if computed here.
set -euo pipefail
cd "$(dirname "$0")/.."
# FAIRFER_VENV: another environment to use, as an absolute path or relative to the checkout.
venv=$(realpath -m "${FAIRFER_VENV:-.venv}")
[ -d "$venv/bin" ] && PATH="$venv/bin:$PATH"

dvc pull "$@"
if ! dvc status --quiet; then
  dvc status >&2
  echo "pull_results: the files on disk differ from dvc.lock (above); run 'dvc repro' or" \
    "check out the commit whose results you pulled. Snakemake's state was left as it was." >&2
  exit 1
fi
# The download rules' outputs are temp() and absent by design; the warnings would be noise.
snakemake --touch --forceall --cores 1 --quiet all >/dev/null
echo "pull_results: outputs match dvc.lock; Snakemake now sees them as up to date." >&2
