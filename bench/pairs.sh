#!/usr/bin/env bash
# pairs.sh runs the protection benchmarks as interleaved pairs (protected
# Send, then the bare library call on the same bytes and key), N rounds,
# and prints each round's ratio and the median ratio per method. Running
# the two side by side in every round keeps drift on a shared machine out
# of the ratio, which `go test -count N` (all runs of one benchmark, then
# all of the other) does not.
#
# Usage: ./pairs.sh [rounds, default 16] [benchtime, default 1s]
set -euo pipefail
cd "$(dirname "$0")"
rounds=${1:-16}
benchtime=${2:-1s}
bin=$(mktemp)
out=$(mktemp)
trap 'rm -f "$bin" "$out"' EXIT
go test -c -o "$bin" .
for ((i = 1; i <= rounds; i++)); do
	"$bin" -test.run '^$' -test.bench '^Benchmark(SMIME|PGP)(Send|Bare)$' -test.cpu 1 -test.benchtime "$benchtime" |
		awk -v round="$i" '/^Benchmark/ { ns[$1] = $3 } END {
			printf "round %d: S/MIME %.0f/%.0f ns = %.2f  PGP %.0f/%.0f ns = %.2f\n", round,
				ns["BenchmarkSMIMESend"], ns["BenchmarkSMIMEBare"], ns["BenchmarkSMIMESend"] / ns["BenchmarkSMIMEBare"],
				ns["BenchmarkPGPSend"], ns["BenchmarkPGPBare"], ns["BenchmarkPGPSend"] / ns["BenchmarkPGPBare"] }' | tee -a "$out"
done
median() { sort -n | awk '{ v[NR] = $1 } END { printf "%.2f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo "median Send ÷ bare over $rounds rounds: S/MIME $(awk '{ print $7 }' "$out" | median), PGP/MIME $(awk '{ print $12 }' "$out" | median) (target ≤ 1.3)"
