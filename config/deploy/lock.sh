#!/usr/bin/env bash
# Regenerate the hash-pinned lock files from pyproject.toml: runtime (the image, systemd hosts) and dev
# (CI and the README's test command, the runtime pins as constraints so tests run what ships).
# Needs pip-tools (`pip install pip-tools`) on the Python the image runs (3.11). Resolved against PyPI
# alone, whatever local pip configuration (extra indexes, find-links) says, so every hash is PyPI's.
set -euo pipefail
cd "$(dirname "$0")/../.."

export PIP_CONFIG_FILE=/dev/null CUSTOM_COMPILE_COMMAND="bash config/deploy/lock.sh"
unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_INDEX_URL PIP_CONSTRAINT
common=(--quiet --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url
        --index-url https://pypi.org/simple "$@")

pip-compile "${common[@]}" -o config/deploy/requirements.txt pyproject.toml
pip-compile "${common[@]}" --extra dev -c config/deploy/requirements.txt \
    -o config/deploy/requirements-dev.txt pyproject.toml
