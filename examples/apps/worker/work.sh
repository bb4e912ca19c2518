#!/usr/bin/env bash
# A batch job: works through a few items and exits 0. With --report it summarises instead.
set -euo pipefail

echo "worker: process type ${BP_PROCESS_TYPE:-unknown}, built by ${BP_BUILT_BY:-unknown buildpacks}"
if [ "${1:-}" = "--report" ]; then
  echo "report: 3 items processed by the last run, 0 failed"
  exit 0
fi
for item in alpha beta gamma; do
  echo "worker: processed $item"
done
echo "worker: done"
