#!/usr/bin/env bash
# Create the pinned fairfer environment in .venv (or $FAIRFER_VENV): the one install command.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${FAIRFER_VENV:-.venv}
python=${PYTHON:-python3}
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -r envs/requirements.txt
# facenet-pytorch 2.5.3 declares torch<2.3 and numpy<2 although it runs on the pinned stack;
# installing it without its dependencies keeps pip from downgrading torch and numpy.
"$venv/bin/python" -m pip install --quiet --no-deps facenet-pytorch==2.5.3
# torchaudio 2.11 declares torch==2.11.0; its MelSpectrogram (pure Python on torch.stft) runs
# on the pinned torch, which --no-deps keeps.
"$venv/bin/python" -m pip install --quiet --no-deps torchaudio==2.11.0
# The fairfer package itself (scripts/fairfer), editable: the workflow, tests and benchmarks
# import it from the checkout without any sys.path edits.
"$venv/bin/python" -m pip install --quiet --no-deps --editable .
"$venv/bin/python" -c "import av, facenet_pytorch, fairfer, torch, torchaudio; print('fairfer environment ready:', torch.__version__)"
