#!/usr/bin/env bash
# Bundles what a lent GPU machine needs (it has CUDA 13 and a driver but no
# Rust): the release CLI, the GPU test executables (cuda_* and emu_backend)
# and a run script, into dist/device/ (git-ignored). The executables are
# stripped and packed, with sm_90 cubins of every kernel module (so the
# device skips JIT-compiling ~15 MB of PTX in each process), into
# bin.tar.gz, keeping the folder well under the 64 MiB a device call may
# carry; run.sh unpacks them into a temporary folder.
#
#   bash scripts/device-bundle.sh
#   then, with the device tool: run `bash dist/device/run.sh` carrying
#   dist/device (see README, "Running on a GPU")
#
# dist/device/run.sh runs stages in priority order, each under `timeout`
# with its own log under $OUT and a summary at the end:
#   env       date, nvidia-smi, nvcc --version, commit, `parascan info`
#   tests     the cuda_* test executables and the CUDA part of emu_backend,
#             REQUIRE_GPU=1 (a missing GPU fails instead of skipping)
#   bench     `parascan bench --backend cuda` (bench.md/csv/json under $OUT/bench)
#   check     `parascan check --backends cuda`
#   sanitize  compute-sanitizer memcheck then racecheck over each cuda_*
#             test executable, fewest tests first, each under its own timeout
# `run.sh` alone runs every stage within RUN_TOTAL_S (default 540 s, under
# the device's 600 s per call); `run.sh tests bench` or `run.sh sanitize`
# runs only those, so the work can be split across two device calls.
# Checkouts that share one CARGO_TARGET_DIR share the build script's
# output (the PTX): do not build another checkout into it meanwhile.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

nvcc="$(bash scripts/install-cuda-toolchain.sh | tail -n 1)"
# The look-back kernels' spin cap (kernels/diagonal.cuh): a block that polls a status word
# 2^22 times traps, so a protocol or planner bug fails that launch instead of hanging the
# whole device run. Every executable below is built with it (their PTX fingerprints match).
export PARASCAN_NVCC_FLAGS="${PARASCAN_NVCC_FLAGS:+$PARASCAN_NVCC_FLAGS }-DPS_LB_SPIN_CAP=4194304"
dest=dist/device
rm -rf "$dest"
mkdir -p "$dest"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/tests"

# Executables from cargo's own messages, so any CARGO_TARGET_DIR works.
executables() {
  python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["kind"][0], m["target"]["name"], m["executable"])
'
}

cargo build --release --bin parascan --message-format=json-render-diagnostics |
  executables | while read -r kind name exe; do
  if [ "$kind" = bin ] && [ "$name" = parascan ]; then cp "$exe" "$stage/parascan"; fi
done
cargo test --release --no-run --test 'cuda_*' --test emu_backend \
  --message-format=json-render-diagnostics |
  executables | while read -r kind name exe; do
  if [ "$kind" = test ]; then cp "$exe" "$stage/tests/$name"; fi
