#!/bin/sh
# Install the gateway as the image does, so the image's steps can be run (and tested) outside Docker:
#   install.sh VENV REQUIREMENTS WHEEL
# a fresh virtual environment at VENV, every dependency from the hash-pinned lock REQUIREMENTS (pip refuses
# any file whose hash is not in it), then the gateway's WHEEL alone, then pip's consistency check.
set -eu
if [ "$#" -ne 3 ]; then
    echo "usage: install.sh VENV REQUIREMENTS WHEEL" >&2
    exit 2
fi
venv=$1 requirements=$2 wheel=$3
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --require-hashes --only-binary :all: -r "$requirements"
"$venv/bin/python" -m pip install --quiet --no-deps "$wheel"
"$venv/bin/python" -m pip check
