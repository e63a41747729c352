//! safetensors I/O: a round trip of every dtype, the file written by Python's `safetensors`
//! package (tests/fixtures/reference.safetensors, made by make_safetensors_fixture.py in the
//! same folder), loading into existing tensors, and every error case.

use std::path::PathBuf;

use metajit::{DType, Error, Tensor, io};

/// A fresh path in the temp dir, unique to this process and test.
fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("metajit-safetensors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

/// The fixture's tensors, as make_safetensors_fixture.py's `expected()` builds them in numpy.
fn expected() -> Vec<(&'static str, Tensor)> {
    vec![
        (
            "fc1.weight",
            // np.arange(12, dtype=np.float32).reshape(3, 4) / 4 - 1
            Tensor::from_vec((0..12).map(|v| v as f32 / 4.0 - 1.0).collect(), [3, 4]),
        ),
        ("fc1.bias", Tensor::from_vec(vec![0.1f64, -2.5, 1e300], [3])),
        ("ids", Tensor::from_vec(vec![-(1i64 << 40), 0, 7], [1, 3])),
        ("step", Tensor::scalar(-5i32)),
        (
            "mask",
            Tensor::from_vec(vec![true, false, true, true], [2, 2]),
        ),
        ("pixels", Tensor::from_vec(vec![0u8, 1, 128, 255], [4])),
        (
            "half",
            Tensor::from_vec(
                [1.5f32, -0.25, 65504.0].map(half::f16::from_f32).to_vec(),
                [3],
            ),
        ),
        (
            "cube",
            Tensor::from_vec((0..24).map(|v| v - 12).collect::<Vec<i32>>(), [2, 3, 4]),
        ),
        ("empty", Tensor::from_vec(Vec::<f32>::new(), [0, 3])),
    ]
}

/// Asserts that two tensors have the same dtype, shape and element bits.
#[track_caller]
fn assert_same(name: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.dtype(), want.dtype(), "dtype of {name}");
    assert_eq!(got.shape(), want.shape(), "shape of {name}");
    let bits = |t: &Tensor| -> Vec<u64> {
        t.to_f64_vec()
            .expect("realize")
            .into_iter()
            .map(f64::to_bits)
            .collect()
    };
    let (g, w) = (bits(got), bits(want));
    assert_eq!(g.len(), w.len(), "length of {name}");
    assert_eq!(g, w, "values of {name}");
}

#[test]
fn loads_the_file_python_safetensors_wrote() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/reference.safetensors"
    );
    let loaded = io::load_safetensors(path).expect("load the fixture");
    let want = expected();
    let names: Vec<&str> = loaded.keys().map(String::as_str).collect();
    let mut want_names: Vec<&str> = want.iter().map(|(n, _)| *n).collect();
    want_names.sort();
    assert_eq!(names, want_names);
    for (name, w) in &want {
        assert_same(name, &loaded[*name], w);
    }
}

#[test]
fn round_trip_of_every_dtype() {
    let f = [0.0f64, -0.0, 1.5, -2.25, f64::INFINITY, f64::NAN, 1e-3, 3.0];
    let tensors: Vec<(String, Tensor)> = DType::ALL
        .into_iter()
        .map(|d| {
            let t = Tensor::from_vec(f.to_vec(), [2, 1, 4]);
            // Casting f64 to each dtype gives eight values of that dtype (ints truncate and
            // map NaN/inf per metajit's cast; the round trip must keep whatever bits they are).
            (format!("t_{}", d.name()), t.cast(d))
        })
        .collect();
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let path = temp_path("every_dtype.safetensors");
    io::save_safetensors(&path, &refs).expect("save");
    let loaded = io::load_safetensors(&path).expect("load");
    assert_eq!(loaded.len(), DType::ALL.len());
    for (name, t) in &tensors {
        assert_same(name, &loaded[name], t);
    }
    // A rank-0 tensor and a lazy one (computed by the save).
    let lazy = Tensor::from_vec(vec![1.0f32, 2.0], [2]).exp();
    let path = temp_path("scalar_and_lazy.safetensors");
    io::save_safetensors(&path, &[("s", &Tensor::scalar(3u8)), ("lazy", &lazy)]).expect("save");
    let loaded = io::load_safetensors(&path).expect("load");
    assert_eq!(loaded["s"].dims(), &[] as &[usize]);
    assert_eq!(loaded["s"].item::<u8>().expect("item"), 3);
    assert_same("lazy", &loaded["lazy"], &lazy);
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let path = temp_path("does_not_exist.safetensors");
    let err = io::load_safetensors(&path).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with("cannot read "), "{msg}");
    assert!(msg.contains("does_not_exist.safetensors"), "{msg}");

    let dir = temp_path("no_such_dir").join("x.safetensors");
    let err = io::save_safetensors(&dir, &[("a", &Tensor::ones([1]))]).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("x.safetensors"), "{err}");
}

