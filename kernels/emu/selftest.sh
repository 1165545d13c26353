#!/usr/bin/env bash
# Builds the CPU emulator's self-test with the host C++ compiler and runs it
# under every fiber order (and once more through the ucontext fallback).
#
#   bash kernels/emu/selftest.sh
#
# Environment: CXX (default g++), PS_EMU_BUILD_DIR (default: a temporary
# folder, removed afterwards), SEED (shuffle seed, default 12345), NVCC (an
# nvcc to also check that the self-test kernels compile for the GPU; by
# default the one on PATH or in .toolchain/cuda, skipped when none),
# PS_EMU_SELFTEST_ASAN=1 (also build and run everything under
# AddressSanitizer; the fiber switches are annotated for it).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
cxx="${CXX:-g++}"
seed="${SEED:-12345}"
if [[ -n "${PS_EMU_BUILD_DIR:-}" ]]; then
  build="$PS_EMU_BUILD_DIR"
  mkdir -p "$build"
else
  build="$(mktemp -d "${TMPDIR:-/tmp}/ps_emu_selftest.XXXXXX")"
  trap 'rm -rf "$build"' EXIT
fi

common=(-std=c++17 -g -pthread -fstack-clash-protection -I kernels -I kernels/emu)
strict=(-Wall -Wextra -Werror)
# How the backend compiles a kernel file: as C++, with simt.h force-included.
as_kernel=(-x c++ -include emu/simt.h)

status=0
step() { printf '\n== %s\n' "$*"; }

build_all() {  # $1: optimization flag, $2: output binary
  local opt="$1" out="$2" dir="$build/obj$1"
  mkdir -p "$dir"
  "$cxx" "${common[@]}" "$opt" "${strict[@]}" -c kernels/emu/launcher.cpp -o "$dir/launcher.o"
  "$cxx" "${common[@]}" "$opt" "${strict[@]}" -c kernels/emu/selftest.cpp -o "$dir/selftest.o"
  "$cxx" "${common[@]}" "$opt" "${strict[@]}" "${as_kernel[@]}" -c kernels/emu/selftest_kernels.cu -o "$dir/kernels.o"
  "$cxx" "${common[@]}" "$opt" "${strict[@]}" "${as_kernel[@]}" -c kernels/emu/selftest_scan.cu -o "$dir/scan0.o"
  "$cxx" "${common[@]}" "$opt" "${strict[@]}" "${as_kernel[@]}" -DPS_SELFTEST_DROP_BARRIER=1 -c kernels/emu/selftest_scan.cu -o "$dir/scan1.o"
  "$cxx" "${common[@]}" "$opt" "${strict[@]}" "${as_kernel[@]}" -DPS_SELFTEST_DROP_BARRIER=2 -c kernels/emu/selftest_scan.cu -o "$dir/scan2.o"
  # copy.cu belongs to the project's kernels: warnings are reported, not fatal.
  "$cxx" "${common[@]}" "$opt" -Wall -Wextra "${as_kernel[@]}" -c kernels/copy.cu -o "$dir/copy.o"
  "$cxx" "${common[@]}" "$dir"/*.o -o "$out"
}

step "header alone compiles cleanly (-Wall -Wextra -Werror)"
printf '#include "emu/simt.h"\n#include "parascan.cuh"\nint main() { return 0; }\n' >"$build/header_only.cpp"
"$cxx" "${common[@]}" -O2 "${strict[@]}" "$build/header_only.cpp" -c -o "$build/header_only.o"
echo "ok (simt.h together with parascan.cuh)"

step "build (-O2): launcher, self-test kernels, three scan variants, kernels/copy.cu"
build_all -O2 "$build/selftest"
echo "ok"

step "per-order tests"
"$build/selftest" --order forward || status=1
"$build/selftest" --order reverse || status=1
"$build/selftest" --order shuffle --seed "$seed" || status=1

step "missing-barrier demonstration, conversions, stack overflow, timings"
"$build/selftest" --global || status=1

step "everything again through the ucontext fallback (PS_EMU_UCONTEXT=1)"
PS_EMU_UCONTEXT=1 "$build/selftest" >"$build/ucontext.log" 2>&1 || { cat "$build/ucontext.log"; status=1; }
grep -E '^(order|  st_|[0-9]+ checks)' "$build/ucontext.log" || true

step "unoptimized build (-O0), shuffled order"
build_all -O0 "$build/selftest_O0"
"$build/selftest_O0" --order shuffle --seed "$((seed + 1))" || status=1

if [[ "${PS_EMU_SELFTEST_ASAN:-0}" != 0 ]]; then
  step "AddressSanitizer build (-O1 -fsanitize=address), all orders"
  common+=(-fsanitize=address)
  build_all -O1 "$build/selftest_asan"
  PS_EMU_NO_SIGNAL_HANDLER=1 "$build/selftest_asan" || status=1
fi

# The self-test kernels are portable CUDA: check with nvcc when there is one.
nvcc="${NVCC:-}"
if [[ -z "$nvcc" ]]; then
  nvcc="$(command -v nvcc 2>/dev/null || true)"
  [[ -z "$nvcc" && -x .toolchain/cuda/nvidia/cu13/bin/nvcc ]] && nvcc=.toolchain/cuda/nvidia/cu13/bin/nvcc
fi
if [[ -n "$nvcc" ]]; then
  step "nvcc: the self-test kernels compile for the GPU too ($("$nvcc" --version | tail -1))"
  for v in 0 1 2; do
    "$nvcc" -ptx -arch=sm_90 -std=c++17 -I kernels -DPS_SELFTEST_DROP_BARRIER=$v \
      kernels/emu/selftest_scan.cu -o "$build/scan$v.ptx" || status=1
  done
  "$nvcc" -ptx -arch=sm_90 -std=c++17 -I kernels kernels/emu/selftest_kernels.cu \
    -o "$build/selftest_kernels.ptx" || status=1
  echo "ok"
else
  step "nvcc not found: skipped the GPU compile check of the self-test kernels"
fi

if [[ $status -eq 0 ]]; then
  printf '\nselftest.sh: PASS\n'
else
  printf '\nselftest.sh: FAIL\n'
fi
exit $status
