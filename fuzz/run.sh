#!/usr/bin/env bash
# Runs one fuzz target with the settings used for the recorded runs (see README.md).
#
#   ./run.sh TARGET [SECONDS] [RUNS] [extra libFuzzer flags...]
#
# Corpus: corpus/TARGET (scratch, git-ignored; new inputs go there) plus seeds/TARGET (committed,
# read only). Crashes land in artifacts/TARGET/. Runs at nice 15.
#
# Runs the binary `cargo +nightly fuzz build` left in target/ (what `cargo fuzz run` would
# execute), without rebuilding: Riptide's sources change under a running campaign. BUILD=1
# builds first (all targets, nice 15).
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?target}
seconds=${2:-600}
runs=${3:-10000000}
shift $(( $# < 3 ? $# : 3 ))

case "$target" in
  request|record_batch) max_len=65536 ;;
  consumer_protocol) max_len=4096 ;;
  *) max_len=16384 ;;
esac
dict=()
case "$target" in
  metadata_records|controller_rpc) dict=(-dict=dicts/json.dict) ;;
esac

if [[ -n "${BUILD:-}" ]]; then
  nice -n 15 cargo +nightly fuzz build
fi
binary=target/x86_64-unknown-linux-gnu/release/$target
mkdir -p "corpus/$target" "artifacts/$target"
exec nice -n 15 "$binary" "corpus/$target" "seeds/$target" \
  -max_len="$max_len" -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 \
  -max_total_time="$seconds" -runs="$runs" -print_final_stats=1 \
  -artifact_prefix="artifacts/$target/" "${dict[@]}" "$@"
