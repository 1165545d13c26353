//! Build script: compiles `kernels/*.cu` to PTX with nvcc and generates
//! `$OUT_DIR/ptx.rs`, which `src/ptx.rs` includes; and compiles the same
//! sources with the host C++ compiler for the emulated-kernel backend
//! (always, nvcc or not; see `build_emulated_kernels`).
//!
//! nvcc is looked up in this order:
//! 1. `NVCC` (path to the nvcc executable);
//! 2. `CUDA_HOME`, then `CUDA_PATH` (`$X/bin/nvcc`);
//! 3. every directory of `PATH`;
//! 4. the project's own toolchain installed by `scripts/install-cuda-toolchain.sh`
//!    (`$PARASCAN_TOOLCHAIN_DIR`, default `.toolchain/cuda`).
//!
//! Without nvcc the crate still builds (the CPU backend does not need kernels):
//! `MODULES` is empty, `PTX_BUILT` is false and one warning says how to get
//! nvcc. With nvcc, any compilation failure stops the build: a broken kernel
//! must never silently turn into "CUDA backend unavailable".
//!
//! Other environment variables:
//! - `PARASCAN_CUDA_ARCH`: target architecture (default `sm_90`, e.g. `sm_80`);
//! - `PARASCAN_NVCC_FLAGS`: extra whitespace-separated nvcc flags (for example
//!   `-lineinfo` for compute-sanitizer and ncu source views);
//! - `PARASCAN_EMU_WERROR=1`: host-compiler warnings in the emulated kernels
//!   are errors; `CXX`/`CXXFLAGS` pick and tune the host compiler (`cc` crate).

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Default target: H100/H200, the GPUs the project is benchmarked on.
const DEFAULT_ARCH: &str = "sm_90";

/// Where the install script puts nvcc inside its prefix (the layout of
/// NVIDIA's CUDA 13 PyPI wheels).
const TOOLCHAIN_NVCC: &str = "nvidia/cu13/bin/nvcc";

const WATCHED_ENV: &[&str] = &[
    "NVCC",
    "CUDA_HOME",
    "CUDA_PATH",
    "PATH",
    "PARASCAN_CUDA_ARCH",
    "PARASCAN_NVCC_FLAGS",
    "PARASCAN_TOOLCHAIN_DIR",
    "PARASCAN_NO_PTX",
];

/// One `kernels/*.cu` source file.
#[derive(Clone)]
struct KernelSource {
    /// File stem; it names the module in `MODULES` and the PTX file.
    stem: String,
    path: PathBuf,
}

/// A usable nvcc and how it was found.
struct Nvcc {
    path: PathBuf,
    /// e.g. `13.0.88`.
    version: String,
}

/// What the generated `ptx.rs` describes.
struct PtxOutput {
    built: bool,
    nvcc_version: String,
    arch: String,
    /// (module name, PTX file in OUT_DIR)
    modules: Vec<(String, PathBuf)>,
}

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let kernels_dir = manifest_dir.join("kernels");

    println!("cargo:rerun-if-changed=build.rs");
    for var in WATCHED_ENV {
        println!("cargo:rerun-if-env-changed={var}");
    }

    record_commit(&manifest_dir);

    let kernels = list_kernels(&kernels_dir);
    let arch = target_arch();

    // The host-compiler build of the emulated kernels does not depend on
    // nvcc's: run both at once (each takes seconds per kernel file).
    let emulated = {
        let (kernels, kernels_dir, out_dir) =
            (kernels.clone(), kernels_dir.clone(), out_dir.clone());
        std::thread::spawn(move || build_emulated_kernels(&kernels, &kernels_dir, &out_dir))
    };

    // Without the `cuda` feature there is no CUDA backend to load PTX: skip
    // nvcc (and the megabytes of embedded PTX) entirely. PARASCAN_NO_PTX=1
    // does the same with the feature on (a build that only has to compile,
    // e.g. the interop check; the backend then reports that it has no PTX).
    let no_ptx = env::var_os("PARASCAN_NO_PTX").is_some_and(|v| !v.is_empty() && v != "0");
    let cuda = env::var_os("CARGO_FEATURE_CUDA").is_some() && !no_ptx;
    let nvcc = if cuda { find_nvcc(&manifest_dir) } else { None };
    let ptx = match nvcc {
        Some(nvcc) => {
            // Rebuild when the compiler itself is replaced (e.g. reinstalled
            // at another version).
            println!("cargo:rerun-if-changed={}", nvcc.path.display());
            let modules = compile_ptx(&nvcc, &kernels, &kernels_dir, &out_dir, &arch);
            PtxOutput {
                built: true,
                nvcc_version: nvcc.version,
                arch,
                modules,
            }
        }
        None => PtxOutput {
            built: false,
            nvcc_version: String::new(),
            arch,
            modules: Vec::new(),
        },
    };

    write_ptx_rs(&out_dir, &ptx);

    if let Err(panic) = emulated.join() {
        std::panic::resume_unwind(panic);
    }
}

