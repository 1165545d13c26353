#!/usr/bin/env bash
# Builds parascan as a model crate links it: without its default features,
# next to a cudarc that another library configured.
#
#   tests/interop/candle-features   cudarc with candle-core 0.11's `cuda`
#                                    features (dynamic-linking, CUDA version
#                                    from nvcc)
#   tests/interop/cubecl-features   cudarc as cubecl-cuda / burn-cuda use it
#                                    (fallback-dynamic-loading)
#
# Each is a library crate calling parascan's CUDA backend on the caller's
# stream; building it proves that parascan selects no cudarc linking mode
# or CUDA version of its own. (A binary would also need the CUDA libraries
# that dynamic-linking names at link time; the library build does not.)
#
# Also checks that the library without default features pulls none of the
# command-line tool's dependencies, and documents without warnings.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

bash scripts/install-cuda-toolchain.sh >/dev/null
# cudarc's `cuda-version-from-build-system` asks `nvcc --version`.
nvcc_dir="$(dirname "$(find "$repo_root/.toolchain/cuda" -name nvcc -type f | head -n 1)")"
export PATH="$nvcc_dir:$PATH"
export CARGO_TARGET_DIR="$repo_root/target/interop"
# Compiling is the point here: no PTX (the kernels are checked elsewhere).
export PARASCAN_NO_PTX=1

echo "-- library without default features: dependencies"
tree="$(cargo tree -e normal --no-default-features --prefix none)"
if grep -E '^(clap|plotters|indicatif|serde_json|serde|anyhow|rand|cudarc) ' <<<"$tree"; then
  echo "interop-check: the library without default features depends on the crates above" >&2
  exit 1
fi
echo "$(sort -u <<<"$tree" | wc -l) crates, none of the CLI's"

echo "-- rustdoc without default features (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-default-features --lib --no-deps

for crate in candle-features cubecl-features; do
  echo "-- tests/interop/$crate"
  (cd "tests/interop/$crate" && cargo build --lib)
  features="$(cd "tests/interop/$crate" && cargo tree -e features -i cudarc --prefix none | grep -o 'feature "[a-z0-9-]*"' | sort -u | tr '\n' ' ')"
  echo "cudarc $features"
done
echo "interop-check: ok"
