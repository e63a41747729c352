//! The executor: turns the pending part of the unified graph into a meta-op [`Graph`],
//! simplifies and schedules it into kernels (reusing the plan of a structurally equal graph),
//! gets each kernel from the compiled-kernel cache (`metajit_cache`: memory tier, then disk
//! tier, then the backend's compiler), runs the steps, and stores the results back into the
//! tensors.
//!
//! Two fast paths skip the hashing for a graph seen before, and fall back to the path above
//! for anything else: a graph equal to one realized recently (every node, constant and
//! extent) reuses its simplified form and plan ([`Engine::run_remembered`]); in eager mode, an
//! op whose signature ran before over computed inputs runs its remembered one-op plan without
//! building a graph ([`eager_known`], [`crate::dispatch`]). Both use a plan only while the
//! plan cache holds it, so the plan cache's bound and counters mean what they say.
//!
//! Which nodes are computed: exactly the requested tensors. Intermediates are fused away; an
//! intermediate the user holds and later reads is computed then (call `realize_all` with it, or
//! `realize()` it first, to compute it once).
//!
//! Debug output (`METAJIT_DEBUG`): 1 a line per kernel run (with where its code came from:
//! compiled, disk hit, memory hit) and the cache counters at exit; 2 the schedule of each realize;
//! 3 the graph before and after simplification and each kernel's IR; 4 the pass trace.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use metajit_cache::{Cache, Key, KeyBuilder, Source, StatsSnapshot};
use metajit_codegen::buffer::Buffer;
use metajit_codegen::{Backend, reference};
use metajit_metaops::kernel::Kernel;
use metajit_metaops::passes::{self, PassCx, PassTrace};
use metajit_metaops::schedule::{self, BufRef, PlanKey, Schedule, Step};
use metajit_metaops::{Graph, Node, NodeId, Op};

use crate::config::{self, Device};
use crate::device::Storage;
use crate::error::{Error, Result};
use crate::tensor::{NodeRef, State, Tensor};

/// A hasher for unique integer ids (tensor ids): a multiplicative mix, no SipHash.
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ *b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type IdMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<IdHasher>>;

/// The pending part of the unified graph below some targets, as a meta-op graph.
struct Pending {
    /// The nodes in graph order (inputs before users).
    order: Vec<NodeRef>,
    /// The meta-op graph: realized nodes are inputs; the outputs are the pending targets.
    graph: Graph,
    /// The elements of each input slot.
    buffers: Vec<Storage>,
    /// The position in `order` of each output.
    outputs: Vec<usize>,
}

/// Collects the pending nodes reachable from `targets` into a graph.
///
/// One depth-first walk, locking each node once: a node's state is read when it is first
/// visited (its op and input ids, or its buffer), and its graph node is written when it is
/// finished, after its inputs (so the graph is in post-order, inputs before users).
fn collect(targets: &[NodeRef]) -> Pending {
    /// What a visit read of a node.
    enum Seen {
        Realized(Storage),
        Lazy(Op, Vec<u64>),
    }
    let mut order: Vec<NodeRef> = Vec::new();
    let mut index: IdMap<usize> = IdMap::default();
    let mut graph = Graph::new();
    let mut buffers: Vec<Storage> = Vec::new();
    let mut pending: Vec<usize> = Vec::new();
    // `None`: to visit; `Some`: visited, to finish once the entries above it are.
    let mut stack: Vec<(NodeRef, Option<Seen>)> =
        targets.iter().map(|t| (t.clone(), None)).collect();
    while let Some((t, seen)) = stack.pop() {
        if index.contains_key(&t.id) {
            continue;
        }
        let Some(seen) = seen else {
            let at = stack.len();
            let seen = match &*t.lock() {
                State::Realized(d) => Seen::Realized(d.clone()),
                State::Lazy { op, inputs } => {
                    for i in inputs.iter().rev() {
                        if !index.contains_key(&i.id) {
                            stack.push((i.clone(), None));
                        }
                    }
                    Seen::Lazy(op.clone(), inputs.iter().map(|i| i.id).collect())
                }
            };
            stack.insert(at, (t, Some(seen)));
            continue;
        };
        let k = order.len();
        index.insert(t.id, k);
        let node = match seen {
            Seen::Realized(d) => {
                buffers.push(d);
                Node {
                    op: Op::Input {
                        slot: buffers.len() - 1,
                    },
                    inputs: vec![],
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                }
            }
            Seen::Lazy(op, ids) => {
                pending.push(k);
                Node {
                    op,
                    inputs: ids.iter().map(|id| NodeId(index[id] as u32)).collect(),
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                }
            }
        };
        graph.push_unchecked(node);
        order.push(t);
    }

    // Outputs: exactly the targets. (A value the user still holds elsewhere is recomputed
    //    if it is needed later: in Rust, temporaries of a chained expression stay alive until
    //    the end of the statement, so holding cannot tell a kept variable from a temporary,
    //    and materialising every temporary would defeat fusion. `realize_all` computes several
    //    values in one graph.)
    let target_ids: Vec<u64> = targets.iter().map(|t| t.id).collect();
    let outputs: Vec<usize> = pending
        .iter()
        .copied()
        .filter(|&k| target_ids.contains(&order[k].id))
        .collect();
    graph.outputs = outputs.iter().map(|&k| NodeId(k as u32)).collect();
    Pending {
        order,
        graph,
        buffers,
        outputs,
    }
}

/// Realizes the nodes `targets` together: one graph per device among them.
pub(crate) fn realize(targets: &[NodeRef]) -> Result<()> {
    // A bad setting is this call's error (config's infallible readers gave defaults meanwhile).
    config::try_executor_settings()?;
    let default = crate::device::default_placement();
    let device_of = |t: &NodeRef| t.device.unwrap_or(default);
    let first = match targets.first() {
        Some(t) => device_of(t),
        None => return Ok(()),
    };
    if targets.iter().any(|t| device_of(t) != first) {
        let mut devices: Vec<Device> = Vec::new();
        for t in targets {
            if !devices.contains(&device_of(t)) {
                devices.push(device_of(t));
            }
        }
        for d in devices {
            let group: Vec<NodeRef> = targets
                .iter()
                .filter(|t| device_of(t) == d)
                .cloned()
                .collect();
            realize_on(&group, d)?;
        }
        return Ok(());
    }
    realize_on(targets, first)
}

/// Realizes `targets`, all on `device`, as one graph.
fn realize_on(targets: &[NodeRef], device: Device) -> Result<()> {
    let mut p = collect(targets);
    if p.outputs.is_empty() {
        return Ok(());
    }
    if device.placement() != Device::Cpu {
        // Inputs elsewhere are copied to the device first; a device tensor's staged host
        // data keeps its copy (it is copied once).
        for k in 0..p.graph.nodes.len() {
            let Op::Input { slot } = p.graph.nodes[k].op else {
                continue;
            };
            let s = &p.buffers[slot];
            if matches!(s, Storage::Device { device: d, .. } if *d == device) {
                continue;
            }
            let placed = to_device(s, device)?;
            if s.device() == device {
                *p.order[k].lock() = State::Realized(placed.clone());
            }
            p.buffers[slot] = placed;
        }
    }
    let results = run_graph(&p.graph, &p.buffers, device)?;
    // Each output becomes a buffer, dropping its references to its inputs.
    for (&k, data) in p.outputs.iter().zip(results) {
        *p.order[k].lock() = State::Realized(data);
    }
    Ok(())
}

/// Moves a realized node's elements held in host memory for another device onto that device
/// (what [`crate::Tensor::to`] calls, so that a failure to reach the device is its error).
pub(crate) fn place(node: &NodeRef) -> Result<()> {
    let storage = match &*node.lock() {
        State::Realized(s) => s.clone(),
        State::Lazy { .. } => return Ok(()),
    };
    let device = storage.device();
    let placed = to_device(&storage, device)?;
    *node.lock() = State::Realized(placed);
    Ok(())
}

/// The elements of `storage` on `device`, copied there when they are elsewhere.
fn to_device(storage: &Storage, device: Device) -> Result<Storage> {
    let device = device.placement();
    if device == Device::Cpu {
        return Ok(match storage.host_buffer() {
            Some(buf) => Storage::cpu(buf.clone()),
            None => Storage::cpu(Arc::new(Buffer::from_host(&storage.to_host()?))),
        });
    }
    if let Storage::Device { device: d, .. } = storage
        && *d == device
    {
        return Ok(storage.clone());
    }
    let host = match storage.host_buffer() {
        Some(buf) => buf.to_host(),
        None => storage.to_host()?,
    };
    Ok(Storage::Device {
        buf: device_engine(device)?.upload(&host)?,
        device,
    })
}

/// A device buffer with its type erased ([`Storage::Device`]).
type AnyBuffer = Arc<dyn std::any::Any + Send + Sync>;