done
[ -x "$stage/parascan" ] || { echo "device-bundle: the parascan binary was not built" >&2; exit 1; }
ls "$stage"/tests/cuda_* >/dev/null 2>&1 || { echo "device-bundle: no cuda_* test executables" >&2; exit 1; }
strip "$stage/parascan" "$stage"/tests/* 2>/dev/null || true

# Device code compiled ahead of time from exactly the PTX the CLI embeds
# (PARASCAN_CUBIN_DIR, see src/backend/cuda.rs): saves every process on the
# device the driver's JIT compilation, about a minute for all modules. A
# module whose cubin is missing, or whose PTX in a test executable differs
# (fingerprint), is JIT-compiled as before.
arch="${PARASCAN_CUDA_ARCH:-sm_90}"
ptxas="$(dirname "$nvcc")/ptxas"
mkdir -p "$stage/cubin"
if "$stage/parascan" info --write-ptx "$stage/ptx" >/dev/null && [ -x "$ptxas" ]; then
  pids=()
  for ptx in "$stage"/ptx/*.ptx; do
    m="$(basename "$ptx" .ptx)"
    ( "$ptxas" -arch="$arch" -O3 "$ptx" -o "$stage/cubin/$m.$arch.cubin" &&
      cp "$stage/ptx/$m.ptx-fnv" "$stage/cubin/$m.$arch.ptx-fnv" ) &
    pids+=("$!")
  done
  for pid in "${pids[@]}"; do
    wait "$pid" || echo "device-bundle: ptxas failed on one module (it will be JIT-compiled)" >&2
  done
else
  echo "device-bundle: no PTX or no ptxas; the device will JIT-compile the PTX" >&2
fi
tar -czf "$dest/bin.tar.gz" -C "$stage" parascan tests cubin

commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ "$commit" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  commit="$commit-dirty"
fi
echo "$commit" >"$dest/COMMIT"

cat >"$dest/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs on the GPU machine (see scripts/device-bundle.sh): stages in
# priority order, each step under `timeout`, one log per stage under $OUT
# (default: logs/ beside this script), and summary.log at the end.
#
#   bash dist/device/run.sh                  # env tests bench check sanitize
#   bash dist/device/run.sh env tests bench  # only these, in this order
#   bash dist/device/run.sh sanitize
#
# Time limits, seconds (environment overrides):
#   RUN_TOTAL_S=540   everything this call runs (the device allows 600 per call)
#   TESTS_S=200       the tests stage; TEST_ONE_S=120 each executable
#   BENCH_S=240       the bench stage (bench gets --time-limit BENCH_S - 45)
#   CHECK_S=90        the check stage
#   SANITIZE_ONE_S=150  each compute-sanitizer run
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${OUT:-$here/logs}"
mkdir -p "$out"
stages=("$@")
(( ${#stages[@]} )) || stages=(env tests bench check sanitize)
for s in "${stages[@]}"; do
  case "$s" in
    env | tests | bench | check | sanitize) ;;
    *)
      echo "run.sh: unknown stage \`$s\`; expected env, tests, bench, check or sanitize" >&2
      exit 2
      ;;
  esac
done
# The executables (packed by device-bundle.sh) go to a temporary folder.
bin="$(mktemp -d)"
trap 'rm -rf "$bin"' EXIT
if ! tar -xzf "$here/bin.tar.gz" -C "$bin"; then
  echo "run.sh: cannot unpack $here/bin.tar.gz" >&2
  exit 2
fi
export PARASCAN_COMMIT="$(cat "$here/COMMIT" 2>/dev/null || echo unknown)"
export PARASCAN_CUBIN_DIR="$bin/cubin"
# Under scripts/emulated-driver.sh (a rehearsal on a build machine) the
# device is the emulated driver: CUDA must open, but it is not a GPU, and the
# NVIDIA tools are absent.
rehearsal="${PARASCAN_EMULATED_DRIVER:-}"
if [ -n "$rehearsal" ]; then
  export REQUIRE_CUDA=1
  unset REQUIRE_GPU
else
  export REQUIRE_GPU=1
fi
# Modules without a prebuilt cubin are JIT-compiled from PTX: keep the
# driver's cache of that between processes.
export CUDA_CACHE_MAXSIZE="${CUDA_CACHE_MAXSIZE:-4294967296}"

total="${RUN_TOTAL_S:-540}"
start=$(date +%s)
summary="$out/summary.log"
: >"$summary"
status=0
stage_end=0

now() { date +%s; }
note() { echo "$*" | tee -a "$summary"; }
# Seconds a step may take: its own limit, bounded by the stage and the call
# (5 s kept back for the summary).
cap() {
  local t=$1 left=$(( total - ($(now) - start) - 5 )) stage=$(( stage_end - $(now) ))
  (( stage < t )) && t=$stage
  (( left < t )) && t=$left
  echo "$t"
}
# step NAME LOG LIMIT CMD...: CMD under timeout, output appended to LOG.
step() {
  local name=$1 log=$2 limit=$3
  shift 3
  if (( limit < 10 )); then
    note "SKIP  $name (time budget spent)"
    return 0
  fi
  local t0 rc
  t0=$(now)
  echo "== $name (limit ${limit}s): $*" >>"$log"
  timeout -k 10 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  local dt=$(( $(now) - t0 ))
  if (( rc == 0 )); then
    note "ok    $name (${dt}s)"
  elif (( rc == 124 || rc == 137 )); then
    note "TIME  $name (killed at ${limit}s)"
    status=1
  else
    note "FAIL  $name (exit $rc, ${dt}s; see $(basename "$log"))"
    status=1
  fi
}
begin() { stage_end=$(( $(now) + $1 )); note "-- stage $2 (up to $1 s; $(( total - ($(now) - start) )) s left)"; }
# The cuda_* test executables, fewest tests first (`--list` runs no test).
cuda_tests() {
  local t
  for t in "$bin"/tests/cuda_*; do
    [ -x "$t" ] && echo "$("$t" --list 2>/dev/null | grep -c ': test$') $t"
  done | sort -n | cut -d' ' -f2-
}

stage_env() {
  begin 180 env
  local log="$out/env.log"
  {
    date -u
    echo "commit: $PARASCAN_COMMIT"
    ls -l "$here" "$bin" "$bin/tests"
  } >>"$log" 2>&1
  if [ -n "$rehearsal" ]; then
    note "SKIP  nvidia-smi, nvcc --version (emulated driver rehearsal)"
  else
    step nvidia-smi "$log" "$(cap 20)" nvidia-smi
    step "nvcc --version" "$log" "$(cap 10)" nvcc --version
  fi
  # First to open the device: without cubins it pays the JIT (~1 min) that
  # the driver's cache then saves every later process.
  step "parascan info" "$log" "$(cap 150)" "$bin/parascan" info
}

stage_tests() {
  begin "${TESTS_S:-200}" tests
  local t
  for t in $(cuda_tests); do
    step "test $(basename "$t")" "$out/tests.log" "$(cap "${TEST_ONE_S:-120}")" "$t" --test-threads=1
  done
  # The emulator tests run in CI; only the CUDA comparison here.
  step "test emu_backend cuda" "$out/tests.log" "$(cap 60)" "$bin/tests/emu_backend" cuda --test-threads=1
}

stage_bench() {
  begin "${BENCH_S:-240}" bench
  local limit
  limit=$(cap "${BENCH_S:-240}")
  step "parascan bench" "$out/bench.log" "$limit" \
    "$bin/parascan" bench --backend cuda --out "$out/bench" --time-limit $(( limit > 90 ? limit - 45 : limit / 2 ))
}

stage_check() {
  begin "${CHECK_S:-90}" check
  step "parascan check --backends cuda" "$out/check.log" "$(cap "${CHECK_S:-90}")" \
    "$bin/parascan" check --backends cuda
}

stage_sanitize() {
  begin "$total" sanitize
  local tool t
  if [ -n "$rehearsal" ]; then
    note "SKIP  compute-sanitizer (emulated driver rehearsal)"
    return 0
  fi
  # Per executable, fewest tests first, memcheck then racecheck: when time
  # runs out, both tools have covered the small suites.
  for t in $(cuda_tests); do
    for tool in memcheck racecheck; do
      step "$tool $(basename "$t")" "$out/sanitizer.log" "$(cap "${SANITIZE_ONE_S:-150}")" \
        compute-sanitizer --tool "$tool" --error-exitcode 1 "$t" --test-threads=1
    done
  done
}

note "parascan device run: commit $PARASCAN_COMMIT, stages ${stages[*]}, up to ${total} s, logs in $out"
for s in "${stages[@]}"; do
  "stage_$s"
done

echo
note "== summary: $(( $(now) - start )) s"
grep -hE "^test result:|FAILED|panicked|ERROR SUMMARY: [1-9]" "$out"/*.log 2>/dev/null |
  sed -E 's/ \([0-9]+\) panicked/ panicked/' | sort | uniq -c | head -40
[ -f "$out/bench/bench.md" ] && echo "bench table: $out/bench/bench.md"
cat "$summary"
exit $status
RUN
chmod +x "$dest/run.sh"
ls -l "$dest"
size_kb=$(du -sk "$dest" | cut -f1)
if (( size_kb > 60 * 1024 )); then
  echo "device-bundle: $dest is $(( size_kb / 1024 )) MiB, close to the 64 MiB a device call may carry" >&2
  exit 1
fi
