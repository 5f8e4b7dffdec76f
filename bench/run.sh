#!/usr/bin/env bash
# Runs the standard Riptide workloads (bench/workloads/*.args) and writes
# bench/results/<date>-<rev>/ with a JSON report, HdrHistogram files, a percentile plot and the
# console output of each, fio baselines, and summary.md (figures, baselines, ratios, goals).
#
# The broker runs pinned to one core (BROKER_CORE, default 0, `--cores 1`) and the load
# generator to another (LOAD_CORE, default 1), so that on a 2-core machine neither steals the
# other's CPU. Every workload gets a fresh broker and data directory.
#
# Usage: bench/run.sh                 # all of W1..W6
#        WORKLOADS="w1 w3" bench/run.sh
#        WORKLOADS="w2 w7" bench/run.sh  # W7 (10,000 partitions, density) is opt-in
# Environment:
#   BROKER_CORE, LOAD_CORE   cores for the broker and the load (default 0 and 1)
#   DURATION_S, WARMUP_S     override every workload's --duration / --warmup (not W6's read)
#   RIPTIDE_BENCH_DATA       where brokers and fio put their data (default /var/tmp/...)
#   RIPTIDE_BIN, BENCH_BIN   prebuilt binaries (default: cargo build --release)
#   FIO_SIZE                 bytes fio writes/reads per baseline (default 4g)
#   SKIP_FIO=1               no fio baselines
#   EXTRA_BROKER_ARGS        appended to `riptide serve`
#   MIN_FREE_GB              skip a workload when the data filesystem has less free (default 40:
#                            W7's 10,000 written partitions hold ~1 MiB each, W2/W6 write GBs)
#   BOOTSTRAP                HOST:PORT[,...] of a running Kafka-compatible broker (Apache Kafka,
#                            Redpanda, another Riptide) to run the same workloads against: no
#                            broker is started or pinned, its CPU is not measured, topics get a
#                            per-run suffix (w2-<run>) so runs do not mix, and W6's reads are
#                            cold only if that broker's page cache was dropped (done here when
#                            it runs on this host). fio baselines still measure this host's disk.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR="$ROOT/bench"
BROKER_CORE=${BROKER_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
WORKLOADS=${WORKLOADS:-"w1 w2 w3 w4 w5 w6"}
FIO_SIZE=${FIO_SIZE:-4g}
DATA_ROOT=${RIPTIDE_BENCH_DATA:-/var/tmp/riptide-bench-$$}
EXTRA_BROKER_ARGS=${EXTRA_BROKER_ARGS:-}
BOOTSTRAP=${BOOTSTRAP:-}
RUN_ID=$(date -u +%Y%m%d%H%M%S)

log() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }

# --- binaries ---------------------------------------------------------------------------------
if [[ -z "${RIPTIDE_BIN:-}" || -z "${BENCH_BIN:-}" ]]; then
    log "building riptide and riptide-bench (release)"
    (cd "$ROOT" && cargo build --release -p riptide -p riptide-bench)
fi
TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps 2>/dev/null \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
TARGET_DIR=${TARGET_DIR:-$ROOT/target}
RIPTIDE_BIN=${RIPTIDE_BIN:-$TARGET_DIR/release/riptide}
BENCH_BIN=${BENCH_BIN:-$TARGET_DIR/release/riptide-bench}
[[ -x "$RIPTIDE_BIN" ]] || die "no broker binary at $RIPTIDE_BIN"
[[ -x "$BENCH_BIN" ]] || die "no riptide-bench binary at $BENCH_BIN"