/// An engine of a device other than the CPU, with its backend's buffer type erased, so that
/// the executor keeps one per device in one table.
pub(crate) trait DeviceEngine: Send + Sync {
    /// A device buffer holding `data`.
    fn upload(&self, data: &metajit_metaops::HostData) -> Result<AnyBuffer>;
    /// A host copy of a device buffer of this engine.
    fn download(
        &self,
        buf: &(dyn std::any::Any + Send + Sync),
    ) -> Result<metajit_metaops::HostData>;
    /// Simplifies, plans and runs `g` over input buffers of this engine. The work is enqueued;
    /// the device is waited for only when the work in flight passes [`MAX_REALIZES_IN_FLIGHT`]
    /// or [`MAX_BYTES_IN_FLIGHT`] (then a failure of earlier work is this call's error).
    fn run(
        &self,
        g: &Graph,
        inputs: &[AnyBuffer],
        debug: u8,
        cx: &PassCx<'_>,
    ) -> Result<Vec<AnyBuffer>>;
    /// The engine's kernel-cache counters.
    fn stats(&self) -> StatsSnapshot;
    /// Waits until the device has finished everything enqueued so far; a failure of that work
    /// (an asynchronous launch error) is the error, naming the device.
    fn synchronize(&self) -> Result<()>;
}

/// The error for a buffer of another backend handed to an engine: a metajit bug.
fn foreign_buffer(backend: &str) -> Error {
    Error::Device {
        device: backend.to_string(),
        reason: "metajit bug: a buffer of another backend reached this device's engine".into(),
    }
}

/// How many realizes a device engine lets run ahead of the device before it waits for them.
///
/// Launches are asynchronous: a realize returns once its work is enqueued, so that a loop of
/// eager ops on a GPU does not pay a round trip to the device per op. Without a bound a loop
/// of realizes enqueues work, and holds the buffers it reads, faster than the device runs it
/// (pocl grew to 24 GB that way: OpenCL frees a released buffer only once the commands using
/// it have finished). A count bounds the queue (and how late a failure is reported); the byte
/// budget [`MAX_BYTES_IN_FLIGHT`] bounds the memory, whatever the size of each realize.
pub(crate) const MAX_REALIZES_IN_FLIGHT: u64 = 64;

/// How many bytes of buffers the realizes in flight on a device may have allocated before the
/// engine waits for the device ([`MAX_REALIZES_IN_FLIGHT`]): 256 MiB.
pub(crate) const MAX_BYTES_IN_FLIGHT: u64 = 256 << 20;

/// A device's engine, the device it belongs to, and the work in flight on it (enqueued since
/// the device last finished everything).
struct OnDevice<B: Backend> {
    device: Device,
    engine: Engine<B>,
    /// Realizes enqueued since the last synchronization.
    in_flight: AtomicU64,
    /// [`Engine::allocated`] at the last synchronization.
    allocated_at_sync: AtomicU64,
}

impl<B: Backend> OnDevice<B> {
    fn new(device: Device, backend: B) -> Self {
        OnDevice {
            device,
            engine: Engine::new(backend),
            in_flight: AtomicU64::new(0),
            allocated_at_sync: AtomicU64::new(0),
        }
    }

    /// Whether work was enqueued since the last synchronization.
    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }
}

impl<B: Backend> DeviceEngine for OnDevice<B> {
    fn upload(&self, data: &metajit_metaops::HostData) -> Result<AnyBuffer> {
        Ok(Arc::new(self.engine.backend.upload(data)?))
    }

    fn download(
        &self,
        buf: &(dyn std::any::Any + Send + Sync),
    ) -> Result<metajit_metaops::HostData> {
        let buf = buf
            .downcast_ref::<B::Buffer>()
            .ok_or_else(|| foreign_buffer(self.engine.backend.name()))?;
        // Both backends' downloads wait for every earlier call (an in-order queue or stream);
        // synchronizing first reports a failed launch as such, naming the device, instead of
        // as a failed copy (or, where a driver does not fail the copy, not at all).
        if self.busy() {
            self.synchronize()?;
        }
        Ok(self.engine.backend.download(buf)?)
    }

    fn run(
        &self,
        g: &Graph,
        inputs: &[AnyBuffer],
        debug: u8,
        cx: &PassCx<'_>,
    ) -> Result<Vec<AnyBuffer>> {
        let bufs = inputs
            .iter()
            .map(|b| {
                b.clone()
                    .downcast::<B::Buffer>()
                    .map_err(|_| foreign_buffer(self.engine.backend.name()))
            })
            .collect::<Result<Vec<_>>>()?;
        let out = self.engine.run_remembered(g, &bufs, debug, cx)?;
        let realizes = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        let bytes = self
            .engine
            .allocated
            .load(Ordering::Relaxed)
            .saturating_sub(self.allocated_at_sync.load(Ordering::Relaxed));
        if realizes >= MAX_REALIZES_IN_FLIGHT || bytes >= MAX_BYTES_IN_FLIGHT {
            self.synchronize()?;
        }
        Ok(out.into_iter().map(|b| b as AnyBuffer).collect())
    }

    fn stats(&self) -> StatsSnapshot {
        self.engine.cache_stats()
    }

    fn synchronize(&self) -> Result<()> {
        // Reset first: after a failure the queue is drained (or broken), so nothing counts as
        // in flight any more either way.
        self.in_flight.store(0, Ordering::Relaxed);
        self.allocated_at_sync.store(
            self.engine.allocated.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        self.engine
            .backend
            .synchronize()
            .map_err(|e| Error::Device {
                device: self.device.to_string(),
                reason: format!(
                    "work enqueued on the device failed (launches are asynchronous: this may \
                     be an earlier realize's): {e}"
                ),
            })
    }
}

/// Waits until every device opened so far (CUDA, OpenCL) has finished the work enqueued on it.
///
/// A realize on a device returns once its work is enqueued (the device is waited for every
/// 64 realizes, or every 256 MiB they allocate); reading a value ([`Tensor::to_vec`],
/// [`Tensor::item`]) waits for it anyway. Call this to time device work, or to have a failure
/// of work in flight reported here. The CPU runs every realize to completion, so with no device
/// open this returns at once.
///
/// ```
/// metajit::synchronize().unwrap();
/// ```
///
/// # Errors
/// The first device whose enqueued work failed ([`Error::Device`], naming it).
pub fn synchronize() -> Result<()> {
    let engines: Vec<&'static dyn DeviceEngine> = DEVICE_ENGINES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(_, e)| *e)
        .collect();
    let mut first = Ok(());
    for e in engines {
        let r = e.synchronize();
        if first.is_ok() {
            first = r;
        }
    }
    first
}

/// The engines of the devices opened so far (never closed: a device's compiled kernels and
/// plans live as long as the process).
static DEVICE_ENGINES: Mutex<Vec<(Device, &'static dyn DeviceEngine)>> = Mutex::new(Vec::new());

/// Opens the backend of `device` (CUDA or OpenCL) as an engine, with the current debug level
/// (4 prints each kernel's source when compiled, 5 also the PTX or build log).
fn open_device(device: Device) -> Result<&'static dyn DeviceEngine> {
    use metajit_codegen::gpu::{cuda::Cuda, opencl::OpenCl};
    let debug = config::try_debug()?;
    let failed = |e: metajit_codegen::BackendError| Error::Device {
        device: device.to_string(),
        reason: e.to_string(),
    };
    let engine: Box<dyn DeviceEngine> = match device {
        Device::OpenCl(n) => {
            let b = OpenCl::open(n).map_err(failed)?;
            b.set_debug(debug);
            Box::new(OnDevice::new(device, b))
        }
        Device::Cuda(n) => {
            let b = Cuda::open(n).map_err(failed)?;
            b.set_debug(debug);
            Box::new(OnDevice::new(device, b))
        }
        Device::Cpu | Device::Auto | Device::Reference => {
            return Err(Error::Device {
                device: device.to_string(),
                reason: "metajit bug: the CPU has no device engine".into(),
            });
        }
    };
    if debug >= 1 {
        at_exit_print_cache_stats();
    }
    // Engines live as long as the process (their kernels and plans are reused by every later
    // graph on the device); one per device ever opened.
    Ok(Box::leak(engine))
}

/// The engine of `device` (CUDA or OpenCL), opened on first use. A device that fails to open
/// is an error each time it is asked for (nothing is remembered, so a later call may succeed).
pub(crate) fn device_engine(device: Device) -> Result<&'static dyn DeviceEngine> {
    let mut engines = DEVICE_ENGINES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, e)) = engines.iter().find(|(d, _)| *d == device) {
        return Ok(*e);
    }
    let engine = open_device(device)?;
    engines.push((device, engine));
    Ok(engine)
}

/// The graph of `auto`'s self-check ([`self_check`]), one op of each way a GPU runs a
/// kernel: an element-wise op with a transcendental (the flat entry), a row reduction over it
/// (a work-group per row), a matmul (a contraction: cuBLAS on CUDA), a sum of 40,960 values (a
/// split full reduction: 10 groups' partials, then their combine) and a maximum over each of
/// 2,560 columns (a thread per column).
const SELF_CHECK_GRAPH: &str = "\
%0 = input #0 : f32[64, 48]
%1 = input #1 : f32[48, 32]
%2 = exp %0 : f32[64, 48]
%3 = mul %0, %0 : f32[64, 48]
%4 = add %2, %3 : f32[64, 48]
%5 = reduce sum %4 axes=[1] : f32[64]
%6 = broadcast %0 axes=[2] : f32[64, 48, 32]
%7 = broadcast %1 axes=[0] : f32[64, 48, 32]
%8 = mul %6, %7 : f32[64, 48, 32]
%9 = reduce sum %8 axes=[1] : f32[64, 32]
%10 = input #2 : f32[16, 2560]
%11 = reduce sum %10 axes=[0, 1] : f32[]
%12 = reduce max %10 axes=[0] : f32[2560]
return %4, %5, %9, %11, %12
";

