#!/usr/bin/env bash
# The cost of data parallelism per model preset on the loopback: configs/smoke.toml with the student at each
# preset, 3 online steps on 2 nodes (orchestrator and both nodes on this machine) and on `--nodes 1`; prints a
# markdown row per preset and reduce kind: mean step time and time in collective operations (steps 1-2; step 0
# warms up).
#   benches/distributed/cost.sh [PRESET...]      (default: student-s student-m student-l teacher)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
atod=${ATOD:-$root/target/release/atod}
work=$(mktemp -d)
trap 'pkill -P $$ || true; rm -rf "$work"' EXIT
presets=${*:-student-s student-m student-l teacher}
base="$root/configs/smoke.toml"
mean() { python3 -c "
import json,sys
lines=[json.loads(l) for l in open(sys.argv[1])][1:]
print('%.3f %.3f' % (sum(l['time/step'] for l in lines)/len(lines), sum(l.get('time/collective',0) for l in lines)/len(lines)))" "$1"; }
free_port() { python3 -c "
import socket
while True:
    s=socket.socket(); s.bind(('127.0.0.1',0)); p=s.getsockname()[1]; s.close()
    t=socket.socket()
    try:
        t.bind(('0.0.0.0',p+1)); t.close(); print(p); break
    except OSError: pass"; }
echo "| student preset | reduce | step, 1 node (s) | step, 2 nodes (s) | collective, 2 nodes (s) | collective share |"
echo "| --- | --- | --- | --- | --- | --- |"
for preset in $presets; do
  config="$work/$preset.toml"
  sed -e "s/^steps = 6/steps = 3/" -e "s/^eval_every = 2/eval_every = 1000/" -e "s/^checkpoint_every = 2/checkpoint_every = 1000/" \
      -e "/^\[student\]/,/^\[train\]/ s/^preset = .*/preset = \"$preset\"/" -e "/^\[student\]/,/^\[train\]/ s/^steps = 100/steps = 20/" \
      "$base" > "$config"
  (cd "$work" && "$atod" train --config "$config" --nodes 1 --out "$work/one-$preset" > /dev/null 2>&1)
  read -r one _ < <(mean "$work/one-$preset/metrics.jsonl")
  for reduce in ordered ring; do
    port=$(free_port)
    "$atod" orchestrator --port "$port" --once > /dev/null 2>&1 &
    out="$work/two-$preset-$reduce"
    (cd "$work" && "$atod" train --config "$config" --nodes 2 --node-index 1 --orchestrator "127.0.0.1:$port" --reduce "$reduce" --out "$out" > /dev/null 2>&1) &
    (cd "$work" && "$atod" train --config "$config" --nodes 2 --node-index 0 --orchestrator "127.0.0.1:$port" --reduce "$reduce" --out "$out" > /dev/null 2>&1)
    wait
    read -r two coll < <(mean "$out/metrics.jsonl")
    share=$(python3 -c "print('%.0f%%' % (100*$coll/$two))")
    echo "| $preset | $reduce | $one | $two | $coll | $share |"
  done
done
