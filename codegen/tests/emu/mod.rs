//! `CudaEmu`: a test-only backend that runs the renderer's CUDA dialect on the CPU, so that
//! the CUDA-only parts of the rendered source (the warp-shuffle tail of the tree reduction,
//! `atomicAdd`/`atomicCAS`, `__shared__` arrays, the entry points with CUDA's builtins) are
//! executed by the shared backend test body (`suite/mod.rs`) without a GPU.
//!
//! `compile` renders the kernels with `render::render_named(.., Dialect::Cuda, ..)` into one
//! program (`render::program_source`, as the OpenCL backend builds one program per batch),
//! prepends `cuda_emu.h` and appends a `main` with a table of the entry points, and builds an
//! executable with g++ (`-std=c++20 -O1`), cached by a hash of the source in a temporary
//! directory per process. A launch runs the executable: the buffers, sizes and launches go
//! to its stdin, the output buffers come back on its stdout. Blocks run in order, the threads
//! of a block as fibers (see `cuda_emu.h`).
//!
//! The test body's extra entry point of a full reduction with a split form runs the split
//! launches with [`FORCED_SPLIT_PARTS`] partials. Within a block, threads run in ascending and
//! descending order by turns between barriers, blocks in descending order (the interpreter
//! ascends), so that order-dependent code shows. `METAJIT_EMU_TIMES=1` prints every launch
//! with its time; `METAJIT_EMU_CXXFLAGS` adds g++ options (`-DCUDA_EMU_UCONTEXT` runs the
//! threads on ucontext fibers instead of the x86-64 register switch).
//!
//! Buffers are host memory (`metajit_codegen::buffer::Buffer`), and contractions are the CPU
//! backend's GEMM: they are not what is under test here.

#![allow(dead_code)]

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use metajit_codegen::buffer::Buffer;
use metajit_codegen::check;
use metajit_codegen::cpu::backend::Cpu;
use metajit_codegen::gpu::Dialect;
use metajit_codegen::gpu::render::{self, EntryKind, Launch, Rendered};
use metajit_codegen::{Backend, BackendError};
use metajit_metaops::contraction::GemmLayout;
use metajit_metaops::kernel::{BufParam, Kernel};
use metajit_metaops::{DType, HostData, Scalar};

const NAME: &str = "cuda-emu";
/// The emulation header, written next to every generated program.
const HEADER: &str = include_str!("../cuda_emu.h");
/// Kernels per generated program (programs of one batch build in parallel).
const CHUNK: usize = 24;
/// The partials of the forced split launch the test body's extra entry point runs.
pub const FORCED_SPLIT_PARTS: u64 = 3;

/// The emulated CUDA backend (see the module doc).
pub struct CudaEmu {
    dir: PathBuf,
    /// Built executables by the hash of their source.
    built: Mutex<HashMap<u64, Arc<PathBuf>>>,
    /// Names for generated programs and loaded artifacts.
    counter: Mutex<u64>,
    cpu: Cpu,
}

/// A compiled kernel: its rendering and the executable holding its entry points.
pub struct EmuKernel {
    exe: Arc<PathBuf>,
    rendered: Rendered,
    prefix: String,
    params: Vec<BufParam>,
    n_sizes: usize,
}

impl EmuKernel {
    /// The kernel's rendering (entry points, launch geometry).
    pub fn rendered(&self) -> &Rendered {
        &self.rendered
    }
}

fn device_error(message: impl Into<String>) -> BackendError {
    BackendError::Device {
        backend: NAME,
        message: message.into(),
    }
}

impl Drop for CudaEmu {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl CudaEmu {
    /// A backend with a fresh temporary directory; an error where g++ is missing.
    pub fn new() -> Result<CudaEmu, String> {
        let ok = Command::new("g++")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("no g++ ({e})"))?;
        if !ok.success() {
            return Err("g++ --version failed".into());
        }
        remove_stale_dirs();
        let dir = std::env::temp_dir().join(format!("metajit-cuda-emu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        std::fs::write(dir.join("cuda_emu.h"), HEADER)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(CudaEmu {
            dir,
            built: Mutex::new(HashMap::new()),
            counter: Mutex::new(0),
            cpu: Cpu::new(1),
        })
    }

