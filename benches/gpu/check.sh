#!/usr/bin/env bash
# The CUDA check of atod: build here, run on a machine with an NVIDIA GPU.
#
#   benches/gpu/check.sh build   # any machine (no GPU needed): the CUDA binaries into benches/gpu/bin/
#   benches/gpu/check.sh run     # the GPU machine, from the repository root: the checks below
#
# `run` writes every output under ${OUT:-benches/gpu/out}/ and exits with status 0 only when all of these pass:
#   1. cuda_smoke: the CubeCL hot-path kernel against the reference composition, on CUDA and on the CPU, forward
#      and backward (its own exit status: 0 only when every difference is within 1e-4);
#   2. `atod bench model --device cuda:0` for the teacher preset and for the Qwen3-0.6B shape
#      (benches/models/qwen3-0.6b.json, random weights), with finite throughputs, beside the same on the CPU;
#   3. two online steps of the quickstart on cuda:0 and on the CPU from the same stages: the first step's
#      `loss/total`, `loss/pg` and advantages (`adv/*`) agree within 1e-3.
#
# CUDARC_CUDA_VERSION must name the CUDA version of the GPU machine's driver (13000 for driver 580, the default
# here). The binaries load CUDA at run time, so they build without a GPU. `run` uses python3 only to compare
# JSON; it needs nothing from the network.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=benches/gpu/bin
out=${OUT:-benches/gpu/out}

build() {
    export CUDARC_CUDA_VERSION=${CUDARC_CUDA_VERSION:-13000}
    cargo build --release -p atod-cli --features cuda
    cargo build --release -p atod-models --features cuda --example cuda_smoke
    local target=${CARGO_TARGET_DIR:-target}
    mkdir -p "$bin"
    cp "$target/release/atod" "$target/release/examples/cuda_smoke" "$bin/"
    strip "$bin/atod" "$bin/cuda_smoke" 2>/dev/null || true
    ls -l "$bin"
}

# `check NAME COMMAND...`: runs the command, keeps its stdout in $out/NAME.json and its stderr in $out/NAME.log,
# and records a failure instead of stopping.
failures=()
check() {
    local name=$1
    shift
    echo "== $name: $*" >&2
    if "$@" >"$out/$name.json" 2>"$out/$name.log"; then
        echo "   ok" >&2
    else
        echo "   FAILED (status $?; see $out/$name.log)" >&2
        failures+=("$name")
    fi
}

# `finite FILE`: every throughput of an `atod bench model --json` document is a finite positive number.
finite() {
    python3 - "$1" <<'PY'
import json, math, sys
doc = json.load(open(sys.argv[1]))
rates = {k: doc[k] for k in ("train_tokens_per_s", "prefill_tokens_per_s", "decode_tokens_per_s")}
print(doc["preset"], doc["device"], doc["params"], rates)
sys.exit(0 if all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in rates.values()) else 1)
PY
}

# `same_first_step CPU_RUN CUDA_RUN`: the first step's loss and advantages agree within 1e-3.
same_first_step() {
    python3 - "$1/metrics.jsonl" "$2/metrics.jsonl" <<'PY'
import json, sys
cpu, cuda = (json.loads(open(path).readline()) for path in sys.argv[1:3])
keys = sorted(k for k in cpu if k in ("loss/total", "loss/pg") or k.startswith("adv/"))
worst = max(abs(cpu[k] - cuda[k]) for k in keys)
for k in keys:
    print(f"{k:16} cpu {cpu[k]: .6f}  cuda {cuda[k]: .6f}  diff {abs(cpu[k] - cuda[k]):.2e}")
print(f"largest difference {worst:.2e} (tolerance 1e-3)")
sys.exit(0 if keys and worst <= 1e-3 else 1)
PY
}

run() {
    [[ -x $bin/atod && -x $bin/cuda_smoke ]] || { echo "run '$0 build' first" >&2; exit 2; }
    mkdir -p "$out"
    nvidia-smi >"$out/nvidia-smi.txt" 2>&1 || true
    check cuda_smoke "$bin/cuda_smoke"

    local small=(--batch 1 --seq 32 --steps 1 --decode-tokens 4 --json)
    check bench-teacher-cuda "$bin/atod" bench model --preset teacher --device cuda:0 --json
    check bench-teacher-cpu "$bin/atod" bench model --preset teacher --json
    check bench-qwen3-0.6b-cuda "$bin/atod" bench model --config benches/models/qwen3-0.6b.json --device cuda:0 \
        --batch 4 --seq 256 --steps 3 --decode-tokens 64 --json
    check bench-qwen3-0.6b-cpu "$bin/atod" bench model --config benches/models/qwen3-0.6b.json "${small[@]}"
    for name in bench-teacher-cuda bench-teacher-cpu bench-qwen3-0.6b-cuda bench-qwen3-0.6b-cpu; do
        check "$name-finite" finite "$out/$name.json"
    done

    # The quickstart cut to two online steps, its stages built once (on the CPU) and shared by both runs.
    local stages=$out/stages
    for device in cpu cuda:0; do
        sed -e "s|^name = \"quickstart\"|name = \"gpu-check\"\nstages_dir = \"$stages\"\ndevice = \"$device\"|" \
            -e '/^\[train\]/,/^\[/ s/^steps = .*/steps = 2/' configs/quickstart.toml >"$out/quickstart-${device%%:*}.toml"
    done
    check quickstart-cpu "$bin/atod" train --config "$out/quickstart-cpu.toml" --out "$out/run-cpu" --json
    check quickstart-cuda "$bin/atod" train --config "$out/quickstart-cuda.toml" --out "$out/run-cuda" --json
    check quickstart-first-step same_first_step "$out/run-cpu" "$out/run-cuda"

    if ((${#failures[@]})); then
        echo "failed: ${failures[*]}" >&2
        exit 1
    fi
    echo "every check passed; outputs in $out" >&2
}

case ${1:-} in
    build) build ;;
    run) run ;;
    *) echo "usage: $0 build|run" >&2; exit 2 ;;
esac
