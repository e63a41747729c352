//! The lazy [`Tensor`]: a handle to one node of the unified graph.
//!
//! Two levels, as Jittor's `VarHolder` → `Var`:
//! - a **node** ([`Inner`]) is one value of the graph: a pending op over other nodes, or a
//!   computed buffer, plus its autograd record. Graph edges point at nodes, and a node's value
//!   never changes once recorded.
//! - a **tensor** ([`Tensor`]) is a handle the user holds; clones share it. It points at one
//!   node, and [`Tensor::assign`] points it at another (a parameter taking its updated value):
//!   every holder of the handle (a module, an optimizer) sees the new value, while graphs
//!   recorded earlier keep reading the old node.
//!
//! Every op call checks its arguments at once (panicking at the caller's line on misuse) and
//! records a meta-op node; nothing is computed until a value is needed (`to_vec`, `item`,
//! printing, [`Tensor::realize`]) or eager mode is on. Realizing replaces a node's op by its
//! buffer, which drops the references to its inputs, so memory is freed as soon as nothing
//! refers to it. The backward edges of a node that needs a gradient live apart, in its
//! autograd record ([`crate::autograd`]), so realizing a loss leaves `backward()` its graph.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use metajit_codegen::buffer::Buffer;
use metajit_metaops::{DType, Element, Graph, HostData, Node, Op, Shape};

use crate::autograd::{self, Autograd};
use crate::config;
use crate::device::{Device, Storage};
use crate::error::Result;

/// A multi-dimensional array of one dtype, computed lazily.
///
/// Cloning a `Tensor` is cheap and shares the handle (like cloning an `Rc`): an
/// [`assign`](Tensor::assign) through one clone is seen by all.
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<Handle>);

/// What a [`Tensor`] points at: its current node. The dtype and shape are fixed for the
/// handle's life (`assign` keeps them).
pub(crate) struct Handle {
    dtype: DType,
    shape: Shape,
    node: Mutex<NodeRef>,
    /// The gradient cell of a leaf that requires grad (its nodes hold it weakly).
    pub(crate) leaf: Mutex<Option<Arc<crate::autograd::Leaf>>>,
}

/// A shared reference to a node of the unified graph.
pub(crate) type NodeRef = Arc<Inner>;

/// One node of the unified graph.
pub(crate) struct Inner {
    pub(crate) id: u64,
    pub(crate) dtype: DType,
    pub(crate) shape: Shape,
    pub(crate) state: Mutex<State>,
    /// The device of the node's value; `None` for a floating node, computed from no data (see
    /// [`crate::device`]).
    pub(crate) device: Option<Device>,
    /// The autograd record: nothing, a leaf that accumulates `.grad`, or backward edges.
    /// Change it only through [`Inner::set_autograd`], which keeps `grad_flag` in step.
    pub(crate) autograd: Mutex<Autograd>,
    /// Whether `autograd` is not `Autograd::None` (read on every op without locking).
    grad_flag: AtomicBool,
    /// The high-level op (e.g. one matmul) this node was recorded in, or 0: eager mode runs a
    /// group's backward as one unit too.
    pub(crate) group: u64,
}

/// What a node currently is: a pending op over other nodes, or a computed buffer.
pub(crate) enum State {
    Lazy { op: Op, inputs: Vec<NodeRef> },
    Realized(Storage),
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Locks a mutex whose data stays consistent across a panic (every write is one assignment),
/// so a poisoned lock is still usable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// A new node.
    pub(crate) fn new(
        dtype: DType,
        shape: Shape,
        state: State,
        device: Option<Device>,
        autograd: Autograd,
    ) -> NodeRef {
        Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            dtype,
            shape,
            state: Mutex::new(state),
            device,
            grad_flag: AtomicBool::new(!matches!(autograd, Autograd::None)),
            autograd: Mutex::new(autograd),
            group: config::current_group(),
        })
    }

    /// True when a gradient flows to this node (a leaf that requires grad, or a result of
    /// one).
    pub(crate) fn requires_grad(&self) -> bool {
        self.grad_flag.load(Ordering::Acquire)
    }

    /// Replaces the autograd record (`slot` is this node's locked record).
    pub(crate) fn set_autograd(&self, slot: &mut MutexGuard<'_, Autograd>, rec: Autograd) {
        self.grad_flag
            .store(!matches!(rec, Autograd::None), Ordering::Release);
        **slot = rec;
    }

    /// Moves this node's references to other nodes (pending inputs and backward edges) onto
    /// `stack`.
    fn take_edges(&mut self, stack: &mut Vec<NodeRef>) {
        if let State::Lazy { inputs, .. } = self.state.get_mut().unwrap_or_else(|p| p.into_inner())
        {
            stack.append(inputs);
        }
        if let Autograd::Fn(f) = self.autograd.get_mut().unwrap_or_else(|p| p.into_inner()) {
            stack.append(&mut f.inputs);
        }
    }
}

