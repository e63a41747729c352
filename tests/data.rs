//! The data module: MNIST read through `metajit::data` against the files decoded independently
//! here (flate2 and a hand-parsed header), damaged files, and the batch loader (determinism by
//! seed, drop_last, every sample once an epoch, no compile per batch).
//!
//! The executor's counters are process-wide: tests that compute take `LOCK`, so the counting
//! test sees only its own work.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use metajit::data::{DataLoader, MNIST_MEAN, MNIST_STD, Mnist, MnistSplit, read_idx};
use metajit::{Error, Tensor};

const MNIST_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist");

static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn mnist() -> &'static Mnist {
    static M: OnceLock<Mnist> = OnceLock::new();
    M.get_or_init(|| Mnist::load(MNIST_DIR).expect("load data/mnist"))
}

/// A file of data/mnist decompressed here, independently of the loader.
fn raw(name: &str) -> Vec<u8> {
    let gz = std::fs::read(Path::new(MNIST_DIR).join(name)).expect("read");
    let mut out = Vec::new();
    GzDecoder::new(&gz[..])
        .read_to_end(&mut out)
        .expect("gunzip");
    out
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("metajit-data-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

/// An uncompressed IDX file of u8 elements.
fn idx(dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(payload);
    b
}

#[test]
fn counts_labels_and_pixels_match_the_files() {
    let m = mnist();
    assert_eq!((m.train.len(), m.test.len()), (60_000, 10_000));
    // data/mnist/README.md: the first labels and the label counts.
    assert_eq!(&m.train.labels_u8()[..10], &[5, 0, 4, 1, 9, 2, 1, 3, 1, 4]);
    assert_eq!(&m.test.labels_u8()[..10], &[7, 2, 1, 0, 4, 1, 4, 9, 5, 9]);
    let count = |l: &[u8]| {
        (0..10u8)
            .map(|d| l.iter().filter(|&&x| x == d).count())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        count(m.train.labels_u8()),
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    assert_eq!(
        count(m.test.labels_u8()),
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );

    for (split, images, labels) in [
        (
            &m.train,
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
        ),
        (
            &m.test,
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        ),
    ] {
        let img = raw(images);
        let lab = raw(labels);
        assert_eq!(
            (be32(&img, 0), be32(&img, 8), be32(&img, 12)),
            (2051, 28, 28)
        );
        assert_eq!(be32(&img, 4) as usize, split.len());
        assert_eq!((be32(&lab, 0), be32(&lab, 4) as usize), (2049, split.len()));
        assert_eq!(split.images_u8(), &img[16..]);
        assert_eq!(split.labels_u8(), &lab[8..]);
        let sum: u64 = img[16..].iter().map(|&p| u64::from(p)).sum();
        let loaded: u64 = split.images_u8().iter().map(|&p| u64::from(p)).sum();
        assert_eq!(loaded, sum);
        assert_eq!(split.image(split.len() - 1), &img[img.len() - 784..]);
    }
    // README: the training mean is 33.3184 / 255 = 0.1307.
    let sum: u64 = m.train.images_u8().iter().map(|&p| u64::from(p)).sum();
    let mean = sum as f64 / (60_000.0 * 784.0);
    assert!((mean - 33.3184).abs() < 1e-4, "{mean}");
}

#[test]
fn image_and_label_tensors_are_normalised_and_realized() {
    let _g = lock();
    let m = mnist();
    let (images, labels) = (m.test.images(), m.test.labels());
    assert!(images.is_realized() && labels.is_realized());
    assert_eq!(images.dims(), &[10_000, 1, 28, 28]);
    assert_eq!(labels.dims(), &[10_000]);
    assert_eq!(labels.dtype(), metajit::DType::I64);
    let img = raw("t10k-images-idx3-ubyte.gz");
    let want: Vec<f32> = img[16..16 + 2 * 784]
        .iter()
        .map(|&p| (f32::from(p) / 255.0 - 0.1307) / 0.3081)
        .collect();
    let got = images.narrow(0, 0, 2).to_vec::<f32>().expect("images");
    assert_eq!(got, want);
    assert_eq!((MNIST_MEAN, MNIST_STD), (0.1307, 0.3081));
    // Over the training set the normalised pixels have mean ~0 and std ~1.
    let t = m.train.images();
    let mean = t.mean_all().item::<f32>().expect("mean");
    assert!(mean.abs() < 1e-3, "{mean}");
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let dir = temp_dir("missing");
    let err = Mnist::load(&dir).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("cannot read ") && msg.contains("train-images-idx3-ubyte.gz"),
        "{msg}"
    );
}

#[test]
fn uncompressed_files_load_too() {
    let dir = temp_dir("plain");
    let images = idx(&[2, 28, 28], &[7; 2 * 784]);
    std::fs::write(dir.join("img"), &images).expect("write");
    std::fs::write(dir.join("lab.gz"), gzip(&idx(&[2], &[3, 9]))).expect("write");
    let s = MnistSplit::load(&dir.join("img"), &dir.join("lab.gz")).expect("load");
    assert_eq!(s.len(), 2);
    assert_eq!(s.labels_u8(), &[3, 9]);
    assert_eq!(s.image(1), &[7; 784]);
    let i = read_idx(dir.join("img")).expect("read_idx");
    assert_eq!((i.magic, i.dims.as_slice()), (2051, &[2, 28, 28][..]));
}

#[test]
fn damaged_files_are_format_errors_naming_the_file() {
    let dir = temp_dir("damaged");
    let labels = dir.join("labels.gz");
    std::fs::write(&labels, gzip(&idx(&[3], &[1, 2, 3]))).expect("write");
    let images_ok = idx(&[3, 28, 28], &[0; 3 * 784]);
    let gz_ok = gzip(&images_ok);

    let mut corrupted = gz_ok.clone();
    let mid = corrupted.len() / 2;
    for b in &mut corrupted[mid..mid + 8] {
        *b ^= 0x5a;
    }
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated_gzip.gz",
            gz_ok[..gz_ok.len() / 2].to_vec(),
            "damaged gzip stream",
        ),
        ("corrupted_gzip.gz", corrupted, "damaged gzip stream"),
        (
            "wrong_magic.gz",
            gzip(&idx(&[3], &[1, 2, 3])),
            "wrong magic 2049 (0x00000801): an mnist images file has 2051",
        ),
        (
            "not_idx.gz",
            gzip(b"\x01\x02\x08\x03hello"),
            "wrong magic 0x01020803: an idx file starts with two zero bytes",
        ),
        (
            "truncated_payload.gz",
            gzip(&images_ok[..images_ok.len() - 100]),
            "truncated payload: extents [3, 28, 28] need 2352 bytes after the header, found 2252",
        ),
        (
            "short_header.gz",
            gzip(&images_ok[..10]),
            "truncated header: rank 3 needs 16 bytes, the file has 10",
        ),
        (
            "wrong_side.gz",
            gzip(&idx(&[3, 28, 27], &[0; 3 * 28 * 27])),
            "extents [3, 28, 27]: an mnist images file has [N, 28, 28]",
        ),
        (
            "too_many.gz",
            gzip(&idx(&[4, 28, 28], &[0; 4 * 784])),
            "3 labels for the 4 images of",
        ),
    ];
    for (name, content, reason) in cases {
        let path = dir.join(name);
        std::fs::write(&path, content).expect("write");
        let err = MnistSplit::load(&path, &labels).unwrap_err();
        assert!(matches!(err, Error::Format { .. }), "{name}: {err:?}");
        let msg = err.to_string();
        let named = if name == "too_many.gz" {
            "labels.gz"
        } else {
            name
        };
        assert!(msg.contains(named), "{name}: {msg}");
        assert!(msg.contains(reason), "{name}: {msg}");
    }
    // A label that is not a digit.
    let bad_labels = dir.join("bad_labels.gz");
    std::fs::write(&bad_labels, gzip(&idx(&[3], &[1, 12, 3]))).expect("write");
    std::fs::write(dir.join("ok.gz"), &gz_ok).expect("write");
    let msg = MnistSplit::load(&dir.join("ok.gz"), &bad_labels)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("bad_labels.gz") && msg.contains("label 12 at index 1 is not a digit"),
        "{msg}"
    );
}

