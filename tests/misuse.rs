//! Misuse of the Tensor API panics at once, at the caller's line, with a message that names
//! the op, the shapes (or dtypes) and the rule broken (DESIGN.md §8).

mod common;

use common::catch_quietly;
use metajit::{DType, Tensor};

fn m23() -> Tensor {
    Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3])
}

// ---------------------------------------------------------------------------------------------
// Shape mismatches.

#[test]
#[should_panic(expected = "shape mismatch in add: lhs [2, 3], rhs [3, 2]")]
fn add_with_mismatched_shapes() {
    m23().add(&Tensor::zeros([3, 2]));
}

#[test]
#[should_panic(expected = "shape mismatch in add: lhs [2, 3], rhs [2]")]
fn add_operator_with_mismatched_shapes() {
    let _ = &m23() + &Tensor::zeros([2]);
}

#[test]
#[should_panic(expected = "shape mismatch in mul: lhs [4], rhs [3]")]
fn mul_with_mismatched_shapes() {
    Tensor::zeros([4]).mul(&Tensor::zeros([3]));
}

#[test]
#[should_panic(expected = "shape mismatch in gt: lhs [2], rhs [3]")]
fn gt_names_lhs_and_rhs_in_call_order() {
    Tensor::zeros([2]).gt(&Tensor::zeros([3]));
}

#[test]
#[should_panic(expected = "shape mismatch in where: cond [2], a [3], b []")]
fn where_with_mismatched_shapes() {
    let c = Tensor::from_slice(&[true, false]);
    Tensor::where_(&c, &Tensor::zeros([3]), 0.0);
}

#[test]
#[should_panic(expected = "shape mismatch in logical_and: lhs [2], rhs [0]")]
fn logical_and_with_mismatched_shapes() {
    Tensor::zeros([2]).logical_and(&Tensor::zeros([0]));
}

// ---------------------------------------------------------------------------------------------
// Bad axes.

#[test]
#[should_panic(expected = "bad axis in sum: axis 2 is out of range for shape [2, 3]")]
fn sum_with_an_axis_past_the_rank() {
    m23().sum(2, false);
}

#[test]
#[should_panic(expected = "bad axis in sum: axis 1 appears twice")]
fn sum_with_a_repeated_axis() {
    m23().sum([1, -1], false);
}

#[test]
#[should_panic(expected = "bad axis in max: axis -3 is out of range for shape [2, 3]")]
fn max_with_a_negative_axis_past_the_rank() {
    m23().max(-3, true);
}

#[test]
#[should_panic(expected = "bad axis in argmax: axis 5 is out of range for shape [2, 3]")]
fn argmax_with_a_bad_axis() {
    m23().argmax(5, false);
}

#[test]
#[should_panic(expected = "bad axis in mean: axis 3 is out of range for shape [2, 3]")]
fn mean_with_a_bad_axis() {
    m23().mean([0, 3], false);
}

#[test]
#[should_panic(expected = "bad axis in size: axis 2 is out of range for shape [2, 3]")]
fn size_with_a_bad_axis() {
    m23().size(2);
}

// ---------------------------------------------------------------------------------------------
// Empty reductions.

#[test]
#[should_panic(expected = "empty reduction in max: axis 1 of shape [2, 0] has no elements")]
fn max_over_an_empty_axis() {
    Tensor::zeros([2, 0]).max(1, false);
}

#[test]
#[should_panic(expected = "empty reduction in min: axis 0 of shape [0] has no elements")]
fn min_of_an_empty_tensor() {
    Tensor::zeros([0]).min_all();
}

#[test]
#[should_panic(expected = "empty reduction in argmax: axis 0 of shape [0, 2] has no elements")]
fn argmax_over_an_empty_axis() {
    Tensor::zeros([0, 2]).argmax(0, false);
}

// ---------------------------------------------------------------------------------------------
// Dtype mismatches.

#[test]
#[should_panic(
    expected = "dtype mismatch in where: the condition must be bool, got f32 (shape [3])"
)]
fn where_with_a_float_condition() {
    let c = Tensor::from_slice(&[1.0f32, 0.0, 1.0]);
    Tensor::where_(&c, 1.0, 0.0);
}

