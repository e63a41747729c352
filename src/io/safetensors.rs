//! The safetensors reader and writer (see the [module doc](super)).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use ::safetensors::tensor::{Dtype as StDtype, SafeTensors, View};
use half::{bf16, f16};
use metajit_metaops::HostData;

use crate::{DType, Error, Result, Shape, Tensor, realize_all};

/// Writes `tensors` to a safetensors file at `path`, replacing it atomically (a temporary file
/// in the same directory, then a rename). The tensors are computed first, together, in one
/// schedule. Names are kept as given (PyTorch's dotted state-dict names such as
/// `fc1.weight` work as they are).
///
/// ```
/// use metajit::{Tensor, io};
/// let path = std::env::temp_dir().join(format!("metajit-doc-save-{}.safetensors", std::process::id()));
/// let w = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]);
/// let steps = Tensor::scalar(7i64);
/// io::save_safetensors(&path, &[("fc.weight", &w), ("steps", &steps)])?;
/// let loaded = io::load_safetensors(&path)?;
/// assert_eq!(loaded["fc.weight"].to_vec::<f32>()?, vec![1.0, 2.0, 3.0, 4.0]);
/// assert_eq!(loaded["steps"].item::<i64>()?, 7);
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), metajit::Error>(())
/// ```
///
/// # Errors
/// [`Error::Io`] when the file cannot be written; an error from computing a tensor.
///
/// # Panics
/// When a name appears twice or is `__metadata__` (reserved by the format).
#[track_caller]
pub fn save_safetensors(path: impl AsRef<Path>, tensors: &[(&str, &Tensor)]) -> Result<()> {
    let path = path.as_ref();
    check_names("save_safetensors", tensors);
    let refs: Vec<&Tensor> = tensors.iter().map(|(_, t)| *t).collect();
    realize_all(&refs)?;
    let mut raws = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        raws.push((
            name.to_string(),
            Raw {
                dtype: st_dtype(t.dtype()),
                shape: t.dims().to_vec(),
                bytes: le_bytes(&t.host_data()?),
            },
        ));
    }
    let bytes = ::safetensors::tensor::serialize(raws.iter().map(|(n, r)| (n.as_str(), r)), None)
        .map_err(|e| Error::format("safetensors", path, format!("cannot encode: {e}")))?;
    write_atomically(path, &bytes)
}

/// Reads every tensor of a safetensors file, by name. The map is ordered by name (a
/// safetensors header is a JSON object: the file itself has no meaningful order). Each tensor
/// is realized, holding a copy of the file's bytes; metadata (`__metadata__`) is ignored.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::Format`] when it is not a valid
/// safetensors file (a bad header, offsets past the end, sizes that disagree with the shapes)
/// or holds a dtype metajit has no type for. Each names the file.
pub fn load_safetensors(path: impl AsRef<Path>) -> Result<BTreeMap<String, Tensor>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::format("safetensors", path, format!("damaged: {e}")))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.iter() {
        let Some(dtype) = metajit_dtype(view.dtype()) else {
            return Err(Error::format(
                "safetensors",
                path,
                format!(
                    "tensor {name:?} has dtype {:?}, which metajit does not support (it has BOOL, U8, I32, I64, F16, BF16, F32, F64)",
                    view.dtype()
                ),
            ));
        };
        let data = from_le_bytes(dtype, view.data());
        out.insert(
            name.to_string(),
            Tensor::from_host(data, Shape::new(view.shape())),
        );
    }
    Ok(out)
}

