//! Host buffers for the CPU backends, from a caching allocator.
//!
//! A fresh 64 MiB buffer costs ~16k page faults (~15 ms on the development machine) — more than
//! the kernel that fills it — so freed buffers go back to a pool and the next buffer of the same
//! size class reuses them. Guarantees:
//! - every buffer is 64-byte aligned (cache lines, AVX-512) and holds at least one element, so
//!   a kernel may always read element 0 (kernel.rs contract for masked reads);
//! - buffers of 2 MiB and more are anonymous mappings advised as transparent huge pages;
//! - the bytes of a buffer are always initialised: fresh memory is zeroed, reused memory holds
//!   what a previous owner wrote (so reading a buffer before writing it is never undefined
//!   behaviour, only meaningless);
//! - the pool keeps at most [`POOL_LIMIT_BYTES`] of free memory; beyond that, freed buffers
//!   go back to the system.

use std::alloc::Layout;
use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use half::{bf16, f16};
use memmap2::MmapMut;
use metajit_metaops::{DType, HostData, Scalar};

/// Alignment of every buffer, in bytes.
pub const ALIGN: usize = 64;
/// Buffers this large or larger are huge-page-advised mappings.
pub const MMAP_THRESHOLD: usize = 2 << 20;
/// The most free memory the pool keeps.
pub const POOL_LIMIT_BYTES: usize = 2 << 30;

enum Block {
    Heap { ptr: NonNull<u8>, layout: Layout },
    Map(MmapMut),
}

// SAFETY: a Block owns its memory exclusively; nothing else holds its pointer.
unsafe impl Send for Block {}

impl Block {
    fn ptr(&mut self) -> *mut u8 {
        match self {
            Block::Heap { ptr, .. } => ptr.as_ptr(),
            Block::Map(m) => m.as_mut_ptr(),
        }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        if let Block::Heap { ptr, layout } = self {
            // SAFETY: allocated by `alloc_zeroed` with this layout, freed once (here).
            unsafe { std::alloc::dealloc(ptr.as_ptr(), *layout) }
        }
    }
}

struct Pool {
    free: HashMap<usize, Vec<Block>>,
    bytes: usize,
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);
static FRESH: AtomicU64 = AtomicU64::new(0);
static REUSED: AtomicU64 = AtomicU64::new(0);

/// Allocation statistics: `(fresh allocations, reuses from the pool)`.
pub fn alloc_stats() -> (u64, u64) {
    (
        FRESH.load(Ordering::Relaxed),
        REUSED.load(Ordering::Relaxed),
    )
}

/// The size class of a request: 64-byte granules below 64 KiB, 4 KiB pages above.
fn size_class(bytes: usize) -> usize {
    let b = bytes.max(ALIGN);
    if b < 64 << 10 {
        b.div_ceil(ALIGN) * ALIGN
    } else {
        b.div_ceil(4096) * 4096
    }
}

fn take_block(class: usize) -> Block {
    {
        let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = pool.as_mut()
            && let Some(b) = p.free.get_mut(&class).and_then(|v| v.pop())
        {
            p.bytes -= class;
            REUSED.fetch_add(1, Ordering::Relaxed);
            return b;
        }
    }
    FRESH.fetch_add(1, Ordering::Relaxed);
    if class >= MMAP_THRESHOLD
        && let Ok(m) = MmapMut::map_anon(class)
    {
        #[cfg(target_os = "linux")]
        let _ = m.advise(memmap2::Advice::HugePage);
        return Block::Map(m);
    }
    let layout = Layout::from_size_align(class, ALIGN).expect("size class fits a layout");
    // SAFETY: the layout has a nonzero size (class >= ALIGN).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    match NonNull::new(ptr) {
        Some(ptr) => Block::Heap { ptr, layout },
        None => std::alloc::handle_alloc_error(layout),
    }
}

fn give_back(class: usize, block: Block) {
    let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
    let p = pool.get_or_insert_with(|| Pool {
        free: HashMap::new(),
        bytes: 0,
    });
    if p.bytes + class <= POOL_LIMIT_BYTES {
        p.bytes += class;
        p.free.entry(class).or_default().push(block);
    }
    // else: dropped here, back to the system.
}