impl Drop for Inner {
    /// Drops the chain of pending inputs and backward edges iteratively: a graph can be
    /// arbitrarily deep (`total = total + loss` over 100k steps), and the default recursive
    /// drop would overflow the stack.
    fn drop(&mut self) {
        let mut stack = Vec::new();
        self.take_edges(&mut stack);
        while let Some(mut n) = stack.pop() {
            // Only the last owner unlinks a node's edges (in place: moving a node out of its
            // Arc would copy it); others just release their count.
            if let Some(inner) = Arc::get_mut(&mut n) {
                inner.take_edges(&mut stack);
            }
        }
    }
}

/// Checks a node of `op` over `inputs` against the verifier's rules (panicking: a failure is
/// a bug in the op's lowering).
#[track_caller]
fn verify_node(op: &Op, inputs: &[&Tensor], dtype: DType, shape: &Shape) {
    let mut g = Graph::new();
    let ids: Vec<_> = inputs
        .iter()
        .enumerate()
        .map(|(slot, t)| {
            g.push_unchecked(Node {
                op: Op::Input { slot },
                inputs: vec![],
                dtype: t.dtype(),
                shape: t.shape().clone(),
            })
        })
        .collect();
    let node = Node {
        op: op.clone(),
        inputs: ids,
        dtype,
        shape: shape.clone(),
    };
    if let Err(e) = metajit_metaops::verify::check_node(&g, &node) {
        let mut text = String::new();
        let _ = metajit_metaops::print::write_node(
            &mut text,
            metajit_metaops::NodeId(inputs.len() as u32),
            &node,
        );
        panic!("metajit bug: lowering produced an invalid node: {e}\n  {text}");
    }
}

/// The device of a node of `op` over `inputs`: the device of every input that has one
/// (floating inputs have none), or `None` when all are floating.
///
/// # Panics
/// When two inputs are on different devices.
#[track_caller]
fn common_device(op: &Op, inputs: &[NodeRef]) -> Option<Device> {
    let mut device = None;
    for n in inputs {
        match (device, n.device) {
            (None, d) => device = d,
            (Some(a), Some(b)) if a != b => {
                let list: Vec<String> = inputs
                    .iter()
                    .map(|i| {
                        let d = i.device.map_or("floating".to_string(), |d| d.to_string());
                        format!("{} {} on {d}", i.dtype, i.shape)
                    })
                    .collect();
                panic!(
                    "device mismatch in {}: inputs {} (move them to one device with Tensor::to)",
                    op.name(),
                    list.join(", ")
                );
            }
            _ => {}
        }
    }
    device
}

impl Tensor {
    /// A handle to `node`.
    pub(crate) fn from_node(node: NodeRef) -> Tensor {
        Tensor(Arc::new(Handle {
            dtype: node.dtype,
            shape: node.shape.clone(),
            node: Mutex::new(node),
            leaf: Mutex::new(None),
        }))
    }

    /// The node this tensor points at now.
    pub(crate) fn node(&self) -> NodeRef {
        lock(&self.0.node).clone()
    }

    /// Records `op` over `inputs` as a new node of `dtype` and `shape`. The node is checked
    /// against the verifier's rules; a failure here is a bug in the op's lowering (callers
    /// check user-facing rules first, with better messages), reported with the op's text.
    /// A signature verified before is not checked again ([`crate::dispatch`]). When gradients
    /// are enabled and an input requires one, the node keeps backward edges.
    #[track_caller]
    pub(crate) fn from_op(op: Op, inputs: &[&Tensor], dtype: DType, shape: Shape) -> Tensor {
        let nodes: Vec<NodeRef> = inputs.iter().map(|t| t.node()).collect();
        let device = common_device(&op, &nodes);
        let entry = match crate::dispatch::lookup(&op, &nodes, dtype, &shape) {
            Some(e) => e,
            None => {
                verify_node(&op, inputs, dtype, &shape);
                crate::dispatch::insert(&op, &nodes, dtype, &shape)
            }
        };
        let grad = autograd::record(&op, dtype, &nodes);
        let eager = config::eager_now();
        if eager {
            match crate::exec::eager_known(&nodes, device, &entry) {
                Ok(Some(data)) => {
                    return Tensor::from_node(Inner::new(
                        dtype,
                        shape,
                        State::Realized(Storage::cpu(data)),
                        device,
                        grad,
                    ));
                }
                Ok(None) => {}
                Err(e) => panic!("eager execution failed: {e}"),
            }
        }
        let node = Inner::new(
            dtype,
            shape,
            State::Lazy { op, inputs: nodes },
            device,
            grad,
        );
        if eager && let Err(e) = crate::exec::realize_eager(&node, &entry) {
            panic!("eager execution failed: {e}");
        }
        Tensor::from_node(node)
    }

