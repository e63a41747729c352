//! Saving and loading tensors: the [safetensors](https://github.com/huggingface/safetensors)
//! format, PyTorch's way of storing state dicts, read and written by the `safetensors` crate.
//!
//! A file is a little-endian `u64` header length, a JSON header naming each tensor with its
//! dtype, shape and byte range, then the raw bytes: row-major, little-endian. The dtypes map
//! one to one — `BOOL`/`U8`/`I32`/`I64`/`F16`/`BF16`/`F32`/`F64` are metajit's
//! bool/u8/i32/i64/f16/bf16/f32/f64 and PyTorch's `torch.bool`/`uint8`/`int32`/`int64`/
//! `float16`/`bfloat16`/`float32`/`float64` — so a file written here loads with
//! `safetensors.torch.load_file` and the other way round. A file holding another dtype (`I8`,
//! `U16`, the `F8` kinds, ...) is an error, not a silent conversion.
//!
//! Failures of the file (missing, unwritable, damaged, an unsupported dtype) are
//! [`Error`](crate::Error)s naming it; misuse (the same name twice) panics at the caller.

mod safetensors;

pub use self::safetensors::{load_into, load_safetensors, save_safetensors};