/// Frees every pooled buffer (for tests and memory-constrained callers).
pub fn trim_pool() {
    let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
    *pool = None;
}

/// A dense row-major array of one dtype in host memory.
pub struct Buffer {
    block: Option<Block>,
    ptr: *mut u8,
    class: usize,
    dtype: DType,
    numel: usize,
}

// SAFETY: the buffer owns its memory; shared access is read-only through `&Buffer`, writes go
// through `&mut Buffer` or through kernels that the executor runs only on buffers nobody else
// reads at the same time.
unsafe impl Send for Buffer {}
// SAFETY: as above.
unsafe impl Sync for Buffer {}

impl Buffer {
    /// A buffer for `numel` elements of `dtype` (at least one element is allocated).
    pub fn new(dtype: DType, numel: usize) -> Buffer {
        let class = size_class(numel.max(1) * dtype.size_in_bytes());
        let mut block = take_block(class);
        let ptr = block.ptr();
        Buffer {
            block: Some(block),
            ptr,
            class,
            dtype,
            numel,
        }
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.numel
    }

    /// The number of bytes of the elements.
    pub fn bytes(&self) -> usize {
        self.numel * self.dtype.size_in_bytes()
    }

    /// The start of the elements.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    /// The start of the elements, for writing (kernels take `*mut`; see the Sync note).
    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// The elements as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `class >= bytes()` initialised bytes (see module doc).
        unsafe { std::slice::from_raw_parts(self.ptr, self.bytes()) }
    }

    fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_bytes`, and `&mut self` gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.bytes()) }
    }

    /// A buffer holding a copy of host data.
    pub fn from_host(data: &HostData) -> Buffer {
        let mut b = Buffer::new(data.dtype(), data.len());
        write_le_bytes(data, b.as_bytes_mut());
        b
    }

    /// A copy of the elements as host data. Bool bytes other than 0 read as true.
    pub fn to_host(&self) -> HostData {
        host_from_le_bytes(self.dtype, self.as_bytes())
    }

    /// Sets every element (and the spare first element of an empty buffer) to `value`.
    pub fn fill(&mut self, value: Scalar) {
        let bits = value.cast(self.dtype).to_bits();
        let n = self.numel.max(1);
        // Typed stores of the element's bits (in native order, as kernels read them): a memset.
        // SAFETY: the allocation holds at least max(numel, 1) elements and is 64-byte aligned
        // (aligned for every element type); `&mut self` gives exclusive access.
        unsafe {
            match self.dtype.size_in_bytes() {
                1 => std::slice::from_raw_parts_mut(self.ptr, n).fill(bits as u8),
                2 => std::slice::from_raw_parts_mut(self.ptr.cast::<u16>(), n).fill(bits as u16),
                4 => std::slice::from_raw_parts_mut(self.ptr.cast::<u32>(), n).fill(bits as u32),
                _ => std::slice::from_raw_parts_mut(self.ptr.cast::<u64>(), n).fill(bits),
            }
        }
    }

    /// Element `i` as a scalar (`i` may be 0 for an empty buffer: its spare element).
    ///
    /// # Panics
    /// When `i` is beyond the buffer.
    pub fn get(&self, i: usize) -> Scalar {
        let size = self.dtype.size_in_bytes();
        assert!(
            i < self.numel.max(1),
            "element {i} of a buffer of {}",
            self.numel
        );
        let mut b = [0u8; 8];
        // SAFETY: the allocation holds max(numel, 1) initialised elements and i is below that.
        let src = unsafe { std::slice::from_raw_parts(self.ptr.add(i * size), size) };
        b[..size].copy_from_slice(src);
        Scalar::from_bits(u64::from_le_bytes(b), self.dtype)
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some(b) = self.block.take() {
            give_back(self.class, b);
        }
    }
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Buffer[{}; {}]", self.dtype, self.numel)
    }
}

/// Writes the elements of `data` into `dst` as the backends' buffers hold them: little-endian,
/// bools as one byte 0 or 1 (`dst` is exactly `data.len()` elements long).
pub(crate) fn write_le_bytes(data: &HostData, dst: &mut [u8]) {
    macro_rules! copy {
        ($v:expr, $t:ty, $to:expr) => {
            for (c, x) in dst.chunks_exact_mut(std::mem::size_of::<$t>()).zip($v) {
                c.copy_from_slice(&$to(*x));
            }
        };
    }
    match data {
        HostData::Bool(v) => copy!(v, u8, |x: bool| [x as u8]),
        HostData::U8(v) => dst.copy_from_slice(v),
        HostData::I32(v) => copy!(v, i32, i32::to_le_bytes),
        HostData::I64(v) => copy!(v, i64, i64::to_le_bytes),
        HostData::F16(v) => copy!(v, f16, f16::to_le_bytes),
        HostData::BF16(v) => copy!(v, bf16, bf16::to_le_bytes),
        HostData::F32(v) => copy!(v, f32, f32::to_le_bytes),
        HostData::F64(v) => copy!(v, f64, f64::to_le_bytes),
    }
}

/// The elements of `data` as [`write_le_bytes`] writes them, in a new vector.
pub(crate) fn le_bytes(data: &HostData) -> Vec<u8> {
    let mut v = vec![0u8; data.len() * data.dtype().size_in_bytes()];
    write_le_bytes(data, &mut v);
    v
}

/// The inverse of [`write_le_bytes`]: host data of `dtype` from `src`, which holds whole
/// elements. Bool bytes other than 0 read as true.
pub(crate) fn host_from_le_bytes(dtype: DType, src: &[u8]) -> HostData {
    macro_rules! read {
        ($t:ty, $from:expr) => {
            src.chunks_exact(std::mem::size_of::<$t>())
                .map(|c| $from(c.try_into().expect("chunk of the element size")))
                .collect()
        };
    }
    match dtype {
        DType::Bool => HostData::Bool(src.iter().map(|&b| b != 0).collect()),
        DType::U8 => HostData::U8(src.to_vec()),
        DType::I32 => HostData::I32(read!(i32, i32::from_le_bytes)),
        DType::I64 => HostData::I64(read!(i64, i64::from_le_bytes)),
        DType::F16 => HostData::F16(read!(f16, f16::from_le_bytes)),
        DType::BF16 => HostData::BF16(read!(bf16, bf16::from_le_bytes)),
        DType::F32 => HostData::F32(read!(f32, f32::from_le_bytes)),
        DType::F64 => HostData::F64(read!(f64, f64::from_le_bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The GPU backends' upload and download bytes round-trip, and agree with a host buffer's.
    #[test]
    fn le_bytes_round_trip() {
        for data in [
            HostData::from_vec(vec![1.5f32, -2.0, f32::INFINITY]),
            HostData::from_vec(vec![3i64, -4]),
            HostData::Bool(vec![true, false, true]),
            HostData::from_vec(vec![half::bf16::from_f32(0.5)]),
        ] {
            let bytes = le_bytes(&data);
            assert_eq!(bytes, Buffer::from_host(&data).as_bytes());
            assert_eq!(host_from_le_bytes(data.dtype(), &bytes), data);
        }
    }

    #[test]
    fn round_trips_every_dtype() {
        for d in DType::ALL {
            let h = HostData::from_scalars(d, (0..37).map(|i| Scalar::F64(i as f64 * 0.5 - 3.0)));
            let b = Buffer::from_host(&h);
            assert_eq!(b.as_ptr() as usize % ALIGN, 0);
            assert_eq!(b.to_host(), h, "{d}");
            assert_eq!(b.get(5), h.get(5));
        }
    }

    #[test]
    fn freed_buffers_are_reused() {
        drop(Buffer::new(DType::F32, 12345));
        let (_, reused_before) = alloc_stats();
        let _b = Buffer::new(DType::F32, 12345);
        let (_, reused_after) = alloc_stats();
        assert!(reused_after > reused_before);
    }

    #[test]
    fn empty_buffers_have_one_element_and_fill() {
        let mut b = Buffer::new(DType::I64, 0);
        b.fill(Scalar::I64(7));
        assert_eq!(b.numel(), 0);
        // SAFETY: one spare element is always allocated.
        let v = unsafe { *(b.as_ptr() as *const i64) };
        assert_eq!(v, 7);
        let big = Buffer::new(DType::F32, 1 << 20);
        assert_eq!(big.as_ptr() as usize % ALIGN, 0);
        assert_eq!(big.get(1000), Scalar::F32(0.0));
    }
}
