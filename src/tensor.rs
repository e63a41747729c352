//! The lazy [`Tensor`]: a handle to one node of the unified graph.
//!
//! Every op call checks its arguments at once (panicking at the caller's line on misuse) and
//! records a meta-op node; nothing is computed until a value is needed (`to_vec`, `item`,
//! printing, [`Tensor::realize`]) or eager mode is on. Realizing replaces a node's op by its
//! buffer, which drops the references to its inputs, so memory is freed as soon as nothing
//! refers to it.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use metajit_codegen::buffer::Buffer;
use metajit_metaops::{DType, Element, Graph, HostData, Node, Op, Shape};

use crate::config;
use crate::error::Result;

/// A multi-dimensional array of one dtype, computed lazily.
///
/// Cloning a `Tensor` is cheap and shares the node (like cloning an `Rc`).
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    pub(crate) id: u64,
    pub(crate) dtype: DType,
    pub(crate) shape: Shape,
    pub(crate) state: Mutex<State>,
}

/// What a tensor currently is: a pending op over other tensors, or a computed buffer.
pub(crate) enum State {
    Lazy { op: Op, inputs: Vec<Tensor> },
    Realized(Arc<Buffer>),
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-written (every write is one
        // assignment), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Inner {
    /// Drops the chain of pending inputs iteratively: a lazy graph can be arbitrarily deep
    /// (`total = total + loss` over 100k steps), and the default recursive drop would overflow
    /// the stack.
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        let State::Lazy { inputs, .. } = state else {
            return;
        };
        let mut stack = std::mem::take(inputs);
        while let Some(t) = stack.pop() {
            // Only the last owner unlinks a node's inputs; others just release their count.
            if let Ok(mut inner) = Arc::try_unwrap(t.0)
                && let State::Lazy { inputs, .. } =
                    inner.state.get_mut().unwrap_or_else(|p| p.into_inner())
            {
                stack.append(inputs);
            }
        }
    }
}

impl Tensor {
    fn with_state(dtype: DType, shape: Shape, state: State) -> Tensor {
        Tensor(Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            dtype,
            shape,
            state: Mutex::new(state),
        }))
    }

    /// Records `op` over `inputs` as a new node of `dtype` and `shape`. The node is checked
    /// against the verifier's rules; a failure here is a bug in the op's lowering (callers
    /// check user-facing rules first, with better messages), reported with the op's text.
    #[track_caller]
    pub(crate) fn from_op(op: Op, inputs: &[&Tensor], dtype: DType, shape: Shape) -> Tensor {
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
            op,
            inputs: ids,
            dtype,
            shape,
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
        let t = Tensor::with_state(
            node.dtype,
            node.shape,
            State::Lazy {
                op: node.op,
                inputs: inputs.iter().map(|t| (*t).clone()).collect(),
            },
        );
        if config::eager_now()
            && let Err(e) = t.realize()
        {
            panic!("eager execution failed: {e}");
        }
        t
    }

    /// A tensor holding `data` with `shape`.
    pub(crate) fn from_host(data: HostData, shape: Shape) -> Tensor {
        debug_assert_eq!(data.len(), shape.numel());
        Tensor::with_state(
            data.dtype(),
            shape,
            State::Realized(Arc::new(Buffer::from_host(&data))),
        )
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

    /// A process-unique id of this tensor's node.
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// True when the value has been computed.
    pub fn is_realized(&self) -> bool {
        matches!(*self.0.lock(), State::Realized(_))
    }

    /// Computes this tensor (and any pending tensor it needs that is still referenced
    /// elsewhere) now.
    pub fn realize(&self) -> Result<&Tensor> {
        crate::exec::realize(&[self])?;
        Ok(self)
    }

    /// The computed buffer.
    pub(crate) fn buffer(&self) -> Result<Arc<Buffer>> {
        self.realize()?;
        match &*self.0.lock() {
            State::Realized(d) => Ok(d.clone()),
            State::Lazy { .. } => unreachable!("realize leaves the tensor realized"),
        }
    }

    /// A host copy of the computed elements.
    pub(crate) fn host_data(&self) -> Result<HostData> {
        Ok(self.buffer()?.to_host())
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
