#!/usr/bin/env bash
# Install spikeport and everything it needs into the current Python 3.11 environment.
# Versions are pinned. Lava 0.10.0 / lava-dl 0.6.0 declare Python < 3.11 and pull torch 2.3 and
# torchvision; they are installed without their declared dependencies, which are pinned here
# (spikeport makes them importable on 3.11 at run time, see docs/loihi2.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP="$PY -m pip install --disable-pip-version-check -q"

"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"spikeport needs Python 3.11, found {sys.version}"'

# torch first: the local CPU wheel (any other spec pulls gigabytes of CUDA packages).
$PIP torch==2.13.0
# Scientific stack at the versions Lava accepts (numpy < 2, networkx <= 2.8.7).
$PIP numpy==1.26.4 scipy==1.13.1 scikit-learn==1.5.2 networkx==2.8.7 asteval==0.9.33 \
     h5py==3.11.0 matplotlib==3.9.2 pillow==10.4.0 \
     onnx==1.23.2 onnxruntime==1.31.1 typer==0.29.2 rich==15.0.0 \
     pytest==9.2.0 hypothesis==6.155.2
# NIR graph read/write (needs only numpy and h5py, pinned above).
$PIP --no-deps nir==1.0.8
# onnx2torch declares torchvision (only for NMS/RoIAlign); no torchvision works with this torch.
$PIP --no-deps onnx2torch==1.5.15
# Lava and lava-dl without their declared (Python 3.10 / torch 2.3) dependencies.
$PIP --no-deps --ignore-requires-python lava-nc==0.10.0 lava-dl==0.6.0
# SpiNNaker community libraries (PACMAN routing tables/compressors, spinnmachine machine model, spinnman
# EIEIO messages; pure Python), without their declared dependencies: those spikeport's imports need are
# pinned here (checked in a clean venv); the rest serve board access and reports spikeport never uses
# (spinnman: websocket-client, ebrains_drive; spinn_utilities: requests, pyyaml; PACMAN: jsonschema).
$PIP --no-deps "spinnutilities==1!7.4.1" "spinnmachine==1!7.4.1" "spinnaker-pacman==1!7.4.1" "spinnman==1!7.4.1" \
     appdirs==1.4.4 docstring_parser==0.18.0 deprecated==1.3.1 wrapt==2.1.2 typing_extensions==4.15.0
# spikeport itself, editable, without re-resolving the pins above.
$PIP --no-deps -e .
command -v pyenv >/dev/null 2>&1 && pyenv rehash || true   # make the `spikeport` command visible under pyenv
"$PY" -c 'import spikeport, torch, numpy; print(f"spikeport {spikeport.__version__} installed (torch {torch.__version__}, numpy {numpy.__version__})")'
