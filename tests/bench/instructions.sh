#!/usr/bin/env bash
# instructions.sh counts the instructions one iteration of a Go benchmark
# executes, under valgrind's callgrind: the whole test process is run at
# two iteration counts and the difference is divided by the difference in
# iterations, so setup cancels out. GC off, one P, no async preemption: the
# count repeats to within a few dozen instructions, where timings on a
# shared machine swing by ±20 %.
#
#   tests/bench/instructions.sh [-n N1,N2] PACKAGE BENCHMARK...
#   tests/bench/instructions.sh ./caddymodule 'PassThroughCachedKey/baseline$' 'PassThroughCachedKey/gateway$'
#
# Each BENCHMARK is a -bench pattern that must select exactly one
# benchmark. Needs valgrind.
set -euo pipefail
counts=20000,220000
if [ "${1:-}" = -n ]; then counts=$2; shift 2; fi
pkg=$1; shift
n1=${counts%,*}; n2=${counts#*,}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
go test -c -o "$dir/bench.test" "$pkg"
count() { # pattern iterations
	GODEBUG=asyncpreemptoff=1 GOGC=off GOMAXPROCS=1 valgrind --tool=callgrind \
		--callgrind-out-file="$dir/out" "$dir/bench.test" -test.run '^$' \
		-test.bench "$1" -test.benchtime "${2}x" -test.count 1 >/dev/null 2>&1
	awk '/^summary:/ {print $2}' "$dir/out"
}
for b in "$@"; do
	a=$(count "$b" "$n1"); z=$(count "$b" "$n2")
	printf '%-60s %8d instructions/op\n' "$b" $(( (z - a) / (n2 - n1) ))
done
