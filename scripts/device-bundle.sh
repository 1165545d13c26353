#!/usr/bin/env bash
# Bundles what a lent GPU machine needs (it has CUDA 13 and a driver but no
# Rust): the release CLI, the GPU test executables (cuda_* and emu_backend)
# and a run script, into dist/device/ (git-ignored). The executables are
# stripped and packed, with sm_90 cubins of every kernel module (so the
# device skips JIT-compiling ~15 MB of PTX in each process), into
# bin.tar.xz, keeping the folder well under the 64 MiB a device call may
# carry; run.sh unpacks them into a temporary folder.
#
#   bash scripts/device-bundle.sh
#   then, with the device tool: run `bash dist/device/run.sh` carrying
#   dist/device (see README, "Running on a GPU")
#
# dist/device/run.sh runs the first-call order, each step under
# `timeout -k 5` with its own log under $OUT and a summary at the end:
#   env       date, commit, nvidia-smi and its clocks, nvcc --version,
#             `parascan info`
#   tests     the cuda_* tests that do not launch the look-back (Auto kept
#             off it with PARASCAN_NO_LOOKBACK=1) and the CUDA part of
#             emu_backend, REQUIRE_GPU=1 (a missing GPU fails, not skips)
#   ladder    the look-back tests, smallest first, 20 s each; the first
#             timeout is taken for a hang and drops the look-back
#             (PARASCAN_NO_LOOKBACK=1) for the rest of the run
#   bench     `parascan bench --quick` per shape group with --time-limit
#   sanitize  compute-sanitizer memcheck on one small look-back test
# `run.sh` alone does all of that within RUN_TOTAL_S (default 480 s, so a
# rerun fits in the device's time); `run.sh env tests` or `run.sh ladder`
# runs only those stages, and `run.sh check` runs `parascan check`.
# PARASCAN_BUNDLE_CUBINS=0 skips the cubins (for a quick rehearsal only).
# Rehearsal here: `bash scripts/device-bundle.sh`, then
# `OUT=$(mktemp -d) bash scripts/emulated-driver.sh bash dist/device/run.sh`.
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
if [ "${PARASCAN_BUNDLE_CUBINS:-1}" = 0 ]; then
  # A rehearsal bundle: the emulated driver runs no cubin, and ptxas over every
  # module takes long on a small build machine.
  echo "device-bundle: PARASCAN_BUNDLE_CUBINS=0, no cubins (the device would JIT-compile the PTX)" >&2
elif "$stage/parascan" info --write-ptx "$stage/ptx" >/dev/null && [ -x "$ptxas" ]; then
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
# xz, not gzip: the executables are mostly embedded PTX text and emulator
# code, which xz packs to less than half of gzip's size (about 34 MB against
# 84 for eleven executables), keeping the folder under the 64 MiB a device
# call may carry.
if command -v xz >/dev/null; then
  # A 128 MiB dictionary spans a whole executable, so the PTX every test
  # executable embeds is stored about once (14 MB against 68 for -6 alone).
  tar -cf - -C "$stage" parascan tests cubin | xz -T2 --lzma2=preset=6,dict=128MiB >"$dest/bin.tar.xz"
else
  python3 -c '
import sys, tarfile
with tarfile.open(sys.argv[1], "w:xz", preset=6) as t:
    for name in sys.argv[3:]:
        t.add(sys.argv[2] + "/" + name, arcname=name)
' "$dest/bin.tar.xz" "$stage" parascan tests cubin
fi

commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ "$commit" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  commit="$commit-dirty"
fi
echo "$commit" >"$dest/COMMIT"

