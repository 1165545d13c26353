#!/usr/bin/env bash
# Builds kernels/diagonal.cu for the CPU emulator and runs its self-test
# (kernels/emu/diagonal_selftest.cpp) under every fiber order, then shows that a build
# with one Blelloch barrier removed (-DPS_DIAG_DROP_BARRIER=1) is caught.
#
#   bash kernels/emu/diagonal_selftest.sh
#
# Environment: CXX (default g++), PS_EMU_BUILD_DIR (default: a temporary folder,
# removed afterwards), SEED (shuffle seed, default 12345), NVCC (an nvcc to also check
# that the dropped-barrier variant is still valid CUDA; by default the one on PATH or in
# .toolchain/cuda, skipped when none).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
cxx="${CXX:-g++}"
seed="${SEED:-12345}"
if [[ -n "${PS_EMU_BUILD_DIR:-}" ]]; then
  build="$PS_EMU_BUILD_DIR"
  mkdir -p "$build"
else
  build="$(mktemp -d "${TMPDIR:-/tmp}/ps_diag_selftest.XXXXXX")"
  trap 'rm -rf "$build"' EXIT
fi

common=(-std=c++17 -O2 -pthread -fstack-clash-protection -I kernels -I kernels/emu)
strict=(-Wall -Wextra -Werror)
# How the backend compiles a kernel file: as C++, with simt.h force-included.
as_kernel=(-x c++ -include emu/simt.h)

status=0
step() { printf '\n== %s\n' "$*"; }

step "build (-O2): launcher, diagonal.cu (complete and with a dropped barrier), self-test"
"$cxx" "${common[@]}" "${strict[@]}" -c kernels/emu/launcher.cpp -o "$build/launcher.o" &
"$cxx" "${common[@]}" "${strict[@]}" -c kernels/emu/diagonal_selftest.cpp -o "$build/selftest.o" &
"$cxx" "${common[@]}" "${strict[@]}" "${as_kernel[@]}" -c kernels/diagonal.cu -o "$build/diagonal.o" &
"$cxx" "${common[@]}" "${strict[@]}" "${as_kernel[@]}" -DPS_DIAG_DROP_BARRIER=1 -c kernels/diagonal.cu \
  -o "$build/diagonal_drop.o" &
for job in $(jobs -p); do wait "$job" || status=1; done
if ((status)); then
  echo "diagonal_selftest.sh: build FAILED"
  exit 1
fi
"$cxx" "${common[@]}" "$build/launcher.o" "$build/selftest.o" "$build/diagonal.o" -o "$build/diag_selftest"
"$cxx" "${common[@]}" "$build/launcher.o" "$build/selftest.o" "$build/diagonal_drop.o" -o "$build/diag_selftest_drop"
echo "ok"

step "values (f32, f16, bf16, f64; both layouts; plans P0-P3) and depth, per fiber order"
"$build/diag_selftest" --order forward || status=1
"$build/diag_selftest" --order reverse || status=1
"$build/diag_selftest" --order shuffle --seed "$seed" || status=1

step "dropped Blelloch down-sweep barrier (-DPS_DIAG_DROP_BARRIER=1) must be caught"
"$build/diag_selftest_drop" --expect-race --seed "$seed" || status=1

nvcc="${NVCC:-}"
if [[ -z "$nvcc" ]]; then
  nvcc="$(command -v nvcc 2>/dev/null || true)"
  [[ -z "$nvcc" && -x .toolchain/cuda/nvidia/cu13/bin/nvcc ]] && nvcc=.toolchain/cuda/nvidia/cu13/bin/nvcc
fi
if [[ -n "$nvcc" ]]; then
  step "nvcc: the dropped-barrier variant is still valid CUDA ($("$nvcc" --version | tail -1))"
  "$nvcc" -ptx -arch=sm_90 -std=c++17 -I kernels -DPS_DIAG_DROP_BARRIER=1 kernels/diagonal.cu \
    -o "$build/diagonal_drop.ptx" || status=1
  echo "ok (the complete file is checked by scripts/check-kernels.sh)"
fi

if [[ $status -eq 0 ]]; then
  printf '\ndiagonal_selftest.sh: PASS\n'
else
  printf '\ndiagonal_selftest.sh: FAIL\n'
fi
exit $status