/// Loads a safetensors file into existing tensors by name, as `load_state_dict(strict=True)`
/// does: the file must hold exactly these names, each with the tensor's shape and dtype. Each
/// tensor then takes its stored value by [`Tensor::assign`] (so a parameter stays a leaf that
/// requires grad, and every clone of it sees the new value). Nothing is assigned unless
/// everything matches.
///
/// ```
/// use metajit::{Tensor, io};
/// let path = std::env::temp_dir().join(format!("metajit-doc-load-into-{}.safetensors", std::process::id()));
/// io::save_safetensors(&path, &[("w", &Tensor::ones([3]))])?;
/// let w = Tensor::zeros([3]).requires_grad_(true);
/// io::load_into(&[("w", &w)], &path)?;
/// assert_eq!(w.to_vec::<f32>()?, vec![1.0, 1.0, 1.0]);
/// assert!(w.requires_grad());
///
/// let wrong = Tensor::zeros([4]);
/// let err = io::load_into(&[("w", &wrong)], &path).unwrap_err();
/// assert!(err.to_string().contains("tensor \"w\" is f32 [3] in the file, f32 [4] expected"));
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), metajit::Error>(())
/// ```
///
/// # Errors
/// As [`load_safetensors`], and [`Error::Mismatch`] listing every name missing from the file,
/// every name in the file but not in `targets`, and every shape or dtype that differs.
///
/// # Panics
/// When a name appears twice in `targets`.
#[track_caller]
pub fn load_into(targets: &[(&str, &Tensor)], path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    check_names("load_into", targets);
    let loaded = load_safetensors(path)?;
    let mut problems = Vec::new();
    for (name, t) in targets {
        match loaded.get(*name) {
            None => problems.push(format!(
                "missing tensor {name:?} ({} {})",
                t.dtype(),
                t.shape()
            )),
            Some(v) if v.dtype() != t.dtype() || v.shape() != t.shape() => problems.push(format!(
                "tensor {name:?} is {} {} in the file, {} {} expected",
                v.dtype(),
                v.shape(),
                t.dtype(),
                t.shape()
            )),
            Some(_) => {}
        }
    }
    let wanted: BTreeSet<&str> = targets.iter().map(|(n, _)| *n).collect();
    for (name, v) in &loaded {
        if !wanted.contains(name.as_str()) {
            problems.push(format!(
                "unexpected tensor {name:?} ({} {})",
                v.dtype(),
                v.shape()
            ));
        }
    }
    if !problems.is_empty() {
        return Err(Error::Mismatch {
            path: path.to_path_buf(),
            problems,
        });
    }
    // Each value goes to its tensor's device first (all of them before any is assigned).
    let values = targets
        .iter()
        .map(|(name, t)| loaded[*name].to(t.device()))
        .collect::<Result<Vec<_>>>()?;
    for ((_, t), v) in targets.iter().zip(&values) {
        t.assign(v);
    }
    Ok(())
}

/// Panics when a name repeats or is reserved.
#[track_caller]
fn check_names(op: &str, tensors: &[(&str, &Tensor)]) {
    let mut seen = BTreeSet::new();
    for (name, _) in tensors {
        assert!(
            *name != "__metadata__",
            "bad name in {op}: \"__metadata__\" is reserved by the safetensors format"
        );
        assert!(
            seen.insert(*name),
            "duplicate name in {op}: {name:?} appears twice"
        );
    }
}

/// Writes `bytes` to a temporary file next to `path`, then renames it over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let file_name = path
        .file_name()
        .map_or_else(|| "tensors".into(), |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    if let Err(e) = std::fs::write(&tmp, bytes) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io("write", path, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io("write", path, e)
    })
}

/// One tensor's bytes, as the `safetensors` crate's writer wants them.
struct Raw {
    dtype: StDtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &Raw {
    fn dtype(&self) -> StDtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// The safetensors name of a metajit dtype.
fn st_dtype(d: DType) -> StDtype {
    match d {
        DType::Bool => StDtype::BOOL,
        DType::U8 => StDtype::U8,
        DType::I32 => StDtype::I32,
        DType::I64 => StDtype::I64,
        DType::F16 => StDtype::F16,
        DType::BF16 => StDtype::BF16,
        DType::F32 => StDtype::F32,
        DType::F64 => StDtype::F64,
    }
}

/// The metajit dtype of a safetensors dtype, if there is one.
fn metajit_dtype(d: StDtype) -> Option<DType> {
    DType::ALL.into_iter().find(|&m| st_dtype(m) == d)
}

/// The elements as little-endian bytes (bool as one byte, 0 or 1).
fn le_bytes(h: &HostData) -> Vec<u8> {
    fn flat<const N: usize, T: Copy>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
        v.iter().flat_map(|&x| f(x)).collect()
    }
    match h {
        HostData::Bool(v) => v.iter().map(|&b| u8::from(b)).collect(),
        HostData::U8(v) => v.clone(),
        HostData::I32(v) => flat(v, i32::to_le_bytes),
        HostData::I64(v) => flat(v, i64::to_le_bytes),
        HostData::F16(v) => flat(v, f16::to_le_bytes),
        HostData::BF16(v) => flat(v, bf16::to_le_bytes),
        HostData::F32(v) => flat(v, f32::to_le_bytes),
        HostData::F64(v) => flat(v, f64::to_le_bytes),
    }
}

/// Elements of `dtype` from little-endian bytes (any nonzero byte is a true bool). The
/// `safetensors` crate has checked that the length fits the shape and dtype.
fn from_le_bytes(dtype: DType, b: &[u8]) -> HostData {
    fn each<const N: usize, T>(b: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
        b.chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunks_exact yields N bytes")))
            .collect()
    }
    match dtype {
        DType::Bool => HostData::Bool(b.iter().map(|&x| x != 0).collect()),
        DType::U8 => HostData::U8(b.to_vec()),
        DType::I32 => HostData::I32(each(b, i32::from_le_bytes)),
        DType::I64 => HostData::I64(each(b, i64::from_le_bytes)),
        DType::F16 => HostData::F16(each(b, f16::from_le_bytes)),
        DType::BF16 => HostData::BF16(each(b, bf16::from_le_bytes)),
        DType::F32 => HostData::F32(each(b, f32::from_le_bytes)),
        DType::F64 => HostData::F64(each(b, f64::from_le_bytes)),
    }
}
