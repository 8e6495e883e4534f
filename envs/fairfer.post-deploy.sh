#!/usr/bin/env bash
# Run by snakemake after it creates envs/fairfer.yaml (--sdm conda).
set -euo pipefail
python -m pip install --no-deps facenet-pytorch==2.5.3
python -m pip install --no-deps torchaudio==2.11.0