/// The inputs of [`SELF_CHECK_GRAPH`]: fixed pseudo-random values in [-1, 1).
fn self_check_inputs() -> Vec<metajit_metaops::HostData> {
    let mut rng = metajit_metaops::r#gen::Rng(0x5eed);
    let mut next = move || ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
    let x: Vec<f32> = (0..64 * 48).map(|_| next()).collect();
    let w: Vec<f32> = (0..48 * 32).map(|_| next()).collect();
    let v: Vec<f32> = (0..16 * 2560).map(|_| next()).collect();
    vec![
        metajit_metaops::HostData::F32(x),
        metajit_metaops::HostData::F32(w),
        metajit_metaops::HostData::F32(v),
    ]
}

/// Compares the self-check's outputs from a device (`got`) with the reference interpreter's
/// (`want`) within the GPU precision contract (`metajit_codegen::gpu`): the element-wise
/// output and the row sums (f64 accumulation) to 1e-5 relative (exp is within 4 ulp, 5e-7),
/// the matmul to 1e-4 of the sum of the products' magnitudes (cuBLAS accumulates in f32:
/// 48 terms, under 1e-5), the full sum to 1e-5 of the sum of magnitudes (it may cancel), the
/// column maxima exactly. A garbled, transposed or missing value is far outside each.
/// `Err` says where the first value differs.
fn compare_self_check(
    inputs: &[metajit_metaops::HostData],
    got: &[metajit_metaops::HostData],
    want: &[metajit_metaops::HostData],
) -> std::result::Result<(), String> {
    use metajit_metaops::HostData;
    let (HostData::F32(x), HostData::F32(w), HostData::F32(v)) =
        (&inputs[0], &inputs[1], &inputs[2])
    else {
        return Err("metajit bug: the self-check's inputs are not f32".into());
    };
    let magnitude: f32 = v.iter().map(|e| e.abs()).sum();
    if got.len() != want.len() {
        return Err(format!("{} outputs, expected {}", got.len(), want.len()));
    }
    for (o, (g, r)) in got.iter().zip(want).enumerate() {
        let (HostData::F32(g), HostData::F32(r)) = (g, r) else {
            return Err(format!("output {o} is not f32"));
        };
        if g.len() != r.len() {
            return Err(format!(
                "output {o} has {} elements, expected {}",
                g.len(),
                r.len()
            ));
        }
        for (i, (&gv, &rv)) in g.iter().zip(r).enumerate() {
            let tol = match o {
                2 => {
                    let (row, col) = (i / 32, i % 32);
                    let mag: f32 = (0..48)
                        .map(|k| (x[row * 48 + k] * w[k * 32 + col]).abs())
                        .sum();
                    1e-4 * mag
                }
                3 => 1e-5 * magnitude,
                4 => 0.0,
                _ => 1e-5 * rv.abs(),
            };
            let close = (gv - rv).abs() <= tol;
            if !close || gv.is_nan() {
                return Err(format!(
                    "output {o} element {i}: got {gv:e}, expected {rv:e} (tolerance {tol:e})"
                ));
            }
        }
    }
    Ok(())
}

/// The self-check `METAJIT_DEVICE=auto` runs on `device` before choosing it
/// ([`Device::Auto`]): [`SELF_CHECK_GRAPH`] on the device against the reference interpreter.
/// Opens the device (`device_engine`); reads no device setting, so it may run while `auto`
/// is being resolved.
pub(crate) fn self_check(device: Device) -> crate::device::SelfCheck {
    use crate::device::SelfCheck;
    let g = match metajit_metaops::parse::parse(SELF_CHECK_GRAPH) {
        Ok(g) => g,
        Err(e) => return SelfCheck::Failed(format!("metajit bug: the self-check graph: {e}")),
    };
    let inputs = self_check_inputs();
    let want = match run_graph_with(&g, &inputs, GraphMode::Reference) {
        Ok(v) => v,
        Err(e) => return SelfCheck::Failed(format!("metajit bug: the reference failed: {e}")),
    };
    match run_graph_with(&g, &inputs, GraphMode::Device(device)) {
        // One line: a compile error carries the kernel's IR after its first line.
        Err(e) => SelfCheck::Failed(e.to_string().lines().next().unwrap_or_default().into()),
        Ok(got) => match compare_self_check(&inputs, &got, &want) {
            Ok(()) => SelfCheck::Passed,
            Err(what) => SelfCheck::Wrong(what),
        },
    }
}

/// The compiled kernel type of the CPU backend.
type CpuCompiled = <CpuBackend as Backend>::Compiled;

/// A one-op graph (the op over its distinct inputs, in first-occurrence order, as
/// [`collect`] builds it) and its plan: what eager mode runs again for an op signature it
/// has run before ([`crate::dispatch::OpEntry`]). The plan is held weakly: the plan cache owns
/// it, so its capacity bounds the compiled code kept alive, however many signatures the
/// per-thread memos remember.
pub(crate) struct OneOp {
    graph: Graph,
    plan_hash: u64,
    plan: std::sync::Weak<Plan<CpuCompiled>>,
}

/// Eager mode's fast path: the value of an op whose signature `entry` ran before, over the
/// nodes `inputs`, computed by the one-op graph and plan remembered in `entry` — or `None`
/// when the path does not apply (nothing remembered yet, the plan cache dropped that plan, an
/// input not computed, another device, `METAJIT_DEBUG` of 2 or more); then the caller records
/// the node and calls [`realize_eager`]. When every input is computed, the pending graph of
/// the node is exactly the one-op graph of its signature, so the remembered plan is its plan;
/// no graph is collected or hashed, and the node never holds a pending op.
pub(crate) fn eager_known(
    inputs: &[NodeRef],
    device: Option<Device>,
    entry: &crate::dispatch::OpEntry,
) -> Result<Option<Arc<Buffer>>> {
    let Some(one) = entry.eager.borrow().clone() else {
        return Ok(None);
    };
    config::try_executor_settings()?;
    let debug = config::try_debug()?;
    if debug >= 2 || !on_cpu_engine(device)? {
        return Ok(None);
    }
    let Some(bufs) = computed_inputs(inputs) else {
        return Ok(None);
    };
    let engine = cpu_engine()?;
    let plan = match one.plan.upgrade() {
        Some(plan) if engine.touch(one.plan_hash, &plan) => plan,
        _ => {
            // Evicted from the plan cache: forget it (the slow path remembers the new one).
            *entry.eager.borrow_mut() = None;
            return Ok(None);
        }
    };
    let out = engine.execute(&one.graph, &plan, &bufs, debug)?;
    Ok(out.into_iter().next())
}

/// Runs the fresh node `node`, recorded in eager mode, whose signature is `entry`: as
/// [`realize`] does, remembering in `entry` the one-op graph and plan for [`eager_known`]
/// when every input is computed (on the CPU, `METAJIT_DEBUG` below 2).
pub(crate) fn realize_eager(node: &NodeRef, entry: &crate::dispatch::OpEntry) -> Result<()> {
    config::try_executor_settings()?;
    let debug = config::try_debug()?;
    // (The inputs are locked after the node's lock is released: one lock at a time.)
    let inputs = match &*node.lock() {
        State::Lazy { inputs, .. } => inputs.clone(),
        State::Realized(_) => return Ok(()),
    };
    let one_op = computed_inputs(&inputs).is_some();
    drop(inputs);
    if debug >= 2 || !one_op || !on_cpu_engine(node.device)? {
        return realize(std::slice::from_ref(node));
    }
    let engine = cpu_engine()?;
    let p = collect(std::slice::from_ref(node));
    debug_assert!(
        p.outputs.len() == 1 && p.buffers.len() + 1 == p.graph.nodes.len(),
        "the pending graph of an op over computed inputs is the one-op graph"
    );
    let (plan_hash, plan) = engine.plan(&p.graph, debug)?;
    let bufs: Vec<Arc<Buffer>> = p
        .buffers
        .iter()
        .filter_map(|s| s.host_buffer().cloned())
        .collect();
    let out = engine.execute(&p.graph, &plan, &bufs, debug)?;
    *entry.eager.borrow_mut() = Some(std::rc::Rc::new(OneOp {
        graph: p.graph,
        plan_hash,
        plan: Arc::downgrade(&plan),
    }));
    let data = out
        .into_iter()
        .next()
        .expect("a one-op graph has one output");
    *node.lock() = State::Realized(Storage::cpu(data));
    Ok(())
}

/// Whether an op of device `device` (`None`: floating) runs on the CPU engine, the one the
/// eager fast paths use (not on another device, nor the reference interpreter).
fn on_cpu_engine(device: Option<Device>) -> Result<bool> {
    let setting = config::try_device()?;
    // `Auto` as what it resolved to: the CPU, or CUDA device 0.
    let placed = setting.placement();
    Ok(setting != Device::Reference && placed == Device::Cpu && device.unwrap_or(placed) == placed)
}

/// The buffers of an op's distinct input nodes in first-occurrence order (the input slots of
/// its one-op graph), or `None` when one is not computed, or not a CPU tensor's.
fn computed_inputs(inputs: &[NodeRef]) -> Option<Vec<Arc<Buffer>>> {
    let mut bufs = Vec::with_capacity(inputs.len());
    for (k, i) in inputs.iter().enumerate() {
        if inputs[..k].iter().any(|j| j.id == i.id) {
            continue;
        }
        match &*i.lock() {
            State::Realized(Storage::Host {
                buf,
                device: Device::Cpu,
            }) => bufs.push(buf.clone()),
            State::Realized(_) | State::Lazy { .. } => return None,
        }
    }
    Some(bufs)
}

