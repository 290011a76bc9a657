#!/usr/bin/env bash
# Regenerate the hash-pinned lock files from pyproject.toml: runtime (the image, systemd hosts) and dev
# (CI and the README's test command, the runtime pins as constraints so tests run what ships).
# Needs uv (`pip install uv`): one resolution for every Python 3.11+ and platform (--universal: markers such
# as uvloop's or redis's async-timeout on 3.11.0-3.11.2 are kept, not decided by this machine's Python),
# against PyPI alone, whatever local pip configuration says, so every hash is PyPI's.
# Extra arguments go to both runs, e.g. --upgrade. Behind a TLS-intercepting proxy: UV_NATIVE_TLS=1.
set -euo pipefail
cd "$(dirname "$0")/../.."

export UV_CUSTOM_COMPILE_COMMAND="bash config/deploy/lock.sh" UV_NO_CONFIG=1
unset UV_INDEX_URL UV_EXTRA_INDEX_URL UV_FIND_LINKS UV_INDEX UV_DEFAULT_INDEX
common=(--quiet --universal --python-version 3.11 --generate-hashes --no-emit-index-url
        --default-index https://pypi.org/simple "$@")

uv pip compile "${common[@]}" -o config/deploy/requirements.txt pyproject.toml
uv pip compile "${common[@]}" --extra dev -c config/deploy/requirements.txt \
    -o config/deploy/requirements-dev.txt pyproject.toml