    /// The same value as a new leaf that does not require grad and shares nothing with this
    /// tensor's autograd graph (PyTorch's `detach`). A computed value is shared, not copied.
    ///
    /// ```
    /// use metajit::Tensor;
    /// let w = Tensor::ones([2]).requires_grad_(true);
    /// let y = (&w * 3.0).detach();
    /// assert!(!y.requires_grad());
    /// ```
    pub fn detach(&self) -> Tensor {
        Tensor::from_node(self.same_value_node(Autograd::None))
    }

    /// A new node with this tensor's value: the buffer when computed, else an identity
    /// reshape of the current node (which fuses away).
    fn same_value_node(&self, autograd: Autograd) -> NodeRef {
        let node = self.node();
        let state = match &*node.lock() {
            State::Realized(b) => State::Realized(b.clone()),
            State::Lazy { .. } => State::Lazy {
                op: Op::Reshape,
                inputs: vec![node.clone()],
            },
        };
        Inner::new(
            self.dtype(),
            self.shape().clone(),
            state,
            node.device,
            autograd,
        )
    }

    /// Gives this tensor (and every clone of it) the value of `value`, as a parameter update
    /// does: graphs recorded earlier keep reading the old value, later ones read the new one.
    /// The tensor stays a leaf that requires grad if it was one, with its accumulated
    /// [`grad`](Tensor::grad); the new value is detached from `value`'s autograd graph.
    /// Nothing is computed: realize the new values together with the loss
    /// ([`crate::realize_all`]) to run a training step as one schedule.
    ///
    /// ```
    /// use metajit::Tensor;
    /// let w = Tensor::from_vec(vec![1.0f32, 2.0], [2]);
    /// let old = &w * 10.0;                       // recorded with the old value
    /// w.assign(&(&w + 1.0));
    /// assert_eq!(w.to_vec::<f32>().unwrap(), vec![2.0, 3.0]);
    /// assert_eq!(old.to_vec::<f32>().unwrap(), vec![10.0, 20.0]);
    /// ```
    ///
    /// # Panics
    /// When `value`'s shape or dtype differs from this tensor's.
    #[track_caller]
    pub fn assign(&self, value: &Tensor) {
        if value.shape() != self.shape() || value.dtype() != self.dtype() {
            panic!(
                "shape mismatch in assign: tensor {} {}, value {} {} (assign keeps the shape and dtype; reshape or cast the value)",
                self.dtype(),
                self.shape(),
                value.dtype(),
                value.shape()
            );
        }
        if let (Some(a), Some(b)) = (self.node().device, value.node().device)
            && a != b
        {
            panic!(
                "device mismatch in assign: tensor {} {} on {a}, value on {b} (move the value with Tensor::to)",
                self.dtype(),
                self.shape()
            );
        }
        let autograd = match &*crate::tensor::lock(&self.node().autograd) {
            Autograd::Leaf(l) => Autograd::Leaf(l.clone()),
            _ => Autograd::None,
        };
        let node = value.same_value_node(autograd);
        *lock(&self.0.node) = node;
    }

    /// A computed copy of this value on `device` (no autograd record), or `None` when the value
    /// is there already. A floating value (made from no data) is copied even to the device it
    /// would run on, which pins it: a later change of the default device does not move it.
    fn copy_to(&self, device: Device) -> Result<Option<Tensor>> {
        let target = device.placement();
        if self.device() == target && self.node().device.is_some() {
            return Ok(None);
        }
        let t = Tensor::from_host_on(self.host_data()?, self.shape().clone(), target);
        crate::exec::place(&t.node())?;
        Ok(Some(t))
    }

