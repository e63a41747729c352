//! MNIST: 60,000 training and 10,000 test images of handwritten digits, 28×28 `u8`, with
//! labels 0–9, read from the four standard IDX files (gzipped or not).
//!
//! [`Mnist::load`] checks every header (magic number, extents), that images and labels agree in
//! number and that every label is a digit; a failure is an [`Error`] naming the file.

use std::path::{Path, PathBuf};

use super::idx::{Idx, read_idx};
use super::loader::DataLoader;
use crate::{Error, Result, Tensor};

/// The mean of MNIST's training pixels scaled to `[0, 1]` (the usual normalisation constant).
pub const MNIST_MEAN: f32 = 0.1307;
/// The standard deviation of MNIST's training pixels scaled to `[0, 1]`.
pub const MNIST_STD: f32 = 0.3081;
/// The side of an MNIST image in pixels.
pub const MNIST_SIDE: usize = 28;

/// The magic number of an IDX file of `u8` images (rank 3).
const IMAGES_MAGIC: u32 = 2051;
/// The magic number of an IDX file of `u8` labels (rank 1).
const LABELS_MAGIC: u32 = 2049;

/// MNIST's training and test sets.
///
/// ```no_run
/// use metajit::data::Mnist;
/// let mnist = Mnist::load("data/mnist")?;
/// assert_eq!((mnist.train.len(), mnist.test.len()), (60_000, 10_000));
/// let loader = mnist.train.loader(64)?.shuffle(0).drop_last(true);
/// for (images, labels) in loader.epoch(0) {
///     assert_eq!((images.dims(), labels.dims()), (&[64, 1, 28, 28][..], &[64][..]));
///     # break;
/// }
/// # Ok::<(), metajit::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Mnist {
    /// The 60,000 training images.
    pub train: MnistSplit,
    /// The 10,000 test images.
    pub test: MnistSplit,
}

/// One of MNIST's sets: images and their labels, as read from the files.
#[derive(Clone, Debug)]
pub struct MnistSplit {
    images: Vec<u8>,
    labels: Vec<u8>,
}

impl Mnist {
    /// The standard file names, images then labels, for the training and the test set. Each is
    /// looked up with a `.gz` suffix first, then without.
    pub const FILES: [[&'static str; 2]; 2] = [
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"],
        ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"],
    ];

    /// Reads the four MNIST files from `dir` (named as in [`Mnist::FILES`], gzipped or not).
    ///
    /// # Errors
    /// [`Error::Io`] when a file is missing or unreadable (naming the `.gz` path when neither
    /// form exists); [`Error::Format`] when a file is damaged or truncated, has the wrong magic
    /// number or extents, holds a label above 9, or its images and labels differ in number.
    pub fn load(dir: impl AsRef<Path>) -> Result<Mnist> {
        let dir = dir.as_ref();
        let split =
            |[images, labels]: [&str; 2]| MnistSplit::load(&find(dir, images), &find(dir, labels));
        Ok(Mnist {
            train: split(Mnist::FILES[0])?,
            test: split(Mnist::FILES[1])?,
        })
    }
}

/// `dir/name.gz` if it exists, else `dir/name` if that does, else `dir/name.gz` (so that the
/// error names the usual file).
fn find(dir: &Path, name: &str) -> PathBuf {
    let gz = dir.join(format!("{name}.gz"));
    let plain = dir.join(name);
    if !gz.exists() && plain.exists() {
        plain
    } else {
        gz
    }
}

/// Reads an IDX file and checks its magic number and, where given, its extents.
fn read_checked(path: &Path, magic: u32, what: &str, dims: &[Option<usize>]) -> Result<Idx> {
    let idx = read_idx(path)?;
    let bad = |reason: String| Error::format("idx", path, reason);
    if idx.magic != magic {
        return Err(bad(format!(
            "wrong magic {} ({:#010x}): an mnist {what} file has {magic} ({magic:#010x})",
            idx.magic, idx.magic
        )));
    }
    let fits = idx.dims.len() == dims.len()
        && idx
            .dims
            .iter()
            .zip(dims)
            .all(|(d, e)| e.is_none_or(|e| e == *d));
    if !fits {
        let want: Vec<String> = dims
            .iter()
            .map(|e| e.map_or("N".to_string(), |e| e.to_string()))
            .collect();
        return Err(bad(format!(
            "extents {:?}: an mnist {what} file has [{}]",
            idx.dims,
            want.join(", ")
        )));
    }
    Ok(idx)
}

impl MnistSplit {
    /// Reads one set from its image and label files (gzipped or not).
    ///
    /// # Errors
    /// As [`Mnist::load`].
    pub fn load(images: &Path, labels: &Path) -> Result<MnistSplit> {
        let side = Some(MNIST_SIDE);
        let img = read_checked(images, IMAGES_MAGIC, "images", &[None, side, side])?;
        let lab = read_checked(labels, LABELS_MAGIC, "labels", &[None])?;
        if img.dims[0] != lab.dims[0] {
            return Err(Error::format(
                "idx",
                labels,
                format!(
                    "{} labels for the {} images of {}",
                    lab.dims[0],
                    img.dims[0],
                    images.display()
                ),
            ));
        }
        if let Some(i) = lab.data.iter().position(|&l| l > 9) {
            return Err(Error::format(
                "idx",
                labels,
                format!("label {} at index {i} is not a digit 0-9", lab.data[i]),
            ));
        }
        Ok(MnistSplit {
            images: img.data,
            labels: lab.data,
        })
    }

