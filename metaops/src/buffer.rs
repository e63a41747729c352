//! Host buffers: a dense, row-major array of one dtype, as the reference interpreter reads and
//! writes them.

use half::{bf16, f16};

use crate::dtype::{DType, Element, Scalar};

/// The elements of a host tensor, typed.
#[derive(Clone, Debug, PartialEq)]
pub enum HostData {
    /// bool elements.
    Bool(Vec<bool>),
    /// u8 elements.
    U8(Vec<u8>),
    /// i32 elements.
    I32(Vec<i32>),
    /// i64 elements.
    I64(Vec<i64>),
    /// f16 elements.
    F16(Vec<f16>),
    /// bf16 elements.
    BF16(Vec<bf16>),
    /// f32 elements.
    F32(Vec<f32>),
    /// f64 elements.
    F64(Vec<f64>),
}

macro_rules! each {
    ($self:expr, $v:ident => $e:expr) => {
        match $self {
            HostData::Bool($v) => $e,
            HostData::U8($v) => $e,
            HostData::I32($v) => $e,
            HostData::I64($v) => $e,
            HostData::F16($v) => $e,
            HostData::BF16($v) => $e,
            HostData::F32($v) => $e,
            HostData::F64($v) => $e,
        }
    };
}

impl HostData {
    /// `n` copies of `value`.
    pub fn filled(value: Scalar, n: usize) -> HostData {
        match value {
            Scalar::Bool(v) => HostData::Bool(vec![v; n]),
            Scalar::U8(v) => HostData::U8(vec![v; n]),
            Scalar::I32(v) => HostData::I32(vec![v; n]),
            Scalar::I64(v) => HostData::I64(vec![v; n]),
            Scalar::F16(v) => HostData::F16(vec![v; n]),
            Scalar::BF16(v) => HostData::BF16(vec![v; n]),
            Scalar::F32(v) => HostData::F32(vec![v; n]),
            Scalar::F64(v) => HostData::F64(vec![v; n]),
        }
    }

    /// `n` zeros of `dtype`.
    pub fn zeros(dtype: DType, n: usize) -> HostData {
        HostData::filled(Scalar::zero(dtype), n)
    }

    /// Collects scalars (each cast to `dtype`).
    pub fn from_scalars(dtype: DType, values: impl IntoIterator<Item = Scalar>) -> HostData {
        let it = values.into_iter();
        match dtype {
            DType::Bool => HostData::Bool(it.map(bool::from_scalar).collect()),
            DType::U8 => HostData::U8(it.map(u8::from_scalar).collect()),
            DType::I32 => HostData::I32(it.map(i32::from_scalar).collect()),
            DType::I64 => HostData::I64(it.map(i64::from_scalar).collect()),
            DType::F16 => HostData::F16(it.map(f16::from_scalar).collect()),
            DType::BF16 => HostData::BF16(it.map(bf16::from_scalar).collect()),
            DType::F32 => HostData::F32(it.map(f32::from_scalar).collect()),
            DType::F64 => HostData::F64(it.map(f64::from_scalar).collect()),
        }
    }

    /// Wraps a typed vector.
    pub fn from_vec<T: Element>(v: Vec<T>) -> HostData {
        // Going through Scalar keeps this free of unsafe transmutes; it is a host-side copy.
        HostData::from_scalars(T::DTYPE, v.into_iter().map(Element::to_scalar))
    }

    /// The elements converted to `T` (with cast semantics).
    pub fn to_vec<T: Element>(&self) -> Vec<T> {
        (0..self.len())
            .map(|i| T::from_scalar(self.get(i)))
            .collect()
    }

    /// The dtype.
    pub fn dtype(&self) -> DType {
        match self {
            HostData::Bool(_) => DType::Bool,
            HostData::U8(_) => DType::U8,
            HostData::I32(_) => DType::I32,
            HostData::I64(_) => DType::I64,
            HostData::F16(_) => DType::F16,
            HostData::BF16(_) => DType::BF16,
            HostData::F32(_) => DType::F32,
            HostData::F64(_) => DType::F64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        each!(self, v => v.len())
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` as a scalar.
    pub fn get(&self, i: usize) -> Scalar {
        match self {
            HostData::Bool(v) => Scalar::Bool(v[i]),
            HostData::U8(v) => Scalar::U8(v[i]),
            HostData::I32(v) => Scalar::I32(v[i]),
            HostData::I64(v) => Scalar::I64(v[i]),
            HostData::F16(v) => Scalar::F16(v[i]),
            HostData::BF16(v) => Scalar::BF16(v[i]),
            HostData::F32(v) => Scalar::F32(v[i]),
            HostData::F64(v) => Scalar::F64(v[i]),
        }
    }

    /// Sets element `i` (the value is cast to this buffer's dtype).
    pub fn set(&mut self, i: usize, s: Scalar) {
        match self {
            HostData::Bool(v) => v[i] = bool::from_scalar(s),
            HostData::U8(v) => v[i] = u8::from_scalar(s),
            HostData::I32(v) => v[i] = i32::from_scalar(s),
            HostData::I64(v) => v[i] = i64::from_scalar(s),
            HostData::F16(v) => v[i] = f16::from_scalar(s),
            HostData::BF16(v) => v[i] = bf16::from_scalar(s),
            HostData::F32(v) => v[i] = f32::from_scalar(s),
            HostData::F64(v) => v[i] = f64::from_scalar(s),
        }
    }
}