/// The pending graph that realizing `tensors` together would run, with a copy of each input
/// buffer, computing nothing (for tests and fuzzing: run it with [`run_graph_with`] in every
/// mode). The graph's outputs are the tensors, in order; a tensor already computed is read
/// through a `contiguous` node.
#[doc(hidden)]
pub fn pending_graph(tensors: &[&Tensor]) -> (Graph, Vec<metajit_metaops::HostData>) {
    let nodes: Vec<NodeRef> = tensors.iter().map(|t| t.node()).collect();
    let mut p = collect(&nodes);
    let mut outputs = Vec::with_capacity(nodes.len());
    for n in &nodes {
        let k = p
            .order
            .iter()
            .position(|o| o.id == n.id)
            .expect("every target is collected");
        let id = NodeId(k as u32);
        let node = p.graph.node(id).clone();
        outputs.push(if matches!(node.op, Op::Input { .. }) {
            p.graph.push_unchecked(Node {
                op: Op::Contiguous,
                inputs: vec![id],
                dtype: node.dtype,
                shape: node.shape.clone(),
            })
        } else {
            id
        });
    }
    p.graph.outputs = outputs;
    let data = p
        .buffers
        .iter()
        .map(|b| {
            b.to_host()
                .unwrap_or_else(|e| panic!("pending_graph: reading an input: {e}"))
        })
        .collect();
    (p.graph, data)
}

/// Records a meta-op graph as lazy tensors over `inputs` (one per input slot), node by node
/// through the same path as every Tensor op (so the nodes get autograd records); returns the
/// graph's outputs. For tests and fuzzing: the inverse of [`pending_graph`].
///
/// # Panics
/// When an input's dtype or shape differs from its slot's node, or the graph is invalid.
#[doc(hidden)]
#[track_caller]
pub fn replay_graph(g: &Graph, inputs: &[Tensor]) -> Vec<Tensor> {
    let mut vals: Vec<Tensor> = Vec::with_capacity(g.nodes.len());
    for node in &g.nodes {
        let t = match node.op {
            Op::Input { slot } => {
                let t = &inputs[slot];
                assert!(
                    t.dtype() == node.dtype && t.shape() == &node.shape,
                    "shape mismatch in replay_graph: slot {slot} is {} {}, input {} {}",
                    node.dtype,
                    node.shape,
                    t.dtype(),
                    t.shape()
                );
                t.clone()
            }
            _ => {
                let ins: Vec<&Tensor> = node.inputs.iter().map(|i| &vals[i.index()]).collect();
                Tensor::from_op(node.op.clone(), &ins, node.dtype, node.shape.clone())
            }
        };
        vals.push(t);
    }
    g.outputs.iter().map(|o| vals[o.index()].clone()).collect()
}

/// Whether simplifying `g` can be worth its cost: a graph of one op (eager mode) has nothing
/// to simplify.
fn worth_simplifying(g: &Graph) -> bool {
    g.nodes
        .iter()
        .filter(|n| !matches!(n.op, Op::Input { .. }))
        .nth(1)
        .is_some()
}

/// The hash of a whole graph, every constant and extent included ([`crate::dispatch::FastHasher`]).
fn graph_hash(g: &Graph) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = crate::dispatch::FastHasher::default();
    g.hash(&mut h);
    h.finish()
}