# --- results directory ------------------------------------------------------------------------
REV=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo "norev")
if [[ "$REV" != norev ]] && [[ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
    REV="$REV-dirty"
fi
export RIPTIDE_GIT_REV="$REV"
OUT="$BENCH_DIR/results/$(date -u +%Y%m%d-%H%M%S)-$REV"
mkdir -p "$OUT" "$DATA_ROOT"
log "results in $OUT; data in $DATA_ROOT"

# --- host facts and settings worth knowing ----------------------------------------------------
{
    echo "date: $(date -u +%FT%TZ)"
    echo "revision: $REV"
    echo "broker core: $BROKER_CORE, load core: $LOAD_CORE"
    echo "kernel: $(uname -r)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "cpus: $(nproc --all) online, governor: $(cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null || echo n/a)"
    echo "filesystem: $(df -PT "$DATA_ROOT" | awk 'NR==2 {print $1, $2}')"
    if [[ -n "$BOOTSTRAP" ]]; then
        echo "broker: external at $BOOTSTRAP (not started, not pinned, CPU not measured; topics suffixed -$RUN_ID)"
    fi
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "other busy processes at start:"
    ps -eo pid,pcpu,psr,comm --sort=-pcpu | awk 'NR>1 && $2 > 5.0' | head -10
} > "$OUT/host.txt"

# --- broker lifecycle (only the PID we started is ever signalled) -----------------------------
BROKER_PID=""
PORT=""
DATA=""

free_port() {
    local port
    for _ in $(seq 100); do
        port=$(( 20000 + RANDOM % 20000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    die "no free port"
}

start_broker() { # $1 = data dir (kept if it exists), $2 = log file
    [[ -n "$BOOTSTRAP" ]] && return # an external broker is already running
    DATA=$1
    mkdir -p "$DATA"
    PORT=$(free_port)
    ulimit -l unlimited 2>/dev/null || true
    local -a extra=()
    # No admin endpoint: its fixed default port would collide with other brokers on the host.
    if "$RIPTIDE_BIN" serve --help 2>/dev/null | grep -q -- --admin-listen; then
        extra+=(--admin-listen "")
    fi
    # shellcheck disable=SC2086
    taskset -c "$BROKER_CORE" "$RIPTIDE_BIN" serve --listen "127.0.0.1:$PORT" \
        --data-dir "$DATA" --cores 1 --log-level warn "${extra[@]}" $EXTRA_BROKER_ARGS \
        >>"$2" 2>&1 &
    BROKER_PID=$!
    for _ in $(seq 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
            return
        fi
        kill -0 "$BROKER_PID" 2>/dev/null || die "broker exited at start; see $2"
        sleep 0.05
    done
    die "broker did not listen on $PORT"
}

stop_broker() {
    if [[ -n "$BROKER_PID" ]] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -TERM "$BROKER_PID"
        for _ in $(seq 200); do
            kill -0 "$BROKER_PID" 2>/dev/null || break
            sleep 0.05
        done
        kill -KILL "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
    fi
    BROKER_PID=""
}

cleanup() {
    stop_broker
    rm -rf "$DATA_ROOT"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

drop_caches() {
    sync
    if [[ -w /proc/sys/vm/drop_caches ]]; then
        echo 3 >/proc/sys/vm/drop_caches
    else
        echo "warning: cannot drop the page cache (not root); cold reads may be warm" >&2
    fi
}

# --- running one workload file ----------------------------------------------------------------
workload_args() { # $1 = file; prints one argument per line
    grep -v '^[[:space:]]*#' "$1" | grep -v '^[[:space:]]*$' | tr -s ' \t' '\n\n'
}

sched_totals() { # $1 = pid -> "on_cpu_ns runqueue_wait_ns" summed over its threads
    cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{r += $1; w += $2} END {printf "%.0f %.0f\n", r, w}'
}

run_bench() { # $1 = id (for files), $2 = workload file, $3 = override durations (yes/no)
    local id=$1 file=$2 override=$3
    local -a args
    mapfile -t args < <(workload_args "$file")
    if [[ "$override" == yes ]]; then
        [[ -n "${DURATION_S:-}" ]] && args+=(--duration "$DURATION_S")
        [[ -n "${WARMUP_S:-}" ]] && args+=(--warmup "$WARMUP_S")
    fi
    if [[ -n "$BOOTSTRAP" ]]; then
        # The external broker keeps its topics between runs: give this run its own.
        local i
        for i in "${!args[@]}"; do
            if [[ "${args[$i]}" == --topic ]]; then
                args[i+1]="${args[i+1]}-$RUN_ID"
            fi
        done
        args+=(--bootstrap "$BOOTSTRAP")
    else
        args+=(--bootstrap "127.0.0.1:$PORT")
    fi
    args+=(--cores "$LOAD_CORE" --label "${id^^}")
    args+=(--json "$OUT/$id.json" --hgrm "$OUT/$id-hgrm" --plot "$OUT/$id.png")
    echo "taskset -c $LOAD_CORE riptide-bench ${args[*]}" >"$OUT/$id.cmd"
    log "$id: riptide-bench ${args[*]}"
    local t0 s0 t1 s1
    if [[ -n "$BOOTSTRAP" ]]; then
        taskset -c "$LOAD_CORE" "$BENCH_BIN" "${args[@]}" 2>&1 | tee "$OUT/$id.txt" \
            || echo "run.sh: $id failed (exit ${PIPESTATUS[0]})" | tee -a "$OUT/$id.txt" >&2
        return
    fi
    t0=$(date +%s%N)
    s0=$(sched_totals "$BROKER_PID")
    # A failed run (e.g. a broker bug) is recorded and the next workload still runs.
    taskset -c "$LOAD_CORE" "$BENCH_BIN" "${args[@]}" 2>&1 | tee "$OUT/$id.txt" \
        || echo "run.sh: $id failed (exit ${PIPESTATUS[0]})" | tee -a "$OUT/$id.txt" >&2
    t1=$(date +%s%N)
    s1=$(sched_totals "$BROKER_PID")
    # How busy the broker's core was, and how long the broker waited for it (run-queue delay:
    # other processes on the same core). Over the whole run, warm-up and drain included.
    echo "$t0 $s0 $t1 $s1" | awk '{
        elapsed = $4 - $1
        printf "{\"on_cpu_pct\": %.1f, \"runqueue_wait_pct\": %.1f}\n", \
            100 * ($5 - $2) / elapsed, 100 * ($6 - $3) / elapsed }' >"$OUT/$id-broker-sched.json"
    echo "broker: $(cat "$OUT/$id-broker-sched.json")" | tee -a "$OUT/$id.txt"
}

workload_file() { # $1 = id or id prefix (w6-preload, w2) -> the file
    local matches=("$BENCH_DIR/workloads/$1.args" "$BENCH_DIR"/workloads/"$1"-*.args)
    local file
    for file in "${matches[@]}"; do
        [[ -e "$file" ]] && { echo "$file"; return; }
    done
    echo "run.sh: no workload file for $1" >&2
    kill -TERM $$ # a typo in WORKLOADS must stop the run, not run riptide-bench without arguments
}

# --- fio baselines ----------------------------------------------------------------------------
have_fio() {
    [[ "${SKIP_FIO:-0}" == 1 ]] && return 1
    command -v fio >/dev/null && return 0
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        log "installing fio"
        DEBIAN_FRONTEND=noninteractive apt-get install -y fio >/dev/null 2>&1 \
            || { apt-get update >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y fio >/dev/null 2>&1; } \
            || true
    fi
    command -v fio >/dev/null || { echo "warning: fio not available; no disk baselines" >&2; return 1; }
}

batch_size_of() { # $1 = workload file -> its --batch-size
    workload_args "$1" | awk 'prev == "--batch-size" {print; exit} {prev = $0}'
}

fio_run() { # $1 = name, rest = fio options; pinned like the broker
    local name=$1
    shift
    local dir="$DATA_ROOT/fio"
    mkdir -p "$dir"
    log "fio baseline $name: $*"
    taskset -c "$BROKER_CORE" fio --name="$name" --directory="$dir" --filename=fio.dat \
        --output-format=json --output="$OUT/fio-$name.json" "$@" >/dev/null \
        || echo "warning: fio $name failed" >&2
}

fio_write_baseline() { # sequential O_DIRECT writes of W2's batch size into a preallocated file
    local bs
    bs=$(batch_size_of "$(workload_file w2)")
    fio_run write --rw=write --bs="${bs:-262144}" --size="$FIO_SIZE" --direct=1 \
        --ioengine=io_uring --iodepth=16 --fallocate=native
}

fio_fdatasync_baseline() { # W3's pattern on bare disk: write a batch, fdatasync, repeat
    local bs
    bs=$(batch_size_of "$(workload_file w3)")
    # Lay the file out first, so the timed pass overwrites written blocks (as a broker should).
    fio_run fdatasync-prep --rw=write --bs=1m --size=256m --direct=1 --ioengine=psync
    fio_run fdatasync --rw=write --bs="${bs:-65536}" --size=256m --direct=1 --ioengine=psync \
        --fdatasync=1 --overwrite=1
}

fio_read_baseline() { # sequential O_DIRECT reads after dropping the cache
    fio_run read-prep --rw=write --bs=1m --size="$FIO_SIZE" --direct=1 --ioengine=io_uring \
        --iodepth=16
    drop_caches
    fio_run read --rw=read --bs=1m --size="$FIO_SIZE" --direct=1 --ioengine=io_uring --iodepth=16
}

# --- the workloads ----------------------------------------------------------------------------
FIO=no
have_fio && FIO=yes
MIN_FREE_GB=${MIN_FREE_GB:-40}

enough_disk() {
    local free_gb
    free_gb=$(df -Pk "$DATA_ROOT" | awk 'NR==2 {print int($4 / 1048576)}')
    if (( free_gb < MIN_FREE_GB )); then
        echo "run.sh: skipping $1: only $free_gb GB free under $DATA_ROOT (MIN_FREE_GB=$MIN_FREE_GB)" \
            | tee -a "$OUT/skipped.txt" >&2
        return 1
    fi
}

# --- W7: density ------------------------------------------------------------------------------
broker_footprint() { # $1 = data dir -> "rss_kib fds disk_kib files" of the running broker
    local rss fds disk files
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$BROKER_PID/status")
    fds=$(find "/proc/$BROKER_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    disk=$(du -sk "$1" | cut -f1) # allocated blocks, preallocation included
    files=$(find "$1" -type f | wc -l)
    echo "$rss $fds $disk $files"
}

run_density() { # $1 = id: create the topic timed, footprints around it, then the produce run
    local id=$1 file data
    file=$(workload_file "$id")
    if [[ -n "$BOOTSTRAP" ]]; then # not our broker: its footprint is not ours to measure
        run_bench "$id" "$file" yes
        return
    fi
    data="$DATA_ROOT/broker-$id"
    rm -rf "$data"
    start_broker "$data" "$OUT/$id-broker.log"
    sleep 1
    local idle created produced
    idle=$(broker_footprint "$data")
    local -a args
    mapfile -t args < <(workload_args "$file" | sed '1s/^produce$/create/')
    args+=(--bootstrap "127.0.0.1:$PORT" --json "$OUT/$id-create.json")
    log "$id: riptide-bench ${args[*]}"
    taskset -c "$LOAD_CORE" "$BENCH_BIN" "${args[@]}" 2>&1 | tee "$OUT/$id-create.txt" \
        || { echo "run.sh: $id create failed" | tee -a "$OUT/$id-create.txt" >&2; stop_broker; return; }
    created=$(broker_footprint "$data")
    run_bench "$id" "$file" yes
    produced=$(broker_footprint "$data")
    stop_broker
    local partitions
    partitions=$(workload_args "$file" | awk 'prev == "--partitions" {print; exit} {prev = $0}')
    echo "$partitions $idle $created $produced" | awk '{
        printf "{\"partitions\": %d,\n", $1
        split("idle created produced", phase, " ")
        for (i = 0; i < 3; i++) {
            b = 2 + 4 * i
            printf " \"%s\": {\"rss_kib\": %d, \"fds\": %d, \"disk_kib\": %d, \"files\": %d},\n", \
                phase[i + 1], $b, $(b + 1), $(b + 2), $(b + 3)
        }
        printf " \"per_partition_created\": {\"rss_kib\": %.1f, \"fds\": %.2f, \"disk_kib\": %.1f, \"files\": %.2f},\n", \
            ($6 - $2) / $1, ($7 - $3) / $1, ($8 - $4) / $1, ($9 - $5) / $1
        printf " \"per_partition_produced\": {\"rss_kib\": %.1f, \"fds\": %.2f, \"disk_kib\": %.1f, \"files\": %.2f}}\n", \
            ($10 - $2) / $1, ($11 - $3) / $1, ($12 - $4) / $1, ($13 - $5) / $1
    }' >"$OUT/$id-density.json"
    tee -a "$OUT/$id.txt" <"$OUT/$id-density.json"
    rm -rf "$data"
}

for id in $WORKLOADS; do
    [[ -z "$BOOTSTRAP" ]] && { enough_disk "$id" || continue; }
    case "$id" in
        w6)
            data="$DATA_ROOT/broker-$id"
            rm -rf "$data"
            start_broker "$data" "$OUT/$id-broker.log"
            run_bench "$id-preload" "$(workload_file w6-preload)" yes
            stop_broker
            drop_caches
            start_broker "$data" "$OUT/$id-broker.log"
            run_bench "$id" "$(workload_file w6-consume)" no
            stop_broker
            rm -rf "$data"
            [[ $FIO == yes ]] && fio_read_baseline
            ;;
        w7)
            rm -rf "$DATA_ROOT/fio"
            run_density "$id"
            ;;
        *)
            if [[ $FIO == yes && $id == w2 ]]; then
                fio_write_baseline
            fi
            if [[ $FIO == yes && $id == w3 ]]; then
                fio_fdatasync_baseline
            fi
            rm -rf "$DATA_ROOT/fio"
            data="$DATA_ROOT/broker-$id"
            rm -rf "$data"
            start_broker "$data" "$OUT/$id-broker.log"
            run_bench "$id" "$(workload_file "$id")" yes
            stop_broker
            rm -rf "$data"
            ;;
    esac
done
rm -rf "$DATA_ROOT/fio"

log "summary"
"$BENCH_BIN" summarize "$OUT" | tee "$OUT/summary.txt"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/host.txt"
log "results in $OUT"
