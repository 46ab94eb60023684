#!/usr/bin/env bash
# Work pools `cpu` and `gpu` (process type), the `gpu` tag concurrency limit, and the deployments
# of deployments/prefect.yaml, on the Prefect server of PREFECT_API_URL. Idempotent: run it again
# after editing prefect.yaml (pools and the limit are left as they are, deployments are updated).
#
#   export PREFECT_API_URL=http://127.0.0.1:4200/api   # a running `prefect server start`
#   deployments/setup.sh                                # every deployment in prefect.yaml
#   deployments/setup.sh nightly-enhancement retrain    # only the named ones
#
# Uses the `prefect` on PATH: run it with this project's virtualenv active (or PATH=.venv/bin:$PATH),
# the same environment the workers run in.
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# prefect.yaml's entrypoints (flows/...) are resolved against the current directory, and its
# build step records this directory as the one flow runs start in.
cd "$REPO_DIR"

ensure_pool() {
    local out
    if out=$(prefect --no-prompt work-pool create "$1" --type process 2>&1); then
        echo "work pool '$1' created"
    elif grep -q "already exists" <<<"$out"; then
        echo "work pool '$1' exists"
    else
        echo "$out" >&2
        return 1
    fi
}

ensure_pool cpu
ensure_pool gpu

# At most one task tagged `gpu` (flows/train.py's train-model) runs at a time on this server.
# An upsert: re-running only sets the value. With N GPUs: `prefect concurrency-limit create gpu N`.
prefect --no-prompt concurrency-limit create gpu 1 >/dev/null
echo "tag concurrency limit 'gpu' = 1"

if [ "$#" -eq 0 ]; then
    selection=(--all)
else
    selection=()
    for name in "$@"; do selection+=(--name "$name"); done
fi
prefect --no-prompt deploy "${selection[@]}" --prefect-file deployments/prefect.yaml