    fn next_id(&self) -> u64 {
        let mut c = self.counter.lock().unwrap_or_else(|e| e.into_inner());
        *c += 1;
        *c
    }

    /// The program of some rendered kernels: header, prelude, kernels, `main`.
    fn program(rendered: &[&Rendered]) -> String {
        let mut s = String::from("#include \"cuda_emu.h\"\n");
        s.push_str(&render::program_source(Dialect::Cuda, rendered));
        s.push_str("\nstatic const emu::Entry metajit_emu_entries[] = {\n");
        for r in rendered {
            for name in r
                .entries
                .iter()
                .map(|e| e.name.as_str())
                .chain(r.split_entries.iter().map(String::as_str))
            {
                s.push_str(&format!(
                    "    {{\"{name}\", [](void** a) {{ emu::call({name}, a); }}, emu::arity({name})}},\n"
                ));
            }
        }
        s.push_str("};\nint main() {\n    return emu::main(metajit_emu_entries, sizeof metajit_emu_entries / sizeof metajit_emu_entries[0]);\n}\n");
        s
    }

    /// Builds (or finds) the executable of `source`.
    fn build(&self, source: &str, kernels: &[&Kernel]) -> Result<Arc<PathBuf>, BackendError> {
        let mut h = DefaultHasher::new();
        let extra = std::env::var("METAJIT_EMU_CXXFLAGS").unwrap_or_default();
        source.hash(&mut h);
        HEADER.hash(&mut h);
        extra.hash(&mut h);
        let key = h.finish();
        if let Some(p) = self
            .built
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(p.clone());
        }
        let src = self.dir.join(format!("p{key:016x}.cpp"));
        let exe = self.dir.join(format!("p{key:016x}"));
        let tmp = self.dir.join(format!("p{key:016x}.{}.tmp", self.next_id()));
        std::fs::write(&src, source)
            .map_err(|e| device_error(format!("{}: {e}", src.display())))?;
        let out = Command::new("g++")
            .args(["-std=c++20", "-O1", "-ffp-contract=off", "-w"])
            .args(extra.split_whitespace())
            .arg("-o")
            .arg(&tmp)
            .arg(&src)
            .output()
            .map_err(|e| device_error(format!("running g++: {e}")))?;
        if !out.status.success() {
            return Err(BackendError::Compile {
                backend: NAME,
                message: format!(
                    "g++ failed ({}):\n{}",
                    src.display(),
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .take(40)
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
                kernel: kernels
                    .iter()
                    .map(|k| k.text())
                    .collect::<Vec<_>>()
                    .join("\n"),
            });
        }
        std::fs::rename(&tmp, &exe).map_err(|e| device_error(format!("{}: {e}", exe.display())))?;
        let p = Arc::new(exe);
        self.built
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, p.clone());
        Ok(p)
    }

    /// Compiles many kernels: programs of up to `CHUNK` kernels, built two at a time.
    pub fn compile_many(&self, kernels: &[&Kernel]) -> Result<Vec<EmuKernel>, BackendError> {
        let base = self.next_id();
        let mut rendered = Vec::with_capacity(kernels.len());
        for (i, k) in kernels.iter().enumerate() {
            let prefix = format!("mk{base}_{i}");
            rendered.push((render::render_named(k, Dialect::Cuda, &prefix)?, prefix));
        }
        let chunks: Vec<usize> = (0..kernels.len()).step_by(CHUNK).collect();
        let mut exes: Vec<Option<Result<Arc<PathBuf>, BackendError>>> =
            (0..chunks.len()).map(|_| None).collect();
        let next = Mutex::new(0usize);
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let c = {
                                let mut n = next.lock().unwrap_or_else(|e| e.into_inner());
                                *n += 1;
                                *n - 1
                            };
                            let Some(&start) = chunks.get(c) else { break };
                            let end = (start + CHUNK).min(kernels.len());
                            let rs: Vec<&Rendered> =
                                rendered[start..end].iter().map(|(r, _)| r).collect();
                            let source = Self::program(&rs);
                            done.push((c, self.build(&source, &kernels[start..end])));
                        }
                        done
                    })
                })
                .collect();
            for w in workers {
                for (c, r) in w.join().unwrap_or_default() {
                    exes[c] = Some(r);
                }
            }
        });
        let mut out = Vec::with_capacity(kernels.len());
        for (i, (k, (r, prefix))) in kernels.iter().zip(rendered).enumerate() {
            let exe = match &exes[i / CHUNK] {
                Some(Ok(e)) => e.clone(),
                Some(Err(e)) => return Err(clone_error(e)),
                None => return Err(device_error("a build thread failed")),
            };
            out.push(EmuKernel {
                exe,
                rendered: r,
                prefix,
                params: k.bufs.clone(),
                n_sizes: k.n_sizes,
            });
        }
        Ok(out)
    }

    /// Runs `launches` (entry point names, geometry, whether the scratch buffer is passed)
    /// in order in one process of `c`'s executable.
    fn run(
        &self,
        c: &EmuKernel,
        bufs: &[&Buffer],
        sizes: &[i64],
        scratch_bytes: usize,
        launches: &[(&str, Launch, bool)],
    ) -> Result<(), BackendError> {
        if launches.iter().all(|(_, l, _)| l.groups == 0) {
            return Ok(());
        }
        let mut input = Vec::new();
        input.extend((bufs.len() as u32).to_le_bytes());
        for (b, p) in bufs.iter().zip(&c.params) {
            input.extend((b.bytes() as u64).to_le_bytes());
            input.push(u8::from(p.output));
            input.extend(b.as_bytes());
        }
        input.extend((sizes.len() as u32).to_le_bytes());
        for s in sizes {
            input.extend(s.to_le_bytes());
        }
        input.extend((scratch_bytes as u64).to_le_bytes());
        input.extend((launches.len() as u32).to_le_bytes());
        for (name, l, scratch) in launches {
            input.extend((name.len() as u32).to_le_bytes());
            input.extend(name.as_bytes());
            input.extend(l.groups.to_le_bytes());
            input.extend(l.local.to_le_bytes());
            input.push(u8::from(*scratch));
            // Only the group entries and the split entries (which have the scratch buffer)
            // use barriers; the others run their threads one after the other.
            let group = c
                .rendered
                .entries
                .iter()
                .any(|e| e.name == *name && e.kind == EntryKind::Group);
            input.push(u8::from(!(*scratch || group)));
        }
        let mut child = spawn(c.exe.as_path())?;
        let mut stdin = child.stdin.take().ok_or_else(|| device_error("no stdin"))?;
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let t = std::time::Instant::now();
        let out = child
            .wait_with_output()
            .map_err(|e| device_error(format!("{}: {e}", c.exe.display())))?;
        let _ = writer.join();
        if std::env::var_os("METAJIT_EMU_TIMES").is_some() {
            eprintln!(
                "cuda-emu: {:?} {:?}: {:.2?}",
                launches
                    .iter()
                    .map(|(n, l, _)| (n, l.groups, l.local))
                    .collect::<Vec<_>>(),
                sizes,
                t.elapsed()
            );
        }
        if !out.status.success() {
            return Err(device_error(format!(
                "{} {:?}: {}: {}",
                c.exe.display(),
                launches.iter().map(|l| l.0).collect::<Vec<_>>(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let want: usize = bufs
            .iter()
            .zip(&c.params)
            .filter(|(_, p)| p.output)
            .map(|(b, _)| b.bytes())
            .sum();
        if out.stdout.len() != want {
            return Err(device_error(format!(
                "{} bytes of outputs, {want} expected",
                out.stdout.len()
            )));
        }
        let mut at = 0;
        for (b, p) in bufs.iter().zip(&c.params) {
            if p.output {
                let n = b.bytes();
                // SAFETY: the buffer holds `bytes()` bytes; the caller of `launch` guarantees
                // that nobody else uses an output buffer during the launch (the trait's
                // contract), as a kernel writing it through the same pointer would.
                unsafe {
                    std::ptr::copy_nonoverlapping(out.stdout[at..].as_ptr(), b.as_mut_ptr(), n)
                };
                at += n;
            }
        }
        Ok(())
    }

    /// Launches entry point `entry` of `c` (`entries.len()` is the split form with
    /// [`FORCED_SPLIT_PARTS`] partials, where the kernel has one). Checks as
    /// [`Backend::launch`].
    ///
    /// # Safety
    ///
    /// As [`Backend::launch`].
    pub unsafe fn launch_entry(
        &self,
        c: &EmuKernel,
        kernel: &Kernel,
        entry: usize,
        bufs: &[&Buffer],
        sizes: &[i64],
    ) -> Result<(), BackendError> {
        check::launch_args(NAME, &c.params, c.n_sizes, kernel, bufs, sizes)?;
        let sizes = &sizes[..c.n_sizes];
        if entry == c.rendered.entries.len() {
            return self.run_split(c, bufs, sizes, Some(FORCED_SPLIT_PARTS));
        }
        let l = c.rendered.launch_entry(entry, sizes);
        let name = c
            .rendered
            .entries
            .get(entry)
            .ok_or_else(|| device_error(format!("no entry point {entry}")))?;
        self.run(c, bufs, sizes, 0, &[(&name.name, l, false)])
    }

    fn run_split(
        &self,
        c: &EmuKernel,
        bufs: &[&Buffer],
        sizes: &[i64],
        parts: Option<u64>,
    ) -> Result<(), BackendError> {
        let Some(plan) = c.rendered.split_plan(sizes, parts) else {
            return Err(device_error("no split form"));
        };
        let mut launches = Vec::new();
        for l in &plan.launches {
            let name = c
                .rendered
                .split_entries
                .get(l.entry)
                .ok_or_else(|| device_error(format!("no split entry point {}", l.entry)))?;
            launches.push((name.as_str(), *l, true));
        }
        self.run(c, bufs, sizes, plan.scratch_bytes, &launches)
    }
}

/// A copy of a build error for every kernel of its program.
fn clone_error(e: &BackendError) -> BackendError {
    match e {
        BackendError::Compile {
            backend,
            message,
            kernel,
        } => BackendError::Compile {
            backend,
            message: message.clone(),
            kernel: kernel.clone(),
        },
        other => device_error(other.to_string()),
    }
}

impl Backend for CudaEmu {
    type Compiled = EmuKernel;
    type Buffer = Buffer;

    fn name(&self) -> &'static str {
        NAME
    }

    fn compile(&self, kernel: &Kernel) -> Result<EmuKernel, BackendError> {
        let mut v = self.compile_many(&[kernel])?;
        v.pop().ok_or_else(|| device_error("nothing compiled"))
    }

    fn cache_identity(&self) -> String {
        format!("cuda-emu g++ -O1 header {}", HEADER.len())
    }

    // Buffers are the CPU backend's host buffers, and each launch returns when it is done.
    fn alloc(&self, dtype: DType, numel: usize) -> Result<Buffer, BackendError> {
        self.cpu.alloc(dtype, numel)
    }

    fn upload(&self, data: &HostData) -> Result<Buffer, BackendError> {
        self.cpu.upload(data)
    }

    fn download(&self, buf: &Buffer) -> Result<HostData, BackendError> {
        self.cpu.download(buf)
    }

    fn fill(&self, buf: &mut Buffer, value: Scalar) -> Result<(), BackendError> {
        self.cpu.fill(buf, value)
    }

    fn synchronize(&self) -> Result<(), BackendError> {
        self.cpu.synchronize()
    }

    /// The entry points' name prefix, then the executable's bytes.
    fn artifact(&self, compiled: &EmuKernel) -> Vec<u8> {
        let mut v = vec![compiled.prefix.len() as u8];
        v.extend(compiled.prefix.as_bytes());
        v.extend(std::fs::read(compiled.exe.as_path()).unwrap_or_default());
        v
    }

    unsafe fn load(&self, kernel: &Kernel, bytes: &[u8]) -> Result<EmuKernel, BackendError> {
        let bad = || device_error("a malformed artifact");
        let (&len, rest) = bytes.split_first().ok_or_else(bad)?;
        if rest.len() <= len as usize {
            return Err(bad());
        }
        let (prefix, exe) = rest.split_at(len as usize);
        let prefix = std::str::from_utf8(prefix).map_err(|_| bad())?;
        let rendered = render::render_named(kernel, Dialect::Cuda, prefix)?;
        let path = self.dir.join(format!("loaded{}", self.next_id()));
        write_executable(&path, exe)?;
        Ok(EmuKernel {
            exe: Arc::new(path),
            rendered,
            prefix: prefix.to_string(),
            params: kernel.bufs.clone(),
            n_sizes: kernel.n_sizes,
        })
    }

    unsafe fn launch(
        &self,
        compiled: &EmuKernel,
        kernel: &Kernel,
        bufs: &[&Buffer],
        sizes: &[i64],
    ) -> Result<(), BackendError> {
        check::launch_args(
            NAME,
            &compiled.params,
            compiled.n_sizes,
            kernel,
            bufs,
            sizes,
        )?;
        let sizes = &sizes[..compiled.n_sizes];
        if compiled.rendered.split_plan(sizes, None).is_some() {
            return self.run_split(compiled, bufs, sizes, None);
        }
        let l = compiled.rendered.launch(sizes);
        let name = &compiled
            .rendered
            .entries
            .get(l.entry)
            .ok_or_else(|| device_error(format!("no entry point {}", l.entry)))?
            .name;
        self.run(compiled, bufs, sizes, 0, &[(name, l, false)])
    }

    /// The CPU backend's GEMM (contractions are not what this backend tests).
    fn contraction(
        &self,
        layout: &GemmLayout,
        dtype: DType,
        dst: &mut Buffer,
        lhs: &Buffer,
        rhs: &Buffer,
    ) -> Result<(), BackendError> {
        self.cpu.contraction(layout, dtype, dst, lhs, rhs)
    }
}

fn write_executable(path: &Path, bytes: &[u8]) -> Result<(), BackendError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, bytes).map_err(|e| device_error(format!("{}: {e}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| device_error(format!("{}: {e}", path.display())))
}

/// The test body runs every entry point, and for a full reduction with a split form also the
/// split launches with [`FORCED_SPLIT_PARTS`] partials (an extra entry after the others).
impl crate::suite::Device for CudaEmu {
    fn compile_all(&self, kernels: &[&Kernel]) -> Result<Vec<EmuKernel>, BackendError> {
        self.compile_many(kernels)
    }

    fn entries(&self, c: &EmuKernel) -> usize {
        c.rendered.entries.len() + usize::from(!c.rendered.split_entries.is_empty())
    }

    fn entry_name(&self, c: &EmuKernel, entry: usize) -> String {
        match c.rendered.entries.get(entry) {
            Some(e) => e.name.clone(),
            None => format!("split x{FORCED_SPLIT_PARTS}"),
        }
    }

    unsafe fn launch_at(
        &self,
        c: &EmuKernel,
        k: &Kernel,
        entry: usize,
        bufs: &[&Buffer],
        sizes: &[i64],
    ) -> Result<(), BackendError> {
        // SAFETY: passed on from the caller.
        unsafe { self.launch_entry(c, k, entry, bufs, sizes) }
    }
}

/// Starts an executable with piped stdio, retrying while it is busy (a file just written can
/// be held open for a moment by a child another thread forked meanwhile).
fn spawn(exe: &Path) -> Result<std::process::Child, BackendError> {
    let mut tries = 0;
    loop {
        match Command::new(exe)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => return Ok(c),
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(device_error(format!("{}: {e}", exe.display()))),
        }
    }
}

/// Removes the directories of earlier test processes that have exited (the backend lives in
/// a static, which is never dropped).
fn remove_stale_dirs() {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("metajit-cuda-emu-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