/// A loader over `n` samples whose input and target are both the sample's index.
fn index_loader(n: usize, batch: usize) -> DataLoader {
    let x = Tensor::from_vec((0..n).map(|i| i as f32).collect(), [n, 1]);
    let y = Tensor::from_vec((0..n as i64).collect(), [n]);
    DataLoader::new(&x, &y, batch).expect("loader")
}

/// The targets of every batch of an epoch, checking that inputs stay paired with them.
fn epoch_targets(loader: &DataLoader, epoch: u64) -> Vec<Vec<i64>> {
    loader
        .epoch(epoch)
        .map(|(x, y)| {
            let (x, y) = (x.to_vec::<f32>().expect("x"), y.to_vec::<i64>().expect("y"));
            assert_eq!(x, y.iter().map(|&v| v as f32).collect::<Vec<_>>());
            y
        })
        .collect()
}

#[test]
fn the_order_is_a_permutation_fixed_by_seed_and_epoch() {
    let _g = lock();
    let n = 50;
    let a = index_loader(n, 8).shuffle(42);
    let b = index_loader(n, 8).shuffle(42);
    let c = index_loader(n, 8).shuffle(43);
    assert_eq!(a.order(0), b.order(0));
    assert_eq!(a.order(3), b.order(3));
    assert_ne!(a.order(0), a.order(1));
    assert_ne!(a.order(0), c.order(0));
    assert_eq!(index_loader(n, 8).order(5), (0..n).collect::<Vec<_>>());
    for epoch in 0..3 {
        let batches = epoch_targets(&a, epoch);
        assert_eq!(batches.len(), 7);
        assert!(batches[..6].iter().all(|b| b.len() == 8) && batches[6].len() == 2);
        let flat: Vec<i64> = batches.concat();
        assert_eq!(
            flat,
            a.order(epoch).iter().map(|&i| i as i64).collect::<Vec<_>>()
        );
        let mut sorted = flat;
        sorted.sort();
        assert_eq!(
            sorted,
            (0..n as i64).collect::<Vec<_>>(),
            "every sample once"
        );
    }
    assert_eq!(epoch_targets(&a, 1), epoch_targets(&b, 1));
}