#[test]
#[should_panic(expected = "dtype mismatch in sub: operands of dtype bool are not supported")]
fn sub_on_bools() {
    let a = Tensor::from_slice(&[true, false]);
    a.sub(&a);
}

#[test]
#[should_panic(expected = "dtype mismatch in mean: needs a float tensor, got i32 (shape [2, 2])")]
fn mean_of_ints() {
    Tensor::from_vec(vec![1i32, 2, 3, 4], [2, 2]).mean(0, false);
}

#[test]
#[should_panic(expected = "dtype mismatch in bitwise_and: operands of dtype f32 are not supported")]
fn bitwise_and_on_floats() {
    m23().bitwise_and(&m23());
}

#[test]
#[should_panic(
    expected = "dtype mismatch in bitwise_not: dtype f32 is not supported (shape [2, 3])"
)]
fn bitwise_not_on_floats() {
    m23().bitwise_not();
}

#[test]
#[should_panic(expected = "dtype mismatch in neg: dtype bool is not supported (shape [1])")]
fn neg_of_bools() {
    Tensor::from_slice(&[true]).neg();
}

#[test]
#[should_panic(expected = "dtype mismatch in std: needs a float tensor, got i64 (shape [3])")]
fn std_of_ints_names_std() {
    Tensor::arange(0, 3, 1).std(0, false);
}

#[test]
#[should_panic(expected = "dtype mismatch in masked_fill")]
fn masked_fill_with_a_float_mask_names_masked_fill() {
    m23().masked_fill(&m23(), 0.0);
}

/// `#[should_panic(expected)]` takes one substring; these check that dtype errors also name
/// the shapes, as DESIGN.md §8 asks of every misuse message.
#[test]
fn dtype_errors_name_the_shapes() {
    let b = Tensor::from_slice(&[true, false, true]);
    let f = Tensor::zeros([2, 2]);
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "sub on bools",
            message(|| drop(b.sub(&b))),
            vec!["sub", "bool", "[3]"],
        ),
        (
            "bitwise_or on floats",
            message(|| drop(f.bitwise_or(&f))),
            vec!["bitwise_or", "f32", "[2, 2]"],
        ),
        (
            "pow on bools",
            message(|| drop(b.pow(&b))),
            vec!["pow", "bool", "[3]"],
        ),
        (
            "mean of bools",
            message(|| drop(b.mean(0, false))),
            vec!["mean", "bool", "[3]"],
        ),
    ];
    let bad: Vec<String> = cases
        .into_iter()
        .filter(|(_, msg, parts)| !parts.iter().all(|p| msg.contains(p)))
        .map(|(what, msg, parts)| format!("{what}: {msg:?} lacks one of {parts:?}"))
        .collect();
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Host conversion and creation.

#[test]
#[should_panic(expected = "from_vec: 5 element(s) cannot fill shape [2, 3] (6 elements)")]
fn from_vec_with_the_wrong_length() {
    Tensor::from_vec(vec![0.0f32; 5], [2, 3]);
}

#[test]
#[should_panic(expected = "item: tensor of shape [2, 2] has 4 elements, not 1")]
fn item_of_a_multi_element_tensor() {
    let _ = Tensor::zeros([2, 2]).item::<f32>();
}

#[test]
#[should_panic(expected = "item: tensor of shape [0] has 0 elements, not 1")]
fn item_of_an_empty_tensor() {
    let _ = Tensor::zeros([0]).item::<f32>();
}

#[test]
#[should_panic(
    expected = "dtype mismatch in to_vec: tensor of shape [2] has dtype f32, asked for i64 (cast first)"
)]
fn to_vec_with_the_wrong_type() {
    let _ = Tensor::zeros([2]).to_vec::<i64>();
}

#[test]
#[should_panic(expected = "has dtype i64, asked for f32 (cast first)")]
fn item_with_the_wrong_type() {
    let _ = Tensor::arange(0, 1, 1).item::<f32>();
}