    /// Moves this tensor (and every clone of it) to `device`, in place, as PyTorch's
    /// `Module.to` moves parameters: the tensor keeps being the same leaf, and an accumulated
    /// [`grad`](Tensor::grad) moves with it. Graphs recorded earlier keep reading the old
    /// value. An optimizer's state made before the move stays where it was: create optimizers
    /// after moving the model.
    ///
    /// ```
    /// use metajit::{Device, Tensor};
    /// let w = Tensor::ones([2]).requires_grad_(true);
    /// w.move_to(Device::Cpu).unwrap();
    /// assert!(w.requires_grad() && w.device() == Device::Cpu);
    /// ```
    ///
    /// # Errors
    /// When computing the value fails or the device cannot be opened; the tensor is then
    /// unchanged.
    pub fn move_to(&self, device: Device) -> Result<()> {
        let target = device.placement();
        let Some(moved) = self.copy_to(device)? else {
            return Ok(());
        };
        let leaf = lock(&self.0.leaf).clone();
        if let Some(cell) = &leaf {
            let mut grad = lock(&cell.grad);
            if let Some(g) = grad.as_ref() {
                *grad = Some(g.to(target)?);
            }
        }
        let autograd = match &*lock(&self.node().autograd) {
            Autograd::Leaf(l) => Autograd::Leaf(l.clone()),
            _ => Autograd::None,
        };
        let node = moved.same_value_node(autograd);
        *lock(&self.0.node) = node;
        Ok(())
    }

    /// A tensor holding `data` with `shape`, on the default device.
    pub(crate) fn from_host(data: HostData, shape: Shape) -> Tensor {
        Tensor::from_host_on(data, shape, crate::device::default_placement())
    }

    /// A tensor holding `data` with `shape`, on `device` (a placement: not `Auto`).
    pub(crate) fn from_host_on(data: HostData, shape: Shape, device: Device) -> Tensor {
        debug_assert_eq!(data.len(), shape.numel());
        let buf = Arc::new(Buffer::from_host(&data));
        Tensor::from_node(Inner::new(
            data.dtype(),
            shape,
            State::Realized(Storage::Host { buf, device }),
            Some(device),
            Autograd::None,
        ))
    }

    /// A tensor holding a copy of `data` with `shape` (for tests and tools that work with the
    /// meta-op layer's host buffers).
    ///
    /// # Panics
    /// When `data.len()` is not the number of elements of `shape`.
    #[doc(hidden)]
    #[track_caller]
    pub fn from_host_data(data: &HostData, shape: impl Into<Shape>) -> Tensor {
        let shape = shape.into();
        if data.len() != shape.numel() {
            panic!(
                "shape mismatch in from_host_data: {} element(s) cannot fill shape {shape}",
                data.len()
            );
        }
        Tensor::from_host(data.clone(), shape)
    }

    /// A tensor from a vector and a shape (row-major).
    ///
    /// ```
    /// use metajit::Tensor;
    /// let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]);
    /// assert_eq!(t.shape().dims(), &[2, 3]);
    /// ```
    ///
    /// # Panics
    /// When `data.len()` is not the number of elements of `shape`.
    #[track_caller]
    pub fn from_vec<T: Element>(data: Vec<T>, shape: impl Into<Shape>) -> Tensor {
        let shape = shape.into();
        if data.len() != shape.numel() {
            panic!(
                "shape mismatch in from_vec: {} element(s) cannot fill shape {shape} ({} elements)",
                data.len(),
                shape.numel()
            );
        }
        Tensor::from_host(HostData::from_vec(data), shape)
    }

    /// A rank-1 tensor from a slice.
    pub fn from_slice<T: Element>(data: &[T]) -> Tensor {
        let n = data.len();
        Tensor::from_host(HostData::from_vec(data.to_vec()), Shape::new([n]))
    }

    /// A rank-0 tensor holding one value.
    pub fn scalar<T: Element>(v: T) -> Tensor {
        Tensor::from_host(HostData::from_vec(vec![v]), Shape::scalar())
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }

    /// The shape.
    pub fn shape(&self) -> &Shape {
        &self.0.shape
    }

    /// The extents (same as `shape().dims()`).
    pub fn dims(&self) -> &[usize] {
        self.0.shape.dims()
    }

    /// The number of axes.
    pub fn rank(&self) -> usize {
        self.0.shape.rank()
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.0.shape.numel()
    }