/// Sets `PARASCAN_BUILD_COMMIT` for the crate: `PARASCAN_COMMIT` when set,
/// else `git rev-parse --short HEAD` of the source folder, else `unknown`.
///
/// Git's HEAD is deliberately not watched: that would rerun this script,
/// and so recompile every kernel, on each commit. The value is therefore
/// the commit of the last build-script run; `parascan bench` asks git
/// again at run time when the source folder is there, and the device bundle
/// passes `PARASCAN_COMMIT` (see `src/bench/mod.rs`, `commit`).
fn record_commit(manifest_dir: &Path) {
    println!("cargo:rerun-if-env-changed=PARASCAN_COMMIT");
    let commit = env::var("PARASCAN_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| {
            Command::new("git")
                .arg("-C")
                .arg(manifest_dir)
                .args(["rev-parse", "--short", "HEAD"])
                .stderr(Stdio::null())
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .filter(|c| !c.is_empty())
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=PARASCAN_BUILD_COMMIT={}", commit.trim());
}

/// All `kernels/*.cu` files, sorted by name so `MODULES` is deterministic.
/// Also registers every file of the folder (headers included) for rebuilds.
fn list_kernels(kernels_dir: &Path) -> Vec<KernelSource> {
    // Watching the folder catches added and removed files; watching each
    // file catches edits.
    println!("cargo:rerun-if-changed={}", kernels_dir.display());
    let Ok(entries) = fs::read_dir(kernels_dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    let mut kernels = Vec::new();
    for path in paths {
        if !path.is_file() {
            continue;
        }
        println!("cargo:rerun-if-changed={}", path.display());
        if path.extension().is_some_and(|ext| ext == "cu") {
            let stem = path
                .file_stem()
                .expect("file has a stem")
                .to_string_lossy()
                .into_owned();
            kernels.push(KernelSource { stem, path });
        }
    }
    kernels
}

/// `PARASCAN_CUDA_ARCH`, checked so a typo fails here with a clear message
/// instead of deep inside nvcc.
fn target_arch() -> String {
    let arch = env::var("PARASCAN_CUDA_ARCH").unwrap_or_default();
    let arch = arch.trim();
    if arch.is_empty() {
        return DEFAULT_ARCH.to_string();
    }
    let valid = ["sm_", "compute_"].iter().any(|prefix| {
        arch.strip_prefix(prefix).is_some_and(|rest| {
            let digits = rest.trim_end_matches(['a', 'f']);
            !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
        })
    });
    if !valid {
        panic!("PARASCAN_CUDA_ARCH={arch:?} is not a CUDA architecture; expected e.g. sm_90, sm_90a or sm_80");
    }
    arch.to_string()
}

// ---------------------------------------------------------------------------
// Finding nvcc
// ---------------------------------------------------------------------------

fn find_nvcc(manifest_dir: &Path) -> Option<Nvcc> {
    let exe = format!("nvcc{}", env::consts::EXE_SUFFIX);
    let mut notes: Vec<String> = Vec::new();

    let mut candidates: Vec<(String, PathBuf)> = Vec::new();
    if let Some(nvcc) = env::var_os("NVCC").filter(|v| !v.is_empty()) {
        candidates.push(("NVCC".into(), PathBuf::from(nvcc)));
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(home) = env::var_os(var).filter(|v| !v.is_empty()) {
            candidates.push((var.into(), Path::new(&home).join("bin").join(&exe)));
        }
    }
    if let Some(path) = env::var_os("PATH") {
        for dir in env::split_paths(&path).filter(|d| !d.as_os_str().is_empty()) {
            candidates.push(("PATH".into(), dir.join(&exe)));
        }
    }
    let toolchain = env::var_os("PARASCAN_TOOLCHAIN_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir.join(".toolchain").join("cuda"));
    candidates.push((
        "the project toolchain".into(),
        toolchain.join(TOOLCHAIN_NVCC),
    ));

    for (source, path) in candidates {
        if !is_executable(&path) {
            // An explicit setting that points nowhere deserves a note; a PATH
            // directory without nvcc is the normal case.
            if source != "PATH" && source != "the project toolchain" {
                notes.push(format!(
                    "{source} points to {} which is not an executable file",
                    path.display()
                ));
            }
            continue;
        }
        match nvcc_version(&path) {
            Ok(version) => {
                for note in &notes {
                    println!("cargo:warning={note}; using nvcc {version} from {source} instead");
                }
                return Some(Nvcc { path, version });
            }
            Err(message) => panic!(
                "nvcc found via {source} at {} does not run: {message}\n\
                 Fix or remove it, or point NVCC at a working nvcc \
                 (scripts/install-cuda-toolchain.sh installs one).",
                path.display()
            ),
        }
    }

    let mut warning = String::from(
        "nvcc not found (NVCC, CUDA_HOME, CUDA_PATH, PATH, .toolchain/cuda): the CUDA backend is built \
         without kernels; run scripts/install-cuda-toolchain.sh to install nvcc and rebuild",
    );
    for note in &notes {
        let _ = write!(warning, " ({note})");
    }
    println!("cargo:warning={warning}");
    None
}

fn is_executable(path: &Path) -> bool {
    let Ok(meta) = fs::metadata(path) else {
        return false;
    };
    if !meta.is_file() {
        return false;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        true
    }
}

/// Runs `nvcc --version` and extracts `13.0.88` from `release 13.0, V13.0.88`.
fn nvcc_version(nvcc: &Path) -> Result<String, String> {
    let output = Command::new(nvcc)
        .arg("--version")
        .output()
        .map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(format!(
            "`nvcc --version` exited with {}: {}",
            output.status,
            stderr_of(&output)
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text
        .lines()
        .find_map(|line| line.split(", V").nth(1))
        .map(|v| v.trim().to_string())
        .or_else(|| {
            text.lines()
                .find_map(|line| line.split("release ").nth(1))
                .map(|v| v.split(',').next().unwrap_or(v).trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    Ok(version)
}

fn stderr_of(output: &Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !stdout.trim().is_empty() {
        text.push_str(&stdout);
    }
    text
}

// ---------------------------------------------------------------------------
// Compiling PTX
// ---------------------------------------------------------------------------

/// Compiles every kernel to `$OUT_DIR/<stem>.ptx`. All nvcc processes run
/// concurrently; any failure panics with nvcc's output.
fn compile_ptx(
    nvcc: &Nvcc,
    kernels: &[KernelSource],
    kernels_dir: &Path,
    out_dir: &Path,
    arch: &str,
) -> Vec<(String, PathBuf)> {
    let extra_flags = env::var("PARASCAN_NVCC_FLAGS").unwrap_or_default();
    let mut jobs = Vec::new();
    for kernel in kernels {
        let ptx_path = out_dir.join(format!("{}.ptx", kernel.stem));
        let mut cmd = Command::new(&nvcc.path);
        // IEEE arithmetic on purpose: no --use_fast_math, so results match
        // the CPU oracle to rounding (IEEE division and square root), except
        // the one subnormal rule every backend shares: -ftz=true flushes f32
        // subnormals to zero (the CPU engine's f32 pool and the emulator do
        // the same); f64 keeps IEEE subnormals everywhere. -O3 is the host
        // optimization level and changes nothing in the PTX; device code is
        // optimized by default.
        cmd.arg("-ptx")
            .arg(format!("-arch={arch}"))
            .arg("-ftz=true")
            .arg("-std=c++17")
            .arg("-O3")
            .arg("-I")
            .arg(kernels_dir)
            .args(extra_flags.split_whitespace())
            .arg("-o")
            .arg(&ptx_path)
            .arg(&kernel.path);
        // Piped output keeps each kernel's diagnostics together.
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nvcc for {}: {e}", kernel.path.display()));
        jobs.push((kernel, ptx_path, cmd, child));
    }

    let mut modules = Vec::new();
    for (kernel, ptx_path, cmd, child) in jobs {
        let output = child.wait_with_output().unwrap_or_else(|e| {
            panic!("waiting for nvcc on {} failed: {e}", kernel.path.display())
        });
        if !output.status.success() {
            panic!(
                "nvcc failed to compile {} ({}):\n{:?}\n{}",
                kernel.path.display(),
                output.status,
                cmd,
                stderr_of(&output)
            );
        }
        let ptx = fs::read_to_string(&ptx_path).unwrap_or_else(|e| {
            panic!("nvcc wrote no readable PTX at {}: {e}", ptx_path.display())
        });
        if !ptx.contains(".entry") {
            println!(
                "cargo:warning=kernels/{}.cu defines no kernel (no .entry in its PTX)",
                kernel.stem
            );
        }
        modules.push((kernel.stem.clone(), ptx_path));
    }
    modules
}

// ---------------------------------------------------------------------------
// Generated Rust
// ---------------------------------------------------------------------------

fn write_ptx_rs(out_dir: &Path, ptx: &PtxOutput) {
    let mut src = String::new();
    src.push_str("// @generated by build.rs; do not edit.\n\n");
    let _ = writeln!(
        src,
        "/// Whether nvcc compiled `kernels/*.cu` for this build."
    );
    let _ = writeln!(src, "pub const PTX_BUILT: bool = {};", ptx.built);
    let _ = writeln!(
        src,
        "/// Version of the nvcc that compiled the PTX (e.g. `13.0.88`), or `\"\"`."
    );
    let _ = writeln!(
        src,
        "pub const NVCC_VERSION: &str = {:?};",
        ptx.nvcc_version
    );
    let _ = writeln!(
        src,
        "/// Target architecture of the PTX (`PARASCAN_CUDA_ARCH`, default `sm_90`)."
    );
    let _ = writeln!(src, "pub const CUDA_ARCH: &str = {:?};", ptx.arch);
    let _ = writeln!(
        src,
        "/// `(kernel file stem, PTX text)` for every `kernels/*.cu`; empty without nvcc."
    );
    let _ = writeln!(src, "pub const MODULES: &[(&str, &str)] = &[");
    for (name, path) in &ptx.modules {
        let file = path.file_name().expect("PTX file name").to_string_lossy();
        let _ = writeln!(
            src,
            "    ({name:?}, include_str!(concat!(env!(\"OUT_DIR\"), \"/{file}\"))),"
        );
    }
    src.push_str("];\n");

    let target = out_dir.join("ptx.rs");
    // Rewriting identical content would only bump the mtime; skip it.
    if fs::read_to_string(&target).ok().as_deref() != Some(src.as_str()) {
        fs::write(&target, src)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", target.display()));
    }
}

// ---------------------------------------------------------------------------
// Emulated kernels
// ---------------------------------------------------------------------------

/// Compiles the same `kernels/*.cu` sources for the CPU emulator (the
/// emulated-kernel backend, `src/backend/emu.rs`): each file as C++17 with
/// `kernels/emu/simt.h` force-included, plus the runtime
/// `kernels/emu/launcher.cpp`, into the static library `parascan_emu`.
///
/// Independent of nvcc on purpose: it always runs, so every build (CI has
/// no GPU) carries the real kernel code. A kernel that fails to compile
/// fails the build; compiler warnings appear as cargo warnings, and
/// `PARASCAN_EMU_WERROR=1` turns them into errors.
///
/// The library is linked with `+whole-archive`: kernels register themselves
/// from static constructors in objects nothing refers to, which the linker
/// would otherwise drop (every launch would then say "unknown kernel").
fn build_emulated_kernels(kernels: &[KernelSource], kernels_dir: &Path, out_dir: &Path) {
    let emu_dir = kernels_dir.join("emu");
    watch_dir(&emu_dir);
    println!("cargo:rerun-if-env-changed=PARASCAN_EMU_WERROR");
    let werror = env::var("PARASCAN_EMU_WERROR").is_ok_and(|v| !v.is_empty() && v != "0");

    let launcher = emu_dir.join("launcher.cpp");
    let simt = emu_dir.join("simt.h");
    for required in [&launcher, &simt] {
        if !required.is_file() {
            panic!(
                "{} is missing: the emulated-kernel backend cannot be built",
                required.display()
            );
        }
    }

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        // The objects also go into the emulated driver, a shared library.
        .pic(true)
        // Fixed, whatever the profile: kernels run thousands of fibers per
        // block, and -O0 code makes the emulated tests several times slower.
        .opt_level(2)
        .include(kernels_dir)
        .include(&emu_dir)
        // `.cu` files are plain C++ here, with the SIMT layer in front.
        .flag("-x")
        .flag("c++")
        .flag("-include")
        .flag(&simt)
        // Fiber stacks are small with a guard page below: a frame larger
        // than a page must still probe it.
        .flag_if_supported("-fstack-clash-protection")
        .flag("-pthread")
        .warnings(true)
        .extra_warnings(true)
        // CUDA's `#pragma unroll` means nothing to the host compiler and is
        // harmless there; every other warning stays on.
        .flag("-Wno-unknown-pragmas")
        .warnings_into_errors(werror);

    // One compiler process per file, all at once: without its `parallel`
    // feature cc compiles a build's files one after another, and a kernel
    // file full of template instantiations takes several seconds.
    let sources: Vec<&Path> = std::iter::once(launcher.as_path())
        .chain(kernels.iter().map(|k| k.path.as_path()))
        .collect();
    let objects: Vec<PathBuf> = std::thread::scope(|scope| {
        let jobs: Vec<_> = sources
            .iter()
            .map(|source| {
                let mut one = build.clone();
                one.file(source);
                scope.spawn(move || one.compile_intermediates())
            })
            .collect();
        jobs.into_iter()
            .flat_map(|job| {
                job.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });

    // The emulated libcuda serves the CUDA backend only.
    if env::var_os("CARGO_FEATURE_CUDA").is_some() {
        build_emulated_driver(&build, &objects, &emu_dir, out_dir);
    }

    build
        .objects(&objects)
        .link_lib_modifier("+whole-archive")
        .compile("parascan_emu");
}

/// Links the emulated CUDA driver: `kernels/emu/driver.cpp` with the same
/// emulator and kernel objects, as a shared `libcuda.so.1` in
/// `<target>/<profile>/emu-driver/` (with a `libcuda.so` link), where
/// `scripts/emulated-driver.sh` puts it first on the loader path so that
/// cudarc opens it instead of NVIDIA's. Only the `cu*` entry points are
/// exported, so the copy of the emulator inside it never clashes with the
/// one linked into the program. The folder is also given to the crate as
/// `PARASCAN_EMU_DRIVER_DIR`.
fn build_emulated_driver(
    build: &cc::Build,
    emu_objects: &[PathBuf],
    emu_dir: &Path,
    out_dir: &Path,
) {
    let source = emu_dir.join("driver.cpp");
    let script = emu_dir.join("driver.map");
    let mut driver = cc::Build::new();
    driver
        .cpp(true)
        .std("c++17")
        .opt_level(2)
        .pic(true)
        .include(emu_dir)
        .flag("-pthread")
        .warnings(true)
        .extra_warnings(true)
        .file(&source);
    let mut objects = driver.compile_intermediates();
    objects.extend(emu_objects.iter().cloned());

    // OUT_DIR is <target>/<profile>/build/<package>-<hash>/out.
    let Some(profile_dir) = out_dir.ancestors().nth(3) else {
        println!("cargo:warning=cannot place the emulated CUDA driver: unexpected OUT_DIR");
        return;
    };
    let dir = profile_dir.join("emu-driver");
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let library = dir.join("libcuda.so.1");
    let compiler = build.get_compiler();
    let mut link = compiler.to_command();
    link.arg("-shared")
        .arg("-o")
        .arg(&library)
        .arg("-Wl,-soname,libcuda.so.1")
        .arg(format!("-Wl,--version-script={}", script.display()))
        // The compile flags say `-x c++`; objects are objects.
        .arg("-x")
        .arg("none")
        .args(&objects)
        .arg("-pthread");
    let output = link
        .output()
        .unwrap_or_else(|e| panic!("cannot run the linker for the emulated driver: {e}"));
    if !output.status.success() {
        panic!(
            "linking the emulated CUDA driver failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let alias = dir.join("libcuda.so");
    let _ = fs::remove_file(&alias);
    #[cfg(unix)]
    std::os::unix::fs::symlink("libcuda.so.1", &alias)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", alias.display()));
    println!("cargo:rustc-env=PARASCAN_EMU_DRIVER_DIR={}", dir.display());
}

/// Registers a folder and every file in it for rebuilds.
fn watch_dir(dir: &Path) {
    println!("cargo:rerun-if-changed={}", dir.display());
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths.iter().filter(|p| p.is_file()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
