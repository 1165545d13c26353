#!/usr/bin/env bash
# Compiles every kernels/*.cu with nvcc, to PTX (what build.rs ships) and to a
# cubin with `ptxas -v`, and prints each kernel's register, stack and spill
# report. Exits non-zero on any compilation failure.
#
# Why both: PTX is what the driver loads, but register pressure and spills
# only show after ptxas, and a spill in a scan kernel costs bandwidth, which
# is the whole point of the kernels. No GPU is needed.
#
# nvcc is searched like build.rs does: NVCC, CUDA_HOME, CUDA_PATH, PATH, then
# the project toolchain (.toolchain/cuda); if none is found the pinned
# toolchain is installed with scripts/install-cuda-toolchain.sh.
#
# Environment: PARASCAN_CUDA_ARCH (default sm_90), PARASCAN_NVCC_FLAGS,
# PARASCAN_TOOLCHAIN_DIR, as for build.rs.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
arch="${PARASCAN_CUDA_ARCH:-sm_90}"
# A cubin needs a real architecture; compute_90 -> sm_90.
cubin_arch="${arch/compute_/sm_}"
read -r -a extra_flags <<<"${PARASCAN_NVCC_FLAGS:-}"
toolchain="${PARASCAN_TOOLCHAIN_DIR:-$repo_root/.toolchain/cuda}"

find_nvcc() {
  local c
  for c in "${NVCC:-}" "${CUDA_HOME:+$CUDA_HOME/bin/nvcc}" "${CUDA_PATH:+$CUDA_PATH/bin/nvcc}" \
    "$(command -v nvcc 2>/dev/null || true)" "$toolchain/nvidia/cu13/bin/nvcc"; do
    if [[ -n "$c" && -f "$c" && -x "$c" ]]; then
      echo "$c"
      return 0
    fi
  done
  return 1
}

if ! nvcc="$(find_nvcc)"; then
  echo "check-kernels: no nvcc found; installing the pinned toolchain" >&2
  bash "$repo_root/scripts/install-cuda-toolchain.sh" >/dev/null
  nvcc="$(find_nvcc)" || { echo "check-kernels: still no nvcc after install" >&2; exit 1; }
fi
echo "check-kernels: $("$nvcc" --version | grep -o 'release [0-9.]*, V[0-9.]*') at $nvcc, arch $arch"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

shopt -s nullglob
sources=(kernels/*.cu)
if ((${#sources[@]} == 0)); then
  echo "check-kernels: no kernels/*.cu found" >&2
  exit 1
fi

failed=0
spilled=0

# The shared headers must stay valid plain C++ (the emulated backend builds the
# kernels with the host compiler, with the same two include folders: headers that
# include emu/portable.cuh get the emulator's stand-ins for the CUDA headers).
cxx="${CXX:-$(command -v g++ || command -v c++ || true)}"
if [[ -n "$cxx" ]]; then
  for h in kernels/*.cuh; do
    if "$cxx" -std=c++17 -Wall -Wextra -fsyntax-only -I kernels -I kernels/emu -x c++ "$h"; then
      echo "  $h: OK as plain C++ ($(basename "$cxx"))"
    else
      echo "  $h: FAILED as plain C++" >&2
      failed=1
    fi
  done
fi

for src in "${sources[@]}"; do
  stem="$(basename "$src" .cu)"
  # -ftz=true: the f32 subnormal rule build.rs compiles with.
  flags=(-std=c++17 -O3 -ftz=true -I kernels "${extra_flags[@]}")
  if ! "$nvcc" -ptx -arch="$arch" "${flags[@]}" -o "$tmp/$stem.ptx" "$src" 2>"$tmp/$stem.ptx.log"; then
    echo "== $src: PTX compilation FAILED" >&2
    cat "$tmp/$stem.ptx.log" >&2
    failed=1
    continue
  fi
  if ! "$nvcc" -cubin -arch="$cubin_arch" "${flags[@]}" -Xptxas -v -o "$tmp/$stem.cubin" "$src" \
    >"$tmp/$stem.ptxas.log" 2>&1; then
    echo "== $src: cubin compilation FAILED" >&2
    cat "$tmp/$stem.ptxas.log" >&2
    failed=1
    continue
  fi
  entries="$(grep -c '^\.entry\|^\.visible \.entry' "$tmp/$stem.ptx" || true)"
  echo "== $src ($entries kernel(s), PTX $(wc -c <"$tmp/$stem.ptx") bytes)"
  # ptxas -v prints, per function: "Compiling entry function 'f' for 'sm_90'",
  # "N bytes stack frame, S bytes spill stores, L bytes spill loads",
  # "Used R registers, ...". Fold them into one line per kernel.
  awk '
    /Compiling entry function/ { fn = $0; sub(/.*function \047/, "", fn); sub(/\047.*/, "", fn) }
    /bytes stack frame/ { stack = $1; st = $5; ld = $9 }
    /Used [0-9]+ registers/ {
      line = $0; sub(/.*Used /, "", line)
      printf "  %-40s stack %4s B  spill st/ld %s/%s B  regs %s\n", fn, stack, st, ld, line
      if (st + ld > 0) spill = 1
    }
    END { exit spill }
  ' "$tmp/$stem.ptxas.log" || spilled=1
  grep -i 'warning' "$tmp/$stem.ptxas.log" | sed 's/^/  /' || true
done

if ((spilled)); then
  echo "check-kernels: note: some kernels spill registers (see above)"
fi
if ((failed)); then
  echo "check-kernels: FAILED" >&2
  exit 1
fi
echo "check-kernels: all kernels compile for $arch"
