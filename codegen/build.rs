//! Fingerprints the code generator for the compiled-kernel cache: a hash of the CPU backend's
//! sources, of the kernel IR's definition (`metaops/src/kernel.rs`) and of the Cranelift
//! versions in `Cargo.lock`, so that any change to how code is generated changes every cache
//! key (`cpu::jit::target_description`) — a stale entry can never be loaded after an edit that
//! forgot to bump `CODEGEN_VERSION`.

use std::hash::{Hash, Hasher};
use std::path::Path;

fn main() {
    // Read when the build script runs, not baked in when it was compiled: a target directory
    // copied to another checkout must fingerprint that checkout's sources.
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf(),
        std::path::PathBuf::from,
    );
    let dir = dir.as_path();
    // FNV-1a; any deterministic hash does (a different value only invalidates the cache).
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    let src = dir.join("src").join("cpu");
    println!("cargo:rerun-if-changed={}", src.display());
    let mut files: Vec<_> = std::fs::read_dir(&src)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for f in files {
        if f.extension().is_some_and(|e| e == "rs") {
            println!("cargo:rerun-if-changed={}", f.display());
            f.file_name().hash(&mut h);
            std::fs::read(&f).unwrap_or_default().hash(&mut h);
        }
    }
    // The kernel IR the lowering reads (its instructions' operands and semantics), when built
    // inside the workspace.
    let ir = dir.join("..").join("metaops").join("src").join("kernel.rs");
    println!("cargo:rerun-if-changed={}", ir.display());
    std::fs::read(&ir).unwrap_or_default().hash(&mut h);
    // The exact Cranelift versions, when built inside the workspace.
    let lock = dir.join("..").join("Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    if let Ok(text) = std::fs::read_to_string(&lock) {
        let mut lines = text.lines();
        while let Some(l) = lines.next() {
            if l.starts_with("name = \"cranelift-") || l == "name = \"regalloc2\"" {
                l.hash(&mut h);
                lines.next().unwrap_or_default().hash(&mut h);
            }
        }
    }
    println!("cargo:rustc-env=METAJIT_CODEGEN_FINGERPRINT={:016x}", h.0);
}

struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ *b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}