#[test]
fn a_damaged_file_is_a_format_error_naming_it() {
    let good = temp_path("good.safetensors");
    io::save_safetensors(&good, &[("w", &Tensor::ones([4, 4]))]).expect("save");
    let bytes = std::fs::read(&good).expect("read");

    let cases: [(&str, Vec<u8>); 4] = [
        ("truncated.safetensors", bytes[..bytes.len() - 5].to_vec()),
        ("header_only.safetensors", bytes[..6].to_vec()),
        ("empty.safetensors", Vec::new()),
        ("not_json.safetensors", {
            let mut b = bytes.clone();
            b[8] = b'#'; // the header's opening brace
            b
        }),
    ];
    for (name, content) in cases {
        let path = temp_path(name);
        std::fs::write(&path, content).expect("write");
        let err = io::load_safetensors(&path).unwrap_err();
        assert!(matches!(err, Error::Format { .. }), "{name}: {err:?}");
        let msg = err.to_string();
        assert!(
            msg.starts_with("bad safetensors file ") && msg.contains(name),
            "{msg}"
        );
    }
}

#[test]
fn an_unsupported_dtype_is_an_error_naming_the_tensor_and_file() {
    // A valid file, written by hand, holding an I16 tensor (metajit has no i16).
    let header = br#"{"a":{"dtype":"I16","shape":[2],"data_offsets":[0,4]}}"#;
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header);
    file.extend_from_slice(&[1, 0, 2, 0]);
    let path = temp_path("int16.safetensors");
    std::fs::write(&path, file).expect("write");
    let err = io::load_safetensors(&path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Format { .. }), "{err:?}");
    assert!(
        msg.contains("int16.safetensors") && msg.contains("\"a\"") && msg.contains("I16"),
        "{msg}"
    );
}

#[test]
fn load_into_assigns_by_name_and_keeps_parameters_leaves() {
    let path = temp_path("state.safetensors");
    let w = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]);
    let b = Tensor::from_vec(vec![-1i64, 1], [2]);
    io::save_safetensors(&path, &[("layer.weight", &w), ("layer.bias", &b)]).expect("save");

    let pw = Tensor::zeros([2, 3]).requires_grad_(true);
    let alias = pw.clone();
    let pb = Tensor::zeros_dtype([2], DType::I64);
    io::load_into(&[("layer.weight", &pw), ("layer.bias", &pb)], &path).expect("load_into");
    assert!(pw.requires_grad());
    assert_same("weight", &pw, &w);
    assert_same("alias", &alias, &w);
    assert_same("bias", &pb, &b);
}

#[test]
fn load_into_reports_every_mismatch_and_assigns_nothing() {
    let path = temp_path("mismatch.safetensors");
    io::save_safetensors(
        &path,
        &[
            ("a", &Tensor::ones([2])),
            ("b", &Tensor::ones([2, 2])),
            ("c", &Tensor::ones([3])),
            ("extra", &Tensor::ones([1])),
        ],
    )
    .expect("save");
    let a = Tensor::zeros([2]);
    let b = Tensor::zeros([4]);
    let c = Tensor::zeros_dtype([3], DType::F64);
    let d = Tensor::zeros([5]);
    let err = io::load_into(&[("a", &a), ("b", &b), ("c", &c), ("d", &d)], &path).unwrap_err();
    let Error::Mismatch { problems, .. } = &err else {
        panic!("expected a mismatch, got {err:?}");
    };
    assert_eq!(
        problems,
        &[
            "tensor \"b\" is f32 [2, 2] in the file, f32 [4] expected",
            "tensor \"c\" is f32 [3] in the file, f64 [3] expected",
            "missing tensor \"d\" (f32 [5])",
            "unexpected tensor \"extra\" (f32 [1])",
        ]
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with("cannot load ") && msg.contains("mismatch.safetensors"),
        "{msg}"
    );
    // All or nothing: "a" matched but was not assigned.
    assert_eq!(a.to_vec::<f32>().expect("a"), vec![0.0, 0.0]);
}

#[test]
#[should_panic(expected = "duplicate name in save_safetensors: \"w\" appears twice")]
fn a_duplicate_name_panics() {
    let t = Tensor::ones([1]);
    let _ = io::save_safetensors(temp_path("dup.safetensors"), &[("w", &t), ("w", &t)]);
}

/// Writes the fixture's tensors with metajit to `$METAJIT_SAFETENSORS_OUT`, for .ci/run to
/// check with Python's safetensors (`make_safetensors_fixture.py --check`).
#[test]
#[ignore = "run by .ci/run with METAJIT_SAFETENSORS_OUT set"]
fn write_for_python_check() {
    let Some(out) = std::env::var_os("METAJIT_SAFETENSORS_OUT") else {
        panic!("set METAJIT_SAFETENSORS_OUT to the file to write");
    };
    let tensors = expected();
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    io::save_safetensors(&out, &refs).expect("save");
}
