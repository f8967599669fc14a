"""`atod bench model` against the PyTorch reference, interleaved, in one sitting: the table of benches/README.md.

For each preset, runs atod and PyTorch alternately `--rounds` times with the same flags (PyTorch on `--threads`
threads), keeps each side's best throughput per measurement and its peak RSS, and prints a Markdown table of the
ratios (atod / PyTorch). Only the standard library is used here; PyTorch runs in benches/.venv.

    cargo build --release -p atod-cli
    benches/pytorch/setup.sh     # once
    python3 benches/pytorch/compare.py --presets student-s student-m teacher
"""
import argparse
import json
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]
MEASURES = ["train_tokens_per_s", "prefill_tokens_per_s", "decode_tokens_per_s"]


def run(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return json.loads(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["student-s", "student-m", "teacher"])
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--atod", default=str(ROOT / "target/release/atod"))
    parser.add_argument("--python", default=str(ROOT / "benches/.venv/bin/python"))
    args = parser.parse_args()
    flags = ["--vocab", str(args.vocab), "--batch", str(args.batch), "--seq", str(args.seq), "--steps",
             str(args.steps), "--decode-tokens", str(args.decode_tokens), "--json"]
    rows = []
    for preset in args.presets:
        best = {"atod": {}, "torch": {}}
        for _ in range(args.rounds):
            for side, cmd in [
                ("atod", [args.atod, "bench", "model", "--preset", preset] + flags),
                ("torch", [args.python, "benches/pytorch/bench_model.py", "--preset", preset,
                           "--threads", str(args.threads)] + flags),
            ]:
                report = run(cmd)
                for key in MEASURES:
                    best[side][key] = max(best[side].get(key, 0.0), report[key])
                rss = report.get("peak_rss_bytes") or 0
                best[side]["peak_rss_bytes"] = max(best[side].get("peak_rss_bytes", 0), rss)
        rows.append((preset, best))
    print("| preset | train tokens/s | prefill tokens/s | decode tokens/s | peak RSS (MiB) |")
    print("| --- | --- | --- | --- | --- |")
    for preset, best in rows:
        cells = []
        for key in MEASURES:
            a, t = best["atod"][key], best["torch"][key]
            cells.append(f"{a / 1e3:.1f}k vs {t / 1e3:.1f}k ({a / t:.2f}x)")
        rss = f'{best["atod"]["peak_rss_bytes"] / 2**20:.0f} vs {best["torch"]["peak_rss_bytes"] / 2**20:.0f}'
        print(f"| {preset} | " + " | ".join(cells) + f" | {rss} |")
    print()
    print(json.dumps({preset: best for preset, best in rows}, indent=2))


if __name__ == "__main__":
    main()