    /// The extent of axis `axis` (negative counts from the end).
    #[track_caller]
    pub fn size(&self, axis: isize) -> usize {
        let a = crate::ops::norm_axis("size", axis, self.rank(), self.shape());
        self.dims()[a]
    }

    /// A process-unique id of the node this tensor points at (it changes on
    /// [`assign`](Tensor::assign)).
    pub fn id(&self) -> u64 {
        self.node().id
    }

    /// True when the value has been computed.
    pub fn is_realized(&self) -> bool {
        matches!(*self.node().lock(), State::Realized(_))
    }

    /// Computes this tensor (and any pending tensor it needs that is still referenced
    /// elsewhere) now.
    pub fn realize(&self) -> Result<&Tensor> {
        crate::exec::realize(&[self.node()])?;
        Ok(self)
    }

    /// The computed elements.
    pub(crate) fn storage(&self) -> Result<Storage> {
        let node = self.node();
        crate::exec::realize(std::slice::from_ref(&node))?;
        match &*node.lock() {
            State::Realized(d) => Ok(d.clone()),
            State::Lazy { .. } => unreachable!("realize leaves the tensor realized"),
        }
    }

    /// A host copy of the computed elements.
    pub(crate) fn host_data(&self) -> Result<HostData> {
        self.storage()?.to_host()
    }

    /// The device the tensor's value lives on: the device of its data, of the tensors it was
    /// computed from, or (for a value computed from no data, such as `Tensor::zeros`) the
    /// default device ([`crate::config::set_device`], `METAJIT_DEVICE`).
    ///
    /// ```
    /// use metajit::{Device, Tensor};
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0], [2]);
    /// assert_eq!(x.device(), Device::Cpu); // with METAJIT_DEVICE unset or cpu
    /// ```
    pub fn device(&self) -> Device {
        let node = self.node();
        if let Some(d) = node.device {
            return d;
        }
        match &*node.lock() {
            State::Realized(s) => s.device(),
            State::Lazy { .. } => crate::device::default_placement(),
        }
    }

    /// The value on `device` (`Auto` and `Reference` mean the CPU): this tensor when it is
    /// there already, else a computed copy. Gradients flow back through the copy to this
    /// tensor's device, as in PyTorch.
    ///
    /// ```
    /// use metajit::{Device, Tensor};
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0], [2]);
    /// let y = x.to(Device::Cpu).unwrap();
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![1.0, 2.0]);
    /// ```
    ///
    /// # Errors
    /// When computing this tensor fails, or the device cannot be opened.
    pub fn to(&self, device: Device) -> Result<Tensor> {
        let source = self.device();
        let Some(t) = self.copy_to(device)? else {
            return Ok(self.clone());
        };
        Ok(autograd::with_custom_rule(
            t,
            autograd::Custom::ToDevice(source),
            &[self],
        ))
    }

    /// The elements in row-major order.
    ///
    /// # Panics
    /// When `T` is not the tensor's dtype (cast first with [`Tensor::cast`]).
    #[track_caller]
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        if T::DTYPE != self.dtype() {
            panic!(
                "dtype mismatch in to_vec: tensor of shape {} has dtype {}, asked for {} (cast first)",
                self.shape(),
                self.dtype(),
                T::DTYPE
            );
        }
        Ok(self.host_data()?.to_vec())
    }

    /// The value of a one-element tensor.
    ///
    /// # Panics
    /// When the tensor has more or fewer than one element, or `T` is not its dtype.
    #[track_caller]
    pub fn item<T: Element>(&self) -> Result<T> {
        if self.numel() != 1 {
            panic!(
                "shape mismatch in item: tensor of shape {} has {} elements, not 1",
                self.shape(),
                self.numel()
            );
        }
        let v = self.to_vec::<T>()?;
        Ok(v[0])
    }

    /// A copy of the computed elements as f64, whatever the dtype (for printing and tests).
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        let d = self.host_data()?;
        Ok((0..d.len()).map(|i| d.get(i).to_f64()).collect())
    }
}

impl fmt::Debug for Tensor {
    /// A short summary that computes nothing: `Tensor[f32; 2, 3] (lazy)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.is_realized() {
            "realized"
        } else {
            "lazy"
        };
        write!(f, "Tensor[{}; {}] ({state})", self.dtype(), {
            let d: Vec<String> = self.dims().iter().map(|d| d.to_string()).collect();
            d.join(", ")
        })
    }
}
