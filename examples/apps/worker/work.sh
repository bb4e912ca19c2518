#!/bin/sh
# A batch worker: works through a queue of items and exits 0 when the queue is empty.
#   ./work.sh            process the queue (the items are the arguments, or a built-in list)
#   ./work.sh --report   summarise the queue instead of processing it
# BP_PROCESS_TYPE is set per process type by the procfile buildpack's launch environment.
set -eu

echo "worker: process type ${BP_PROCESS_TYPE:-unknown}, built by ${BP_BUILT_BY:-unknown buildpacks}"

if [ "${1:-}" = "--report" ]; then
  shift
  [ $# -gt 0 ] || set -- alpha beta gamma
  echo "report: $# items queued: $*"
  exit 0
fi

[ $# -gt 0 ] || set -- alpha beta gamma
done_count=0
for item in "$@"; do
  checksum=$(printf '%s' "$item" | sha256sum | cut -c1-12)
  echo "worker: processed $item (sha256 $checksum)"
  done_count=$((done_count + 1))
done
echo "worker: done, $done_count items"