#[test]
#[should_panic(expected = "bad arguments to arange: step 0 cannot go from 0 to 5")]
fn arange_with_step_zero() {
    Tensor::arange(0, 5, 0);
}

#[test]
#[should_panic(expected = "bad arguments to arange: step -1 cannot go from 0 to 5")]
fn arange_with_a_step_of_the_wrong_sign() {
    Tensor::arange(0, 5, -1);
}

#[test]
#[should_panic(expected = "bad arguments to arange_f32: step 0 cannot go from 0 to 1")]
fn arange_f32_with_step_zero() {
    Tensor::arange_f32(0.0, 1.0, 0.0);
}

#[test]
#[should_panic(expected = "bad arguments to clamp: min 2 is greater than max 1")]
fn clamp_with_min_above_max() {
    m23().clamp(2.0, 1.0);
}

// ---------------------------------------------------------------------------------------------
// Convolution geometry.

#[test]
fn conv_transpose2d_names_itself_the_shapes_and_the_rule() {
    use metajit::nn::functional::conv_transpose2d as ct;
    let x = Tensor::zeros([1, 2, 3, 3]);
    let w = Tensor::zeros([2, 1, 3, 3]);
    let (x3, b2) = (Tensor::zeros([1, 3, 3, 3]), Tensor::zeros([2]));
    type Case<'a> = (Box<dyn FnOnce() + 'a>, &'static str);
    let cases: Vec<Case<'_>> = vec![
        (
            Box::new(|| drop(ct(&x, &w, None, (2, 2), (0, 0), (0, 2), 1, (1, 1)))),
            "bad argument to conv_transpose2d: output padding (0, 2) must be smaller than the stride (2, 2) or the dilation (1, 1)",
        ),
        (
            Box::new(|| drop(ct(&x3, &w, None, (1, 1), (0, 0), (0, 0), 1, (1, 1)))),
            "shape mismatch in conv_transpose2d: input [1, 3, 3, 3], weight [2, 1, 3, 3] with groups 1",
        ),
        (
            Box::new(|| drop(ct(&x, &w, None, (1, 1), (0, 0), (0, 0), 4, (1, 1)))),
            "shape mismatch in conv_transpose2d: input [1, 2, 3, 3], weight [2, 1, 3, 3] with groups 4",
        ),
        (
            Box::new(|| drop(ct(&x, &w, None, (1, 1), (0, 0), (0, 0), 0, (1, 1)))),
            "shape mismatch in conv_transpose2d: input [1, 2, 3, 3], weight [2, 1, 3, 3] with groups 0",
        ),
        (
            Box::new(|| drop(ct(&x, &w, None, (0, 1), (0, 0), (0, 0), 1, (1, 1)))),
            "bad argument to conv_transpose2d: stride (0, 1) must be positive",
        ),
        (
            Box::new(|| drop(ct(&x, &w, Some(&b2), (1, 1), (0, 0), (0, 0), 1, (1, 1)))),
            "shape mismatch in conv_transpose2d: bias [2] for 1 output channels",
        ),
        (
            // (3 - 1)·1 - 2·3 + (3 - 1) + 0 + 1 = -1 rows.
            Box::new(|| drop(ct(&x, &w, None, (1, 1), (3, 0), (0, 0), 1, (1, 1)))),
            "give an output of -1×5",
        ),
    ];
    for (f, want) in cases {
        let m = message(f);
        assert!(m.contains(want), "{m}\nshould contain\n{want}");
    }
    // An output padding below the dilation is allowed, even at stride 1 (PyTorch's rule).
    let y = ct(&x, &w, None, (1, 1), (0, 0), (1, 1), 1, (2, 2));
    assert_eq!(y.dims(), &[1, 1, 8, 8]);
}

// ---------------------------------------------------------------------------------------------
// The panic points at the caller's line.

/// The panic message of `f` (which must panic).
fn message(f: impl FnOnce()) -> String {
    let (_, msg) = location_of(f);
    msg
}

