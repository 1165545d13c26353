#!/usr/bin/env bash
# Runs a command against the emulated CUDA driver: a libcuda.so.1 built from
# kernels/emu/driver.cpp over the SIMT emulator, so that the CUDA backend
# (cudarc, modules, launches, streams, events, device memory) runs for real
# on a machine without a GPU. Nothing measured under it is a GPU result: its
# device calls itself "parascan emulated CUDA driver (H100 geometry ...)".
#
#   bash scripts/emulated-driver.sh cargo test --release --test cuda_diagonal
#   bash scripts/emulated-driver.sh target/release/parascan info
#   bash scripts/emulated-driver.sh bash dist/device/run.sh
#
# What it does:
# 1. installs the pinned CUDA 13.0 compiler if it is missing (the CUDA
#    backend needs the PTX that build.rs compiles with it);
# 2. builds the crate in release mode, which also links the driver into
#    <target>/release/emu-driver/ (build.rs);
# 3. puts that folder first on LD_LIBRARY_PATH and sets REQUIRE_CUDA=1, so
#    CUDA tests that cannot open the backend fail instead of skipping, and
#    runs the command.
#
# Environment:
#   PARASCAN_EMU_NO_BUILD=1   skip steps 1 and 2 (the driver must exist)
#   PS_EMU_FIBER_ORDER        forward | reverse | shuffle (default shuffle)
#   PS_EMU_GUARD              end (default) | start: which side of every
#                             device buffer touches its guard page
#   PS_EMU_SM_COUNT, PS_EMU_COMPUTE_CAPABILITY, PS_EMU_TOTAL_MEM_MIB
#                             the emulated device's geometry (default: H100)
#   PS_EMU_DRIVER_TRACE=1     log every launch and allocation on stderr
# REQUIRE_GPU=1 keeps its meaning: it asks for a real GPU, so GPU tests fail
# under this script when it is set.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ $# -eq 0 ]]; then
  echo "usage: bash scripts/emulated-driver.sh <command> [args...]" >&2
  exit 2
fi

if [[ "${PARASCAN_EMU_NO_BUILD:-0}" != 1 ]]; then
  bash "$repo_root/scripts/install-cuda-toolchain.sh" >/dev/null
  (cd "$repo_root" && cargo build --release --quiet)
fi

target_dir="${CARGO_TARGET_DIR:-$repo_root/target}"
driver_dir="$target_dir/release/emu-driver"
if [[ ! -f "$driver_dir/libcuda.so.1" ]]; then
  echo "emulated-driver: $driver_dir/libcuda.so.1 is missing (run cargo build --release)" >&2
  exit 1
fi

export LD_LIBRARY_PATH="$driver_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export REQUIRE_CUDA=1
# For scripts that behave differently in a rehearsal (dist/device/run.sh).
export PARASCAN_EMULATED_DRIVER=1
exec "$@"