/// Simplifies and runs a graph on `device`, copying inputs that are elsewhere to it.
fn run_graph(g: &Graph, inputs: &[Storage], device: Device) -> Result<Vec<Storage>> {
    let debug = config::try_debug()?;
    if debug >= 3 {
        eprintln!(
            "metajit: realizing graph of {} node(s) on {device}:\n{g}",
            g.nodes.len()
        );
    }
    let trace = |t: &PassTrace<'_>| {
        eprintln!(
            "metajit: pass {} (round {}): {} in {:?}{}",
            t.pass,
            t.round,
            if t.changed { "changed" } else { "no change" },
            t.elapsed,
            if t.changed && debug >= 5 {
                format!("\n{}", t.graph)
            } else {
                String::new()
            }
        )
    };
    let cx = PassCx {
        verify: cfg!(debug_assertions),
        trace: if debug >= 4 { Some(&trace) } else { None },
    };
    match device.placement() {
        Device::Cpu => {
            let bufs = inputs
                .iter()
                .map(|s| match to_device(s, Device::Cpu)? {
                    Storage::Host { buf, .. } => Ok(buf),
                    Storage::Device { .. } => unreachable!("to_device(Cpu) gives host memory"),
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(run_graph_on_host(g, &bufs, debug, &cx)?
                .into_iter()
                .map(Storage::cpu)
                .collect())
        }
        d => {
            let engine = device_engine(d)?;
            let bufs = inputs
                .iter()
                .map(|s| match s {
                    Storage::Device { buf, device } if *device == d => Ok(buf.clone()),
                    _ => Err(Error::Device {
                        device: d.to_string(),
                        reason: "metajit bug: an input was not copied to the device".into(),
                    }),
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(engine
                .run(g, &bufs, debug, &cx)?
                .into_iter()
                .map(|buf| Storage::Device { buf, device: d })
                .collect())
        }
    }
}

/// Simplifies and runs a graph of CPU tensors, on the CPU backend or (`METAJIT_DEVICE=reference`)
/// the reference interpreter.
fn run_graph_on_host(
    g: &Graph,
    buffers: &[Arc<Buffer>],
    debug: u8,
    cx: &PassCx<'_>,
) -> Result<Vec<Arc<Buffer>>> {
    let device = config::try_device()?;
    if debug < 3 && device != Device::Reference {
        return cpu_engine()?.run_remembered(g, buffers, debug, cx);
    }
    // The reference device and the debug levels that print graphs simplify every time: only
    // the CPU engine's path above remembers graphs it has simplified.
    let simplified;
    let g = if worth_simplifying(g) {
        simplified = passes::simplify(g, cx);
        &simplified
    } else {
        g
    };
    if debug >= 3 {
        eprintln!(
            "metajit: after simplification, {} node(s):\n{g}",
            g.nodes.len()
        );
    }
    match device {
        Device::Reference => {
            let inputs: Vec<&Buffer> = buffers.iter().map(|b| b.as_ref()).collect();
            Ok(reference::run(g, &inputs)?
                .into_iter()
                .map(Arc::new)
                .collect())
        }
        _ => cpu_engine()?.run(g, buffers, debug),
    }
}

/// The native CPU backend.
type CpuBackend = metajit_codegen::cpu::backend::Cpu;

static CPU_ENGINE: OnceLock<Engine<CpuBackend>> = OnceLock::new();

fn cpu_engine_if_started() -> Option<&'static Engine<CpuBackend>> {
    CPU_ENGINE.get()
}

/// The CPU engine, with the current thread count and debug level (an error if either setting
/// is bad).
fn cpu_engine() -> Result<&'static Engine<CpuBackend>> {
    let (threads, debug) = (config::try_threads()?, config::try_debug()?);
    let e = CPU_ENGINE.get_or_init(|| {
        if debug >= 1 {
            at_exit_print_cache_stats();
        }
        Engine::new(CpuBackend::new(threads))
    });
    // Settings may change between calls (set_threads, set_debug).
    e.backend.set_threads(threads);
    e.backend.set_debug(debug);
    Ok(e)
}

/// A compiled kernel and where the cache found it (or that it was built).
type Found<C> = (Arc<C>, Source);

/// A schedule with its compiled kernels and buffer lifetimes, reused by every graph of the same
/// plan key.
struct Plan<C> {
    schedule: Schedule,
    /// The compiled kernel of each step (`None` for aliases and contractions), and where it
    /// came from when the plan was made (`METAJIT_DEBUG=1` prints it).
    compiled: Vec<Option<Found<C>>>,
    /// After each step, the nodes whose buffers nothing later reads.
    release: Vec<Vec<NodeId>>,
}

/// How many recent graphs [`Engine::run_remembered`] remembers.
const REMEMBERED_GRAPHS: usize = 32;

/// A graph as realized, its simplified form, and the plan of that (with its plan-key hash).
struct Remembered<C> {
    hash: u64,
    raw: Graph,
    simplified: Arc<Graph>,
    plan_hash: u64,
    plan: Arc<Plan<C>>,
}

/// A kernel cache and the settings generation ([`config::cache_generation`]) it was opened for.
type OpenCache<C> = (u64, Arc<Cache<C>>);

/// How many plans the plan cache keeps by default ([`set_plan_cache_capacity`]).
pub const DEFAULT_PLAN_CACHE_CAPACITY: usize = 256;

static PLAN_CACHE_CAPACITY: AtomicUsize = AtomicUsize::new(DEFAULT_PLAN_CACHE_CAPACITY);

/// Plans by [`PlanKey`], bounded: beyond the capacity the least recently used plan is dropped.
/// A lookup is a hit only when the stored graph has the same structure and plan facts as the
/// graph asking ([`PlanKey::same_plan`]), so colliding hashes can cost a miss, never a wrong plan.
struct PlanCache<C> {
    entries: IdMap<PlanEntry<C>>,
    /// Advances on every lookup and insertion; entries remember when they were last used.
    clock: u64,
}

struct PlanEntry<C> {
    /// The graph the plan was scheduled for: its structure is compared on every hit.
    graph: Graph,
    key: PlanKey,
    plan: Arc<Plan<C>>,
    last_used: u64,
}

impl<C> PlanCache<C> {
    fn new() -> Self {
        PlanCache {
            entries: IdMap::default(),
            clock: 0,
        }
    }

    /// The plan of `g` (whose key is `key`), if cached.
    fn get(&mut self, key: &PlanKey, g: &Graph) -> Option<Arc<Plan<C>>> {
        self.clock += 1;
        let e = self.entries.get_mut(&key.hash)?;
        if !e.key.same_plan(&e.graph, key, g) {
            return None;
        }
        e.last_used = self.clock;
        Some(e.plan.clone())
    }

    /// Stores the plan of `graph` (replacing a plan whose key hash collides), then evicts down
    /// to `capacity`.
    fn insert(&mut self, key: PlanKey, graph: Graph, plan: Arc<Plan<C>>, capacity: usize) {
        self.clock += 1;
        let last_used = self.clock;
        self.entries.insert(
            key.hash,
            PlanEntry {
                graph,
                key,
                plan,
                last_used,
            },
        );
        self.shrink(capacity);
    }

    /// Drops least recently used plans until at most `capacity` remain.
    fn shrink(&mut self, capacity: usize) {
        while self.entries.len() > capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(h, _)| *h);
            match oldest {
                Some(h) => self.entries.remove(&h),
                None => break,
            };
        }
    }

    /// Whether the entry under `hash` holds `plan` (then it is marked used, as by a hit of
    /// [`PlanCache::get`]); false once it was evicted or replaced.
    fn touch(&mut self, hash: u64, plan: &Arc<Plan<C>>) -> bool {
        self.clock += 1;
        match self.entries.get_mut(&hash) {
            Some(e) if Arc::ptr_eq(&e.plan, plan) => {
                e.last_used = self.clock;
                true
            }
            _ => false,
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Number of plans in the CPU engine's plan cache (for tests of its bound).
#[doc(hidden)]
pub fn plan_cache_len() -> usize {
    cpu_engine_if_started().map_or(0, |e| {
        e.plans.lock().unwrap_or_else(|p| p.into_inner()).len()
    })
}

/// Sets how many plans the plan cache keeps (least recently used dropped first; at least 1);
/// returns the previous capacity.
#[doc(hidden)]
pub fn set_plan_cache_capacity(capacity: usize) -> usize {
    let capacity = capacity.max(1);
    let old = PLAN_CACHE_CAPACITY.swap(capacity, Ordering::Relaxed);
    if let Some(e) = cpu_engine_if_started() {
        e.plans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .shrink(capacity);
    }
    old
}

/// A backend with its plan cache and its compiled-kernel cache (memory and disk tiers,
/// `metajit_cache`).
struct Engine<B: Backend> {
    backend: B,
    plans: Mutex<PlanCache<B::Compiled>>,
    /// Recent graphs exactly as realized, with their simplified form and plan, most recent
    /// last ([`Engine::run_remembered`]).
    graphs: Mutex<Vec<Remembered<B::Compiled>>>,
    /// The kernel cache, with the settings generation it was opened for.
    cache: Mutex<Option<OpenCache<B::Compiled>>>,
    /// The counters of caches replaced after a settings change.
    retired: Mutex<StatsSnapshot>,
    /// The backend's [`Backend::cache_identity`], computed once.
    identity: OnceLock<String>,
    /// Bytes of buffers [`Engine::execute`] has allocated so far (a device engine bounds the
    /// memory its work in flight may hold with it: [`OnDevice`]).
    allocated: AtomicU64,
}

static PLAN_HITS: AtomicU64 = AtomicU64::new(0);
static PLAN_MISSES: AtomicU64 = AtomicU64::new(0);
static KERNEL_RUNS: AtomicU64 = AtomicU64::new(0);

/// Counters of the executor since the process started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Kernels compiled.
    pub kernels_compiled: u64,
    /// Kernel compilations avoided by the kernel cache (memory or disk tier).
    pub kernel_cache_hits: u64,
    /// Realizations that reused a plan (no scheduling).
    pub plan_hits: u64,
    /// Realizations that scheduled a new plan.
    pub plan_misses: u64,
    /// Kernels launched.
    pub kernel_runs: u64,
    /// Time spent compiling, in nanoseconds.
    pub compile_ns: u64,
}

impl Stats {
    /// The counts since `earlier` (a snapshot of [`stats`] taken before): what happened in
    /// between, on every thread.
    pub fn since(&self, earlier: &Stats) -> Stats {
        Stats {
            kernels_compiled: self.kernels_compiled - earlier.kernels_compiled,
            kernel_cache_hits: self.kernel_cache_hits - earlier.kernel_cache_hits,
            plan_hits: self.plan_hits - earlier.plan_hits,
            plan_misses: self.plan_misses - earlier.plan_misses,
            kernel_runs: self.kernel_runs - earlier.kernel_runs,
            compile_ns: self.compile_ns - earlier.compile_ns,
        }
    }
}

/// The executor's counters (the kernel ones are the kernel cache's, [`cache_stats`]).
pub fn stats() -> Stats {
    let c = cache_stats();
    Stats {
        kernels_compiled: c.misses,
        kernel_cache_hits: c.memory_hits + c.disk_hits,
        plan_hits: PLAN_HITS.load(Ordering::Relaxed),
        plan_misses: PLAN_MISSES.load(Ordering::Relaxed),
        kernel_runs: KERNEL_RUNS.load(Ordering::Relaxed),
        compile_ns: c.compile_ns,
    }
}

/// The compiled-kernel cache's counters since the process started, over every device: hits
/// per tier, compiles, compile and load time. Its `Display` is the line `METAJIT_DEBUG>=1`
/// prints at exit.
pub fn cache_stats() -> StatsSnapshot {
    let cpu = cpu_engine_if_started().map_or_else(StatsSnapshot::default, |e| e.cache_stats());
    let engines = DEVICE_ENGINES.lock().unwrap_or_else(|p| p.into_inner());
    engines.iter().fold(cpu, |acc, (_, e)| acc + e.stats())
}

/// Prints [`cache_stats`] to stderr (`metajit cache: compiled=.. disk_hits=.. ...`).
pub fn print_cache_stats() {
    eprintln!("{}", cache_stats());
}

/// The cache key of a kernel: blake3 over the backend's name, its
/// [`Backend::cache_identity`] (target, ISA features, code version, options) and the kernel's
/// canonical text.
pub fn kernel_cache_key(backend: &str, identity: &str, kernel: &Kernel) -> Key {
    KeyBuilder::new("metajit compiled kernel")
        .str(backend)
        .str(identity)
        .str(&kernel.text())
        .finish()
}

impl<B: Backend> Engine<B> {
    fn new(backend: B) -> Self {
        Engine {
            backend,
            plans: Mutex::new(PlanCache::new()),
            graphs: Mutex::new(Vec::new()),
            cache: Mutex::new(None),
            retired: Mutex::new(StatsSnapshot::default()),
            identity: OnceLock::new(),
            allocated: AtomicU64::new(0),
        }
    }

    /// Counts an allocation of `numel` elements of `dtype` in [`Engine::allocated`].
    fn count_alloc(&self, dtype: metajit_metaops::DType, numel: usize) {
        let bytes = (numel.max(1) as u64).saturating_mul(dtype.size_in_bytes() as u64);
        self.allocated.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The kernel cache for the current settings (reopened after a setter changed them).
    fn kernel_cache(&self) -> Result<Arc<Cache<B::Compiled>>> {
        let generation = config::cache_generation();
        let mut slot = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((g, c)) = &*slot
            && *g == generation
        {
            return Ok(c.clone());
        }
        let cfg = config::try_cache_config()?;
        let c = Arc::new(Cache::new(&cfg, self.backend.name()));
        if let Some((_, old)) = slot.replace((generation, c.clone())) {
            let mut r = self.retired.lock().unwrap_or_else(|p| p.into_inner());
            *r = *r + old.stats();
        }
        Ok(c)
    }

    fn cache_stats(&self) -> StatsSnapshot {
        let retired = *self.retired.lock().unwrap_or_else(|p| p.into_inner());
        match &*self.cache.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((_, c)) => retired + c.stats(),
            None => retired,
        }
    }

    /// The compiled kernel of every kernel step (`None` for the other steps), in three passes:
    /// each distinct kernel is looked up in the cache's memory and disk tiers in order; those
    /// it lacks are compiled, in parallel on the rayon pool when there are several (NVRTC
    /// takes tens of milliseconds per kernel, so a cold training step's 30-60 kernels would
    /// otherwise compile one after another; with `METAJIT_DEBUG=3` or more, whose printing
    /// would interleave, one at a time); then they are stored, in order. The first error in
    /// step order is returned. The cache's counters are those of one lookup per step.
    fn compile_all(&self, steps: &[Step], debug: u8) -> Result<Vec<Option<Found<B::Compiled>>>> {
        use rayon::prelude::*;
        let cache = self.kernel_cache()?;
        let identity = self.identity.get_or_init(|| self.backend.cache_identity());
        let mut out = Vec::with_capacity(steps.len());
        // Distinct kernels missing from the cache: (key, kernel, the steps that use it).
        let mut missing: Vec<(Key, &Kernel, Vec<usize>)> = Vec::new();
        for (i, st) in steps.iter().enumerate() {
            let Step::Kernel { kernel, .. } = st else {
                out.push(None);
                continue;
            };
            let key = kernel_cache_key(self.backend.name(), identity, kernel);
            if let Some((_, _, uses)) = missing.iter_mut().find(|(k, _, _)| *k == key) {
                uses.push(i);
                out.push(None);
                continue;
            }
            // SAFETY: the disk tier returns only a payload that verified against its header
            // (magic, format version, this key, length, blake3 checksum), and the key hashes
            // this kernel's text with the backend's name and identity; payloads are written
            // only from `artifact` below. So the bytes are this kernel's code for this target.
            match cache.find(key, |bytes| unsafe { self.backend.load(kernel, bytes) }) {
                Some(found) => out.push(Some(found)),
                None => {
                    missing.push((key, kernel, vec![i]));
                    out.push(None);
                }
            }
        }
        let build = |(key, kernel, _): &(Key, &Kernel, Vec<usize>)| {
            if debug >= 3 {
                eprintln!("metajit: compiling kernel:\n{}", kernel.text());
            }
            let start = Instant::now();
            let c = self.backend.compile(kernel)?;
            let bytes = self.backend.artifact(&c);
            Ok::<_, metajit_codegen::BackendError>((*key, c, bytes, start.elapsed()))
        };
        let built: Vec<_> = if missing.len() > 1 && debug < 3 {
            missing.par_iter().map(build).collect()
        } else {
            missing.iter().map(build).collect()
        };
        for (m, b) in missing.iter().zip(built) {
            let (key, c, bytes, took) = b?;
            let value = cache.store(key, c, &bytes, took);
            for (n, &i) in m.2.iter().enumerate() {
                out[i] = Some(if n == 0 {
                    (value.clone(), Source::Built)
                } else {
                    // A kernel met again in the same schedule: looked up again, as in a
                    // sequential pass (a memory-tier hit; compiled again without a cache).
                    // SAFETY: as in the first pass.
                    cache.lookup(
                        key,
                        |bytes| unsafe { self.backend.load(m.1, bytes) },
                        || build(m).map(|(_, c, bytes, _)| (c, bytes)),
                    )?
                });
            }
        }
        Ok(out)
    }

    /// The plan of `g` from the plan cache, else scheduled and compiled now; with its
    /// [`PlanKey`] hash (the handle [`PlanCache::touch`] takes).
    fn plan(&self, g: &Graph, debug: u8) -> Result<(u64, Arc<Plan<B::Compiled>>)> {
        let key = PlanKey::of(g);
        let hash = key.hash;
        if let Some(p) = self
            .plans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key, g)
        {
            PLAN_HITS.fetch_add(1, Ordering::Relaxed);
            return Ok((hash, p));
        }
        PLAN_MISSES.fetch_add(1, Ordering::Relaxed);
        let s = schedule::schedule(g);
        if debug >= 2 {
            eprintln!(
                "metajit: schedule of {} node(s): {} kernel(s)\n{}",
                g.nodes.len(),
                s.kernel_count(),
                s.summary(g)
            );
        }
        let compiled = self.compile_all(&s.steps, debug)?;
        // Buffer lifetimes: a node's buffer is released after the last step that reads it,
        // unless it is an output.
        let mut last_use: HashMap<NodeId, usize> = HashMap::new();
        for (i, st) in s.steps.iter().enumerate() {
            let reads: Vec<BufRef> = match st {
                Step::Kernel { bufs, kernel, .. } => bufs
                    .iter()
                    .zip(&kernel.bufs)
                    .filter(|(_, p)| !p.output)
                    .map(|(r, _)| *r)
                    .collect(),
                Step::Alias { of, .. } => vec![*of],
                Step::Contraction { bufs, .. } => vec![bufs[1], bufs[2]],
            };
            for r in reads {
                if let BufRef::Node(n) = r {
                    last_use.insert(n, i);
                }
            }
        }
        let mut release = vec![Vec::new(); s.steps.len()];
        for (n, i) in last_use {
            if !s.outputs.contains(&BufRef::Node(n)) {
                release[i].push(n);
            }
        }
        let plan = Arc::new(Plan {
            schedule: s,
            compiled,
            release,
        });
        self.plans.lock().unwrap_or_else(|p| p.into_inner()).insert(
            key,
            g.clone(),
            plan.clone(),
            PLAN_CACHE_CAPACITY.load(Ordering::Relaxed),
        );
        Ok((hash, plan))
    }

    /// Whether the plan cache still holds `plan` under `hash` (marking it used): the check a
    /// remembered plan passes before it runs, so that the plan cache's bound and counters
    /// mean the same with the fast paths as without them.
    fn touch(&self, hash: u64, plan: &Arc<Plan<B::Compiled>>) -> bool {
        let hit = self
            .plans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .touch(hash, plan);
        if hit {
            PLAN_HITS.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    /// Simplifies, plans and runs the graph `raw`, as realized. A graph equal to one realized
    /// recently — every node, constant and extent — is neither hashed for its plan key nor
    /// simplified again: simplification is a pure function of the graph and the plan a
    /// function of the simplified graph, so the remembered ones are this graph's; the plan is
    /// used while the plan cache still holds it ([`Engine::touch`]).
    fn run_remembered(
        &self,
        raw: &Graph,
        inputs: &[Arc<B::Buffer>],
        debug: u8,
        cx: &PassCx<'_>,
    ) -> Result<Vec<Arc<B::Buffer>>> {
        let hash = graph_hash(raw);
        let known = {
            let mut graphs = self.graphs.lock().unwrap_or_else(|p| p.into_inner());
            match graphs.iter().position(|e| e.hash == hash && e.raw == *raw) {
                Some(i) => {
                    let e = graphs.remove(i);
                    let known = (e.simplified.clone(), e.plan_hash, e.plan.clone());
                    graphs.push(e);
                    Some(known)
                }
                None => None,
            }
        };
        let simplified = match known {
            Some((s, plan_hash, plan)) if self.touch(plan_hash, &plan) => {
                return self.execute(&s, &plan, inputs, debug);
            }
            Some((s, ..)) => s,
            None if worth_simplifying(raw) => Arc::new(passes::simplify(raw, cx)),
            None => Arc::new(raw.clone()),
        };
        let (plan_hash, plan) = self.plan(&simplified, debug)?;
        {
            let mut graphs = self.graphs.lock().unwrap_or_else(|p| p.into_inner());
            graphs.retain(|e| !(e.hash == hash && e.raw == *raw));
            if graphs.len() >= REMEMBERED_GRAPHS {
                graphs.remove(0);
            }
            graphs.push(Remembered {
                hash,
                raw: raw.clone(),
                simplified: simplified.clone(),
                plan_hash,
                plan: plan.clone(),
            });
        }
        self.execute(&simplified, &plan, inputs, debug)
    }

    /// Plans and runs `g`.
    fn run(&self, g: &Graph, inputs: &[Arc<B::Buffer>], debug: u8) -> Result<Vec<Arc<B::Buffer>>> {
        let (_, plan) = self.plan(g, debug)?;
        self.execute(g, &plan, inputs, debug)
    }

    /// Runs the steps of `plan`, the plan of `g`, on the graph's input buffers; returns the
    /// graph's outputs.
    fn execute(
        &self,
        g: &Graph,
        plan: &Plan<B::Compiled>,
        inputs: &[Arc<B::Buffer>],
        debug: u8,
    ) -> Result<Vec<Arc<B::Buffer>>> {
        let mut node_bufs: Vec<Option<Arc<B::Buffer>>> = vec![None; g.nodes.len()];
        let fetch = |r: &BufRef, node_bufs: &[Option<Arc<B::Buffer>>]| -> Arc<B::Buffer> {
            match r {
                BufRef::Input(slot) => inputs[*slot].clone(),
                BufRef::Node(n) => node_bufs[n.index()]
                    .clone()
                    .expect("a step computes each node before it is read"),
            }
        };
        for (i, step) in plan.schedule.steps.iter().enumerate() {
            match step {
                Step::Alias { node, of } => {
                    let b = fetch(of, &node_bufs);
                    node_bufs[node.index()] = Some(b);
                }
                Step::Contraction { contraction, bufs } => {
                    let out = g.node(contraction.output);
                    let mut dst = self.backend.alloc(out.dtype, out.shape.numel())?;
                    self.count_alloc(out.dtype, out.shape.numel());
                    let (lhs, rhs) = (fetch(&bufs[1], &node_bufs), fetch(&bufs[2], &node_bufs));
                    let layout = contraction.layout(g);
                    let t0 = (debug >= 1).then(Instant::now);
                    self.backend
                        .contraction(&layout, out.dtype, &mut dst, &lhs, &rhs)?;
                    KERNEL_RUNS.fetch_add(1, Ordering::Relaxed);
                    if let Some(t0) = t0 {
                        eprintln!(
                            "metajit: {} GEMM {} ({}{}) m={} n={} k={} batch={} in {:?}",
                            self.backend.name(),
                            contraction.output,
                            out.dtype,
                            out.shape,
                            layout.m,
                            layout.n,
                            layout.k,
                            layout.batch_count(),
                            t0.elapsed()
                        );
                    }
                    node_bufs[contraction.output.index()] = Some(Arc::new(dst));
                }
                Step::Kernel {
                    kernel,
                    bufs,
                    sizes,
                    init,
                    root,
                } => {
                    // The outputs first, into their nodes' slots; then every argument by
                    // reference (no count changes).
                    for (p, (r, param)) in bufs.iter().zip(&kernel.bufs).enumerate() {
                        if let (BufRef::Node(n), true) = (r, param.output) {
                            let numel = g.node(*n).shape.numel();
                            let mut b = self.backend.alloc(param.dtype, numel)?;
                            self.count_alloc(param.dtype, numel);
                            if let Some((_, v)) = init.iter().find(|(q, _)| *q == p) {
                                self.backend.fill(&mut b, *v)?;
                            }
                            node_bufs[n.index()] = Some(Arc::new(b));
                        }
                    }
                    let refs: Vec<&B::Buffer> = bufs
                        .iter()
                        .map(|r| match r {
                            BufRef::Input(slot) => inputs[*slot].as_ref(),
                            BufRef::Node(n) => node_bufs[n.index()]
                                .as_deref()
                                .expect("a step computes each node before it is read"),
                        })
                        .collect();
                    let sv = schedule::size_values(g, sizes);
                    let (compiled, origin) = plan.compiled[i]
                        .as_ref()
                        .expect("every kernel step has a compiled kernel");
                    let t0 = (debug >= 1).then(Instant::now);
                    // SAFETY: `compiled` is this step's kernel, built by the scheduler, which
                    // keeps every access within the buffers' declared extents; the output
                    // buffers were created above, only `node_bufs` holds them, and no step
                    // reads a node it writes.
                    unsafe { self.backend.launch(compiled, kernel, &refs, &sv) }?;
                    KERNEL_RUNS.fetch_add(1, Ordering::Relaxed);
                    if let Some(t0) = t0 {
                        let n = g.node(*root);
                        eprintln!(
                            "metajit: {} kernel {root} ({} {}{}) in {:?} [{}]",
                            self.backend.name(),
                            n.op.name(),
                            n.dtype,
                            n.shape,
                            t0.elapsed(),
                            origin.describe()
                        );
                    }
                }
            }
            for n in &plan.release[i] {
                node_bufs[n.index()] = None;
            }
        }
        Ok(plan
            .schedule
            .outputs
            .iter()
            .map(|r| fetch(r, &node_bufs))
            .collect())
    }
}

/// Realizes several tensors as one graph: shared work is computed once, and everything is
/// scheduled together. A training step realizes its loss, every updated parameter and the
/// optimizer state this way, so forward, backward and update are one schedule.
///
/// ```
/// use metajit::Tensor;
/// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], [3]);
/// let (s, m) = (x.exp().sum_all(), x.exp().max_all());
/// metajit::realize_all(&[&s, &m]).unwrap();
/// assert!(s.is_realized() && m.is_realized());
/// ```
pub fn realize_all(tensors: &[&Tensor]) -> Result<()> {
    let nodes: Vec<NodeRef> = tensors.iter().map(|t| t.node()).collect();
    realize(&nodes)
}

/// How [`run_graph_with`] executes a graph.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphMode {
    /// The reference interpreter, whole graph.
    Reference,
    /// Simplified, fused and compiled as one graph.
    Compiled,
    /// One kernel per meta-op, every intermediate materialised.
    Eager,
    /// Simplified, fused and compiled as one graph on a device (its inputs copied there).
    Device(Device),
}

/// Runs a graph of meta-ops on the native CPU backend, the reference interpreter or a device
/// and returns its outputs (for tests and fuzzing: the same graph through every path).
#[doc(hidden)]
pub fn run_graph_with(
    g: &Graph,
    inputs: &[metajit_metaops::HostData],
    mode: GraphMode,
) -> Result<Vec<metajit_metaops::HostData>> {
    if let GraphMode::Device(d) = mode {
        let staged = inputs
            .iter()
            .map(|h| {
                to_device(
                    &Storage::Host {
                        buf: Arc::new(Buffer::from_host(h)),
                        device: d.placement(),
                    },
                    d,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        return run_graph(g, &staged, d)?
            .iter()
            .map(Storage::to_host)
            .collect();
    }
    let bufs: Vec<Arc<Buffer>> = inputs
        .iter()
        .map(|h| Arc::new(Buffer::from_host(h)))
        .collect();
    let out = match mode {
        GraphMode::Reference => {
            let refs: Vec<&Buffer> = bufs.iter().map(|b| b.as_ref()).collect();
            reference::run(g, &refs)?
                .into_iter()
                .map(Arc::new)
                .collect()
        }
        GraphMode::Compiled => {
            let s = passes::simplify(g, &PassCx::default());
            cpu_engine()?.run(&s, &bufs, config::try_debug()?)?
        }
        GraphMode::Device(_) => unreachable!("handled above"),
        GraphMode::Eager => {
            // Each node alone, reading its inputs' materialised buffers.
            let mut vals: Vec<Option<Arc<Buffer>>> = vec![None; g.nodes.len()];
            for (k, node) in g.nodes.iter().enumerate() {
                if let Op::Input { slot } = node.op {
                    vals[k] = Some(bufs[slot].clone());
                    continue;
                }
                let mut one = Graph::new();
                let mut args = Vec::new();
                for (slot, i) in node.inputs.iter().enumerate() {
                    let inp = g.node(*i);
                    one.push_unchecked(Node {
                        op: Op::Input { slot },
                        inputs: vec![],
                        dtype: inp.dtype,
                        shape: inp.shape.clone(),
                    });
                    args.push(vals[i.index()].clone().expect("inputs come first"));
                }
                let id = one.push_unchecked(Node {
                    op: node.op.clone(),
                    inputs: (0..node.inputs.len() as u32).map(NodeId).collect(),
                    dtype: node.dtype,
                    shape: node.shape.clone(),
                });
                one.outputs = vec![id];
                let r = cpu_engine()?.run(&one, &args, config::try_debug()?)?;
                vals[k] = r.into_iter().next();
            }
            g.outputs
                .iter()
                .map(|o| vals[o.index()].clone().expect("every node ran"))
                .collect()
        }
    };
    Ok(out.iter().map(|b| b.to_host()).collect())
}

/// Registers (once) the `METAJIT_DEBUG>=1` line of cache statistics printed when the process
/// exits.
fn at_exit_print_cache_stats() {
    unsafe extern "C" {
        /// C's `atexit` (every platform Rust's std supports links the C runtime).
        fn atexit(f: extern "C" fn()) -> std::ffi::c_int;
    }
    extern "C" fn print() {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "{}", cache_stats());
    }
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    // SAFETY: `atexit` only records the function pointer; `print` is an `extern "C"` fn that
    // lives as long as the program, cannot panic (write errors are ignored) and reads statics
    // that are never destroyed.
    REGISTERED.call_once(|| unsafe {
        atexit(print);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use metajit_metaops::parse::parse;

    fn plan_of(g: &Graph) -> Arc<Plan<()>> {
        Arc::new(Plan {
            schedule: schedule::schedule(g),
            compiled: Vec::new(),
            release: Vec::new(),
        })
    }

    fn graph(text: &str) -> Graph {
        parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn the_self_check_passes_on_the_cpu_and_catches_wrong_values() {
        let g = graph(SELF_CHECK_GRAPH);
        let inputs = self_check_inputs();
        let want = run_graph_with(&g, &inputs, GraphMode::Reference).unwrap();
        // The CPU backend computes it within the tolerances (a run of the same comparison).
        let cpu = run_graph_with(&g, &inputs, GraphMode::Compiled).unwrap();
        compare_self_check(&inputs, &cpu, &want).unwrap();
        // Each output, slightly wrong in one element, is caught.
        let spoiled = |o: usize, i: usize, f: fn(f32) -> f32| {
            let mut bad = cpu.clone();
            if let metajit_metaops::HostData::F32(v) = &mut bad[o] {
                v[i] = f(v[i]);
            }
            compare_self_check(&inputs, &bad, &want)
        };
        for o in 0..5 {
            // The full sum (output 3) has one element, and a tolerance of 1e-5 of its 40,960
            // terms' magnitudes (about 0.2): off by one is wrong.
            let (i, f): (usize, fn(f32) -> f32) = if o == 3 {
                (0, |v| v + 1.0)
            } else {
                (5, |v| v * 1.01 + 0.01)
            };
            let e = spoiled(o, i, f).unwrap_err();
            assert!(e.contains(&format!("output {o} element {i}")), "{e}");
            assert!(spoiled(o, i, |_| f32::NAN).is_err());
        }
        assert!(compare_self_check(&inputs, &cpu[..2], &want).is_err());
        // A device that does not open is a failure to run, not a wrong value.
        assert!(matches!(
            self_check(Device::OpenCl(usize::MAX)),
            crate::device::SelfCheck::Failed(_)
        ));
        // A GPU backend passes it: the OpenCL one, where an OpenCL device opens (pocl in CI,
        // where METAJIT_REQUIRE_DEVICES=opencl makes it required).
        match self_check(Device::OpenCl(0)) {
            crate::device::SelfCheck::Passed => {}
            crate::device::SelfCheck::Wrong(e) => panic!("opencl:0 computed a wrong value: {e}"),
            crate::device::SelfCheck::Failed(e) => {
                let required = std::env::var("METAJIT_REQUIRE_DEVICES").unwrap_or_default();
                assert!(
                    !required.split(',').any(|r| r.trim() == "opencl"),
                    "opencl is required (METAJIT_REQUIRE_DEVICES) but failed: {e}"
                );
                eprintln!("skipped: the self-check on opencl:0 ({e})");
            }
        }
    }

    /// A device backend that runs nothing: contractions and allocations succeed, and
    /// `synchronize` is counted and fails while `fail` is set (an asynchronous launch error).
    #[derive(Default)]
    struct Queue {
        syncs: AtomicU64,
        fail: std::sync::atomic::AtomicBool,
    }

    struct QueueBuf(metajit_metaops::DType, usize);

    impl metajit_codegen::DeviceBuffer for QueueBuf {
        fn dtype(&self) -> metajit_metaops::DType {
            self.0
        }
        fn numel(&self) -> usize {
            self.1
        }
    }

    impl Backend for Queue {
        type Compiled = ();
        type Buffer = QueueBuf;
        fn name(&self) -> &'static str {
            "queue"
        }
        fn compile(&self, _: &Kernel) -> std::result::Result<(), metajit_codegen::BackendError> {
            Err(self.error("no kernels here"))
        }
        fn cache_identity(&self) -> String {
            "queue".into()
        }
        fn alloc(
            &self,
            dtype: metajit_metaops::DType,
            numel: usize,
        ) -> std::result::Result<QueueBuf, metajit_codegen::BackendError> {
            Ok(QueueBuf(dtype, numel))
        }
        fn upload(
            &self,
            data: &metajit_metaops::HostData,
        ) -> std::result::Result<QueueBuf, metajit_codegen::BackendError> {
            Ok(QueueBuf(data.dtype(), data.len()))
        }
        fn download(
            &self,
            buf: &QueueBuf,
        ) -> std::result::Result<metajit_metaops::HostData, metajit_codegen::BackendError> {
            Ok(metajit_metaops::HostData::F32(vec![0.0; buf.1]))
        }
        fn fill(
            &self,
            _: &mut QueueBuf,
            _: metajit_metaops::Scalar,
        ) -> std::result::Result<(), metajit_codegen::BackendError> {
            Ok(())
        }
        fn synchronize(&self) -> std::result::Result<(), metajit_codegen::BackendError> {
            self.syncs.fetch_add(1, Ordering::Relaxed);
            if self.fail.load(Ordering::Relaxed) {
                return Err(self.error("launch 7 failed: an illegal address"));
            }
            Ok(())
        }
        fn artifact(&self, _: &()) -> Vec<u8> {
            Vec::new()
        }
        unsafe fn load(
            &self,
            _: &Kernel,
            _: &[u8],
        ) -> std::result::Result<(), metajit_codegen::BackendError> {
            Err(self.error("no kernels here"))
        }
        unsafe fn launch(
            &self,
            _: &(),
            _: &Kernel,
            _: &[&QueueBuf],
            _: &[i64],
        ) -> std::result::Result<(), metajit_codegen::BackendError> {
            Err(self.error("no kernels here"))
        }
        fn contraction(
            &self,
            _: &metajit_metaops::contraction::GemmLayout,
            _: metajit_metaops::DType,
            _: &mut QueueBuf,
            _: &QueueBuf,
            _: &QueueBuf,
        ) -> std::result::Result<(), metajit_codegen::BackendError> {
            Ok(())
        }
    }

    impl Queue {
        fn error(&self, message: &str) -> metajit_codegen::BackendError {
            metajit_codegen::BackendError::Device {
                backend: "queue",
                message: message.into(),
            }
        }
    }

    /// A matmul of `[m, 1] x [1, n]`: one contraction step, one `m * n` f32 allocation.
    fn outer_product(m: usize, n: usize) -> Graph {
        graph(&format!(
            "%0 = input #0 : f32[{m}, 1]\n%1 = input #1 : f32[1, {n}]\n\
             %2 = broadcast %0 axes=[2] : f32[{m}, 1, {n}]\n\
             %3 = broadcast %1 axes=[0] : f32[{m}, 1, {n}]\n\
             %4 = mul %2, %3 : f32[{m}, 1, {n}]\n\
             %5 = reduce sum %4 axes=[1] : f32[{m}, {n}]\nreturn %5\n"
        ))
    }

    fn run_on(e: &OnDevice<Queue>, g: &Graph) -> Result<Vec<AnyBuffer>> {
        let inputs: Vec<AnyBuffer> = g
            .nodes
            .iter()
            .filter(|n| matches!(n.op, Op::Input { .. }))
            .map(|n| Arc::new(QueueBuf(n.dtype, n.shape.numel())) as AnyBuffer)
            .collect();
        e.run(g, &inputs, 0, &PassCx::default())
    }

    #[test]
    fn device_realizes_wait_for_the_device_only_past_the_bounds_and_before_reads() {
        let e = OnDevice::new(Device::Cuda(3), Queue::default());
        let syncs = || e.engine.backend.syncs.load(Ordering::Relaxed);
        let small = outer_product(4, 8);
        // Up to the bound, realizes only enqueue; the last one waits.
        for _ in 0..MAX_REALIZES_IN_FLIGHT - 1 {
            run_on(&e, &small).unwrap();
        }
        assert_eq!(syncs(), 0);
        run_on(&e, &small).unwrap();
        assert_eq!(syncs(), 1);
        // A read waits first when anything is in flight, and only then.
        let out = run_on(&e, &small).unwrap();
        e.download(out[0].as_ref()).unwrap();
        assert_eq!(syncs(), 2);
        e.download(out[0].as_ref()).unwrap();
        assert_eq!(syncs(), 2);
        // The byte budget: two realizes allocating half of it each.
        let half = (MAX_BYTES_IN_FLIGHT / 2 / 4) as usize;
        let big = outer_product(half / 1024, 1024);
        run_on(&e, &big).unwrap();
        assert_eq!(syncs(), 2);
        run_on(&e, &big).unwrap();
        assert_eq!(syncs(), 3);
        // An asynchronous failure surfaces at the next wait, naming the device: at a read...
        e.engine.backend.fail.store(true, Ordering::Relaxed);
        let out = run_on(&e, &small).unwrap();
        let err = e.download(out[0].as_ref()).unwrap_err().to_string();
        assert!(
            err.contains("cuda:3") && err.contains("launch 7 failed") && err.contains("earlier"),
            "{err}"
        );
        // ... at the realize that reaches the bound ...
        for _ in 0..MAX_REALIZES_IN_FLIGHT - 1 {
            run_on(&e, &small).unwrap();
        }
        let err = run_on(&e, &small).unwrap_err().to_string();
        assert!(err.contains("cuda:3"), "{err}");
        // ... or at an explicit synchronize; after which the device is idle again.
        run_on(&e, &small).unwrap();
        assert!(e.synchronize().is_err());
        e.engine.backend.fail.store(false, Ordering::Relaxed);
        let before = syncs();
        e.download(out[0].as_ref()).unwrap();
        assert_eq!(syncs(), before);
    }

    #[test]
    fn a_colliding_hash_is_a_miss_not_a_wrong_plan() {
        let a = graph("%0 = input #0 : f32[4]\n%1 = exp %0 : f32[4]\nreturn %1\n");
        let b = graph("%0 = input #0 : f32[4]\n%1 = log %0 : f32[4]\nreturn %1\n");
        let (ka, mut kb) = (PlanKey::of(&a), PlanKey::of(&b));
        assert_ne!(ka.hash, kb.hash);
        kb.hash = ka.hash; // force a collision
        let mut cache = PlanCache::new();
        cache.insert(ka.clone(), a.clone(), plan_of(&a), 8);
        assert!(cache.get(&ka, &a).is_some(), "the same graph hits");
        assert!(cache.get(&kb, &b).is_none(), "a colliding graph must miss");
        // Its plan replaces the colliding one; each graph then gets its own schedule.
        cache.insert(kb.clone(), b.clone(), plan_of(&b), 8);
        let p = cache.get(&kb, &b).expect("b's own plan");
        assert_eq!(p.schedule, schedule::schedule(&b));
        assert!(cache.get(&ka, &a).is_none());
    }

    #[test]
    fn the_cache_keeps_the_most_recently_used_plans_within_its_bound() {
        let graphs: Vec<Graph> = (1..=6)
            .map(|r| {
                let dims = vec!["2"; r].join(", ");
                graph(&format!(
                    "%0 = input #0 : f32[{dims}]\n%1 = exp %0 : f32[{dims}]\nreturn %1\n"
                ))
            })
            .collect();
        let keys: Vec<PlanKey> = graphs.iter().map(PlanKey::of).collect();
        let mut cache = PlanCache::new();
        for (g, k) in graphs.iter().zip(&keys).take(3) {
            cache.insert(k.clone(), g.clone(), plan_of(g), 3);
        }
        assert!(cache.get(&keys[0], &graphs[0]).is_some()); // 0 is now the most recent
        for (g, k) in graphs.iter().zip(&keys).skip(3) {
            cache.insert(k.clone(), g.clone(), plan_of(g), 3);
            assert!(cache.len() <= 3);
        }
        // 1 and 2 were least recently used when 3 and 4 came; 0 went when 5 came.
        let present: Vec<bool> = graphs
            .iter()
            .zip(&keys)
            .map(|(g, k)| cache.get(k, g).is_some())
            .collect();
        assert_eq!(present, [false, false, false, true, true, true]);
    }
}
