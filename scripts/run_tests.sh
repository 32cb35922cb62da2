#!/usr/bin/env bash
# Set up (or reuse) .venv, then run the test suite on CPU: the default suite skips the tests
# marked slow (the quick demo, method studies, multi-process runs); `-m slow` runs only those,
# `-m ''` everything. CI (.ci/run) runs both.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/ensure_env.sh"
cd "$root"
export JAX_PLATFORMS=cpu TF_CPP_MIN_LOG_LEVEL=3
exec .venv/bin/python -m pytest -n 2 --dist loadfile -q -m "not slow" "$@"