    /// The number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the set has no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Every image's pixels, `[N, 28, 28]` row-major, 0 (background) to 255 (ink).
    pub fn images_u8(&self) -> &[u8] {
        &self.images
    }

    /// Every label, 0–9.
    pub fn labels_u8(&self) -> &[u8] {
        &self.labels
    }

    /// The pixels of image `i`, 28×28 row-major.
    ///
    /// # Panics
    /// When `i` is out of range.
    #[track_caller]
    pub fn image(&self, i: usize) -> &[u8] {
        let n = MNIST_SIDE * MNIST_SIDE;
        assert!(
            i < self.len(),
            "index out of range in MnistSplit::image: {i} for {} images",
            self.len()
        );
        &self.images[i * n..(i + 1) * n]
    }

    /// The images as a realized `[N, 1, 28, 28]` f32 tensor, normalised as torchvision's
    /// `ToTensor()` then `Normalize((0.1307,), (0.3081,))` do: `(p / 255 - MNIST_MEAN) / MNIST_STD`
    /// in f32.
    pub fn images(&self) -> Tensor {
        let v: Vec<f32> = self
            .images
            .iter()
            .map(|&p| (p as f32 / 255.0 - MNIST_MEAN) / MNIST_STD)
            .collect();
        Tensor::from_vec(v, [self.len(), 1, MNIST_SIDE, MNIST_SIDE])
    }

    /// The labels as a realized `[N]` i64 tensor (the type `cross_entropy` takes).
    pub fn labels(&self) -> Tensor {
        let v: Vec<i64> = self.labels.iter().map(|&l| l as i64).collect();
        Tensor::from_vec(v, [self.len()])
    }

    /// A [`DataLoader`] over [`images`](MnistSplit::images) and [`labels`](MnistSplit::labels)
    /// in batches of `batch_size`, in order, keeping a last short batch (chain
    /// [`shuffle`](DataLoader::shuffle) and [`drop_last`](DataLoader::drop_last) to change that).
    ///
    /// # Errors
    /// As [`DataLoader::new`].
    ///
    /// # Panics
    /// When `batch_size` is 0.
    #[track_caller]
    pub fn loader(&self, batch_size: usize) -> Result<DataLoader> {
        DataLoader::new(&self.images(), &self.labels(), batch_size)
    }
}