#[test]
fn drop_last_drops_only_a_short_batch() {
    let _g = lock();
    let keep = index_loader(10, 4).shuffle(1);
    let drop = index_loader(10, 4).shuffle(1).drop_last(true);
    assert_eq!((keep.num_batches(), drop.num_batches()), (3, 2));
    assert_eq!(keep.epoch(0).len(), 3);
    let kept = epoch_targets(&keep, 0);
    let dropped = epoch_targets(&drop, 0);
    assert_eq!(kept.iter().map(Vec::len).collect::<Vec<_>>(), [4, 4, 2]);
    assert_eq!(dropped, kept[..2]);
    // An exact multiple drops nothing; fewer samples than a batch give no batch at all.
    assert_eq!(index_loader(8, 4).drop_last(true).num_batches(), 2);
    assert_eq!(index_loader(3, 4).drop_last(true).epoch(0).count(), 0);
    assert_eq!(index_loader(3, 4).epoch(0).count(), 1);
}

#[test]
#[should_panic(expected = "bad batch size in DataLoader::new: 0")]
fn a_zero_batch_size_panics() {
    let _ = index_loader(3, 0);
}

#[test]
#[should_panic(expected = "shape mismatch in DataLoader::new: inputs [3, 1], targets [4]")]
fn different_lengths_panic() {
    let _ = DataLoader::new(&Tensor::zeros([3, 1]), &Tensor::zeros([4]), 2);
}

#[test]
fn mnist_batches_are_the_shuffled_images_and_compile_nothing_after_the_first() {
    let _g = lock();
    let m = mnist();
    let loader = m.train.loader(64).expect("loader").shuffle(7);
    assert_eq!(loader.num_batches(), 938); // 937 full batches and one of 32
    let order = loader.order(0);
    let step = |x: &Tensor, y: &Tensor| {
        // A stand-in for a training step: one value from the images and one from the labels.
        let s = (x * 2.0).sum_all();
        let l = y.cast(metajit::DType::F32).sum_all();
        metajit::realize_all(&[&s, &l]).expect("step");
        (s, l)
    };
    let mut batches = loader.epoch(0);
    let (x, y) = batches.next().expect("a batch");
    assert_eq!((x.dims(), y.dims()), (&[64, 1, 28, 28][..], &[64][..]));
    // The first batch holds the normalised images of the first 64 shuffled indices.
    let want_y: Vec<i64> = order[..64]
        .iter()
        .map(|&i| i64::from(m.train.labels_u8()[i]))
        .collect();
    assert_eq!(y.to_vec::<i64>().expect("labels"), want_y);
    let want_x: Vec<f32> = order[..64]
        .iter()
        .flat_map(|&i| {
            m.train
                .image(i)
                .iter()
                .map(|&p| (f32::from(p) / 255.0 - 0.1307) / 0.3081)
        })
        .collect();
    assert_eq!(x.to_vec::<f32>().expect("images"), want_x);
    // The first step on a lazy batch compiles and schedules; the rest must not.
    let (x, y) = batches.next().expect("a second batch");
    step(&x, &y);

    let before = metajit::stats();
    let mut runs = 0;
    for (k, (x, y)) in batches.enumerate() {
        // Twenty full batches, then the short last one (a new batch size).
        if k < 20 || x.dims()[0] != 64 {
            let (_, l) = step(&x, &y);
            runs += 1;
            if x.dims()[0] != 64 {
                assert_eq!(x.dims(), &[32, 1, 28, 28]);
                let want: i64 = order[60_000 - 32..]
                    .iter()
                    .map(|&i| i64::from(m.train.labels_u8()[i]))
                    .sum();
                assert_eq!(l.item::<f32>().expect("sum"), want as f32);
            }
        }
    }
    let after = metajit::stats();
    assert_eq!(runs, 21);
    assert_eq!(
        after.kernels_compiled, before.kernels_compiled,
        "kernels compiled after the first batch"
    );
    assert_eq!(
        after.plan_misses, before.plan_misses,
        "plans scheduled after the first batch"
    );
    assert!(after.kernel_runs > before.kernel_runs);
}