/// Runs `f`, which must panic, and returns the file and line the panic reports, and its
/// message. Panics of other threads (other tests) go to the hook that was installed before.
fn location_of(f: impl FnOnce()) -> (Option<(String, u32)>, String) {
    let caught = catch_quietly(f).expect("the call was expected to panic");
    let msg = caught.message().unwrap_or_default();
    (caught.location, msg)
}

#[test]
fn panics_point_at_the_callers_line() {
    use metajit::nn::functional::conv_transpose2d as ct;
    let a = m23();
    let b = Tensor::zeros([3, 2]);
    let c = Tensor::from_slice(&[true, false]);
    let ints = Tensor::from_vec(vec![1i32, 2, 3, 4], [2, 2]);
    let bools = Tensor::from_slice(&[true]);
    let empty = Tensor::zeros([2, 0]);
    let x4 = Tensor::zeros([1, 3, 2, 2]);
    // Each case records the line of its call (written on the same line as `line!()`).
    type Case<'a> = (&'a str, u32, Box<dyn FnOnce() + 'a>);
    #[rustfmt::skip]
    let cases: Vec<Case<'_>> = vec![
        ("add", line!(), Box::new(|| drop(a.add(&b)))),
        ("operator +", line!(), Box::new(|| drop(&a + &b))),
        ("mul by scalar-first operator", line!(), Box::new(|| drop(2.0f64 * &a + &b))),
        ("gt", line!(), Box::new(|| drop(a.gt(&b)))),
        ("where_ shapes", line!(), Box::new(|| drop(Tensor::where_(&c, &a, 0.0)))),
        ("where_ dtype", line!(), Box::new(|| drop(Tensor::where_(&a, 1.0, 0.0)))),
        ("masked_fill", line!(), Box::new(|| drop(a.masked_fill(&a, 0.0)))),
        ("sum bad axis", line!(), Box::new(|| drop(a.sum(7, false)))),
        ("sum repeated axis", line!(), Box::new(|| drop(a.sum([0, 0], false)))),
        ("max bad axis", line!(), Box::new(|| drop(a.max(-3, false)))),
        ("max empty", line!(), Box::new(|| drop(empty.max(1, false)))),
        ("argmax bad axis", line!(), Box::new(|| drop(a.argmax(2, false)))),
        ("logsumexp bad axis", line!(), Box::new(|| drop(a.logsumexp(2, false)))),
        ("var bad axis", line!(), Box::new(|| drop(a.var(2, false)))),
        ("mean of ints", line!(), Box::new(|| drop(ints.mean(0, false)))),
        ("sub on bools", line!(), Box::new(|| drop(bools.sub(&bools)))),
        ("neg on bools", line!(), Box::new(|| drop(-&bools))),
        ("bitwise on floats", line!(), Box::new(|| drop(a.bitwise_xor(&a)))),
        ("from_vec", line!(), Box::new(|| drop(Tensor::from_vec(vec![1.0f32; 5], [2, 3])))),
        ("item", line!(), Box::new(|| drop(a.item::<f32>()))),
        ("to_vec", line!(), Box::new(|| drop(a.to_vec::<i32>()))),
        ("arange", line!(), Box::new(|| drop(Tensor::arange(0, 5, 0)))),
        ("clamp", line!(), Box::new(|| drop(a.clamp(1.0, 0.0)))),
        ("size", line!(), Box::new(|| { let _ = a.size(9); })),
        ("conv_transpose2d", line!(), Box::new(|| drop(ct(&x4, &x4, None, (1, 1), (0, 0), (0, 0), 1, (1, 1))))),
    ];
    let mut wrong = Vec::new();
    for (what, line, f) in cases {
        let (loc, msg) = location_of(f);
        match loc {
            Some((file, l)) if file == file!() && l == line => {}
            other => wrong.push(format!(
                "{what}: panicked at {other:?}, not {}:{line} ({msg})",
                file!()
            )),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} case(s) report the wrong location:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    // Sanity: the DType is still usable after all those panics (no poisoned global state).
    assert_eq!(a.add(1.0f64).dtype(), DType::F32);
}