cat >"$dest/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs on the GPU machine (see scripts/device-bundle.sh): stages in the
# first-call order below, each step under `timeout -k 5`, one log per stage
# under $OUT (default: logs/ beside this script), summary.log at the end.
#
#   bash dist/device/run.sh                    # env tests ladder bench sanitize
#   bash dist/device/run.sh env tests ladder   # only these, in this order
#   bash dist/device/run.sh check              # parascan check (not in the default run)
#
# Stages (the default run is done within RUN_TOTAL_S, so that a rerun fits):
#   env       date, commit, nvidia-smi and its clocks, nvcc --version,
#             `parascan info` (did the cubins load?)
#   tests     the plans without the look-back: every cuda_* executable but
#             the look-back tests, PARASCAN_NO_LOOKBACK=1 (Auto avoids P4)
#   ladder    the look-back, smallest first, each step LADDER_ONE_S: tiny P4
#             both layouts with prefix_every 2..NC (aggregate path), surplus
#             blocks, the suites' P4 cases, measured depth, the long shapes
#             (B=2, D=64, T=2^20, both layouts, every plan timed next to
#             P2/P3), the fused Newton suite. A step that times out is taken
#             for a hang: PARASCAN_NO_LOOKBACK=1 is exported for every later
#             stage (Auto avoids P4, bench drops its look-back rows) and the
#             rest of the ladder is skipped.
#   bench     `parascan bench --quick` per shape group: diagonal, dplr,
#             perm-diagonal, newton, each with --time-limit
#   sanitize  compute-sanitizer memcheck on one small P4 test (skipped
#             after a hang; racecheck would only see shared memory)
#   check     `parascan check --backends cuda` (only when named)
#
# Time limits, seconds (environment overrides):
#   RUN_TOTAL_S=480     everything this call runs (~8 min; the device allows 600)
#   TEST_ONE_S=60       each test executable of the tests stage
#   LADDER_ONE_S=20     each ladder step (a hang costs this much, not the run)
#   BENCH_ONE_S=45      each bench shape group (--time-limit BENCH_ONE_S - 15)
#   SANITIZE_ONE_S=60   the memcheck run
#   CHECK_S=90          the check stage
# In a rehearsal on the emulated driver (scripts/emulated-driver.sh) the
# defaults are longer: the emulator is a CPU, and a slow step must not pass
# for a hang.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${OUT:-$here/logs}"
mkdir -p "$out"
stages=("$@")
(( ${#stages[@]} )) || stages=(env tests ladder bench sanitize)
for s in "${stages[@]}"; do
  case "$s" in
    env | tests | ladder | bench | sanitize | check) ;;
    *)
      echo "run.sh: unknown stage \`$s\`; expected env, tests, ladder, bench, sanitize or check" >&2
      exit 2
      ;;
  esac
done
# The executables (packed by device-bundle.sh) go to a temporary folder.
bin="$(mktemp -d)"
trap 'rm -rf "$bin"' EXIT
# tar's xz filter needs the xz tool; Python's tarfile reads xz without it.
if ! tar -xJf "$here/bin.tar.xz" -C "$bin" 2>/dev/null &&
  ! python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2])' \
    "$here/bin.tar.xz" "$bin"; then
  echo "run.sh: cannot unpack $here/bin.tar.xz" >&2
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
  slow=6  # rehearsal: every default limit times this
else
  export REQUIRE_GPU=1
  slow=1
fi
# Modules without a prebuilt cubin are JIT-compiled from PTX: keep the
# driver's cache of that between processes.
export CUDA_CACHE_MAXSIZE="${CUDA_CACHE_MAXSIZE:-4294967296}"

total="${RUN_TOTAL_S:-$(( 480 * slow ))}"
test_one="${TEST_ONE_S:-$(( 60 * slow ))}"
ladder_one="${LADDER_ONE_S:-$(( 20 * slow ))}"
bench_one="${BENCH_ONE_S:-$(( 45 * slow ))}"
start=$(date +%s)
summary="$out/summary.log"
: >"$summary"
status=0
stage_end=0
dropped=""  # set when the ladder saw a hang

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
# step NAME LOG LIMIT CMD...: CMD under timeout, output appended to LOG;
# returns CMD's status (124/137: killed at the limit).
step() {
  local name=$1 log=$2 limit=$3
  shift 3
  if (( limit < 5 )); then
    note "SKIP  $name (time budget spent)"
    return 0
  fi
  local t0 rc
  t0=$(now)
  echo "== $name (limit ${limit}s): $*" >>"$log"
  timeout -k 5 "$limit" "$@" >>"$log" 2>&1
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
  return $rc
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
  begin $(( 60 * slow )) env
  local log="$out/env.log"
  {
    date -u
    echo "commit: $PARASCAN_COMMIT"
    ls -l "$here" "$bin" "$bin/tests"
  } >>"$log" 2>&1
  if [ -n "$rehearsal" ]; then
    note "SKIP  nvidia-smi, clocks, nvcc --version (emulated driver rehearsal)"
  else
    step nvidia-smi "$log" "$(cap 15)" nvidia-smi
    # Clocks and throttle reasons: a timing is read against the clock it ran at.
    step "nvidia-smi clocks" "$log" "$(cap 15)" nvidia-smi -q -d CLOCK,PERFORMANCE
    step "nvcc --version" "$log" "$(cap 10)" nvcc --version
  fi
  # First to open the device: the module loads (cubins, or the JIT that the
  # driver's cache then saves every later process).
  step "parascan info" "$log" "$(cap $(( 40 * slow )))" "$bin/parascan" info
}

# The tests that launch the look-back explicitly (the ladder runs them).
lookback_skips=(--skip lookback --skip matches_oracle --skip measured_depth --skip workspace --skip large)

