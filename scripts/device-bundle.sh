#!/usr/bin/env bash
# Bundles what a lent GPU machine needs (it has CUDA 13 but no Rust):
# the release CLI, every release test executable and a run script, into
# dist/device/ (git-ignored, kept small: binaries are stripped).
#
#   bash scripts/device-bundle.sh            # build + bundle
#   then, with the device tool: run `bash dist/device/run.sh` carrying dist/device
#
# run.sh writes every log under $OUT (or dist/device/logs without $OUT).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-cuda-toolchain.sh >/dev/null
dest=dist/device
rm -rf "$dest"
mkdir -p "$dest/tests"

cargo build --release --bin parascan
cp target/release/parascan "$dest/parascan"

# Every integration-test executable of the release profile.
cargo test --release --no-run --message-format=json 2>/dev/null |
  python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] in (["test"], ["lib"]):
        print(m["target"]["name"], m["executable"])
' | while read -r name exe; do
  cp "$exe" "$dest/tests/$name"
done
strip "$dest/parascan" "$dest"/tests/* 2>/dev/null || true

cat > "$dest/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs on the GPU machine from the repository root: GPU tests (REQUIRE_GPU=1),
# compute-sanitizer memcheck and racecheck over the CUDA kernel tests, then
# the CLI's info, check and sweep on the CUDA backend.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${OUT:-$here/logs}"
mkdir -p "$out"
status=0
{
  date -u; nvidia-smi; nvcc --version
  echo "== commit: $(cat "$here/COMMIT" 2>/dev/null)"
} >"$out/env.log" 2>&1

export REQUIRE_GPU=1
for t in "$here"/tests/*; do
  name="$(basename "$t")"
  echo "== test $name" | tee -a "$out/tests.log"
  "$t" --test-threads=1 >>"$out/tests.log" 2>&1 || { echo "FAILED: $name" | tee -a "$out/tests.log"; status=1; }
done

for t in "$here"/tests/cuda_*; do
  [ -e "$t" ] || continue
  for tool in memcheck racecheck; do
    echo "== compute-sanitizer --tool $tool $(basename "$t")" | tee -a "$out/sanitizer.log"
    compute-sanitizer --tool "$tool" --error-exitcode 1 "$t" --test-threads=1 >>"$out/sanitizer.log" 2>&1 ||
      { echo "SANITIZER FAILED: $tool $(basename "$t")" | tee -a "$out/sanitizer.log"; status=1; }
  done
done

"$here/parascan" info >"$out/info.log" 2>&1 || status=1
"$here/parascan" check >"$out/check.log" 2>&1 || status=1
"$here/parascan" sweep --backend cuda --out "$out/sweep" >"$out/sweep.log" 2>&1 || status=1
grep -h "FAIL" "$out"/*.log | head -50
exit $status
RUN
chmod +x "$dest/run.sh"
git rev-parse HEAD >"$dest/COMMIT" 2>/dev/null || echo unknown >"$dest/COMMIT"
du -sh "$dest"
