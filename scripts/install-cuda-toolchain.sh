#!/usr/bin/env bash
# Installs the pinned CUDA 13.0 device compiler (nvcc, ptxas, cicc/NVVM,
# headers) from NVIDIA's PyPI wheels into .toolchain/cuda of this project.
#
# Why wheels: CI machines and developer boxes have no CUDA toolkit and no
# GPU, but build.rs still needs nvcc to turn kernels/*.cu into PTX. The
# wheels are a complete, relocatable toolkit subset that needs no root.
#
# Why every package is pinned to 13.0.*: the GPU machines run a CUDA 13.0
# driver, and a newer NVVM emits a PTX ISA version that driver rejects at
# module load time, so an unpinned nvvm would build fine here and then fail
# on the device.
#
# Idempotent: if the pinned versions are already installed and nvcc runs,
# nothing is downloaded. Prints the nvcc path on the last line of stdout.
#
# Environment:
#   PARASCAN_TOOLCHAIN_DIR  install prefix (default: <repo>/.toolchain/cuda)
#   PYTHON                  python interpreter with pip (default: python3)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix="${PARASCAN_TOOLCHAIN_DIR:-$repo_root/.toolchain/cuda}"
python="${PYTHON:-python3}"
series="13.0"

# pip distribution name -> dist-info directory prefix
packages=(
  nvidia-cuda-nvcc
  nvidia-nvvm
  nvidia-cuda-crt
  nvidia-cuda-runtime
  nvidia-cuda-cccl
)

# All wheels unpack into one toolkit-shaped tree: nvidia/cu13/{bin,include,
# nvvm/bin,nvvm/libdevice,lib}. nvcc's own nvcc.profile finds cicc and
# libdevice relative to itself, so this tree works as CUDA_HOME unchanged.
cuda_home="$prefix/nvidia/cu13"
nvcc="$cuda_home/bin/nvcc"

log() { echo "install-cuda-toolchain: $*" >&2; }

installed_ok() {
  local pkg dist
  for pkg in "${packages[@]}"; do
    dist="${pkg//-/_}"
    # shellcheck disable=SC2086
    if ! compgen -G "$prefix/${dist}-${series}.*.dist-info" >/dev/null; then
      return 1
    fi
  done
  [[ -x "$nvcc" ]] && "$nvcc" --version >/dev/null 2>&1
}

# Smoke test: compile a trivial kernel to PTX and to a cubin. This exercises
# the whole chain (cudafe++, cicc with libdevice, ptxas, the host compiler
# for the front end) so a half-working install is caught here, not in
# build.rs.
smoke_test() {
  local tmp
  tmp="$(mktemp -d)"
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" RETURN
  cat >"$tmp/smoke.cu" <<'CU'
#include <cuda_fp16.h>
#include <cuda_bf16.h>
extern "C" __global__ void smoke(float* y, const float* x, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = __half2float(__float2half(x[i])) + sqrtf(x[i]);
}
CU
  "$nvcc" -arch=sm_90 -std=c++17 -ptx "$tmp/smoke.cu" -o "$tmp/smoke.ptx"
  "$nvcc" -arch=sm_90 -std=c++17 -cubin "$tmp/smoke.cu" -o "$tmp/smoke.cubin"
  grep -q '\.entry smoke' "$tmp/smoke.ptx"
}

if installed_ok; then
  log "CUDA $series toolchain already installed in $cuda_home"
else
  if ! "$python" -m pip --version >/dev/null 2>&1; then
    log "error: '$python -m pip' is not available; install python3-pip"
    exit 1
  fi
  log "installing CUDA $series compiler wheels into $prefix"
  # A partial or mismatched install is removed first: pip --target does not
  # upgrade in place, and mixing two NVVM versions is exactly what we must
  # avoid.
  # The marker guards against deleting a folder this script did not create
  # (PARASCAN_TOOLCHAIN_DIR pointing somewhere unexpected).
  if [[ -d "$prefix" && -n "$(ls -A "$prefix")" && ! -f "$prefix/.parascan-toolchain" ]]; then
    log "error: $prefix exists, is not empty and was not created by this script; remove it or set PARASCAN_TOOLCHAIN_DIR"
    exit 1
  fi
  rm -rf "$prefix"
  mkdir -p "$prefix"
  echo "CUDA $series compiler wheels installed by scripts/install-cuda-toolchain.sh" >"$prefix/.parascan-toolchain"
  specs=()
  for pkg in "${packages[@]}"; do specs+=("${pkg}==${series}.*"); done
  PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_ROOT_USER_ACTION=ignore \
    "$python" -m pip install --quiet --no-deps --no-cache-dir \
    --only-binary=:all: --target "$prefix" "${specs[@]}"
  if ! installed_ok; then
    log "error: installation finished but $nvcc does not run"
    exit 1
  fi
  # build.rs cannot watch a toolchain folder that did not exist when it last
  # ran (cargo treats a missing watched path as always dirty), so a crate
  # built before this install would keep its "no PTX" build. Bumping
  # build.rs's mtime makes the next cargo build rerun it and find nvcc.
  touch "$repo_root/build.rs" 2>/dev/null || true
fi

if ! smoke_test; then
  log "error: $nvcc is installed but cannot compile a test kernel"
  exit 1
fi

version="$("$nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')"
log "nvcc $version works (sm_90 PTX and cubin)"
echo "$nvcc"