stage_tests() {
  begin $(( 150 * slow )) tests
  local t name
  for t in $(cuda_tests); do
    name=$(basename "$t")
    case "$name" in
      cuda_diagonal | cuda_perm_diagonal)
        PARASCAN_NO_LOOKBACK=1 step "test $name (no look-back)" "$out/tests.log" "$(cap "$test_one")" \
          "$t" --test-threads=1 "${lookback_skips[@]}" ;;
      cuda_newton) ;;  # the fused look-back: in the ladder
      *)
        PARASCAN_NO_LOOKBACK=1 step "test $name" "$out/tests.log" "$(cap "$test_one")" "$t" --test-threads=1 ;;
    esac
  done
  # The emulator tests run in CI; only the CUDA comparison here.
  PARASCAN_NO_LOOKBACK=1 step "test emu_backend cuda" "$out/tests.log" "$(cap "$test_one")" \
    "$bin/tests/emu_backend" cuda --test-threads=1
}

stage_ladder() {
  begin $(( 180 * slow )) ladder
  if [ -n "$dropped" ]; then
    note "SKIP  ladder (look-back dropped: $dropped)"
    return 0
  fi
  local rung exe filter rc
  for rung in \
    "cuda_diagonal lookback_aggregate_path" \
    "cuda_perm_diagonal lookback_aggregate_path" \
    "cuda_diagonal lookback_surplus_blocks_do_nothing" \
    "cuda_perm_diagonal lookback_surplus_blocks_do_nothing" \
    "cuda_diagonal matches_oracle" \
    "cuda_perm_diagonal matches_oracle" \
    "cuda_diagonal measured_depth_equals_formula" \
    "cuda_perm_diagonal measured_depth_equals_formula" \
    "cuda_diagonal large_shapes_all_plans" \
    "cuda_perm_diagonal large_shapes_all_plans" \
    "cuda_newton every_cell_and_mode_on_cuda"; do
    read -r exe filter <<<"$rung"
    if [ -n "$dropped" ]; then
      note "SKIP  ladder $exe $filter (look-back dropped)"
      continue
    fi
    step "ladder $exe $filter" "$out/ladder.log" "$(cap "$ladder_one")" \
      "$bin/tests/$exe" "$filter" --test-threads=1 --nocapture
    rc=$?
    if (( rc == 124 || rc == 137 )); then
      dropped="$exe $filter timed out"
      export PARASCAN_NO_LOOKBACK=1
      note "DROP  look-back for the rest of the run ($dropped): PARASCAN_NO_LOOKBACK=1"
    fi
  done
}

stage_bench() {
  begin $(( 4 * bench_one + 10 )) bench
  local group limit
  for group in diagonal dplr perm-diagonal newton; do
    limit=$(cap "$bench_one")
    step "bench --quick $group" "$out/bench.log" "$limit" \
      "$bin/parascan" bench --backend cuda --quick --shapes "$group" --out "$out/bench-$group" \
      --time-limit $(( limit > 30 ? limit - 15 : limit / 2 ))
  done
}

stage_sanitize() {
  begin $(( ${SANITIZE_ONE_S:-60} + 5 )) sanitize
  if [ -n "$rehearsal" ]; then
    note "SKIP  compute-sanitizer (emulated driver rehearsal)"
    return 0
  fi
  if [ -n "$dropped" ]; then
    note "SKIP  memcheck of the look-back (look-back dropped: $dropped)"
    return 0
  fi
  # Global-memory errors in the look-back protocol (status, aggregates, prefixes)
  # on its smallest test; racecheck sees shared memory only.
  step "memcheck cuda_diagonal lookback_aggregate_path" "$out/sanitizer.log" "$(cap "${SANITIZE_ONE_S:-60}")" \
    compute-sanitizer --tool memcheck --error-exitcode 1 "$bin/tests/cuda_diagonal" lookback_aggregate_path \
    --test-threads=1
}

stage_check() {
  begin "${CHECK_S:-$(( 90 * slow ))}" check
  step "parascan check --backends cuda" "$out/check.log" "$(cap "${CHECK_S:-$(( 90 * slow ))}")" \
    "$bin/parascan" check --backends cuda
}

note "parascan device run: commit $PARASCAN_COMMIT, stages ${stages[*]}, up to ${total} s, logs in $out"
for s in "${stages[@]}"; do
  "stage_$s"
done

echo
note "== summary: $(( $(now) - start )) s${dropped:+; look-back dropped ($dropped)}"
grep -hE "^test result:|FAILED|panicked|ERROR SUMMARY: [1-9]" "$out"/*.log 2>/dev/null |
  sed -E 's/ \([0-9]+\) panicked/ panicked/' | sort | uniq -c | head -40
for f in "$out"/bench-*/bench.md; do [ -f "$f" ] && echo "bench table: $f"; done
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
