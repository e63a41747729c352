//! Tensor devices: placement, floating values, `Tensor::to`, and the errors for ops over two
//! devices and for devices that cannot be opened.
//!
//! The default device is process-wide, so every scenario that changes it runs inside one test,
//! in order, restoring the CPU at the end.

use metajit::{Device, Tensor, set_device};

/// The panic message of `f`, which must panic.
fn panic_message(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
    let e = std::panic::catch_unwind(f).expect_err("expected a panic");
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn tensors_live_on_one_device_and_move_with_to() {
    set_device(Device::Cpu);
    let x = Tensor::from_vec(vec![1.0f32, -2.0, 3.0], [3]);
    assert_eq!(x.device(), Device::Cpu);
    // A floating value (made from no data) follows the default device, and a value computed
    // from a CPU tensor is on the CPU.
    assert_eq!(Tensor::zeros([2]).device(), Device::Cpu);
    assert_eq!((&x + 1.0).device(), Device::Cpu);
    // `to` the same device is the same tensor; Auto and Reference are the CPU.
    for d in [Device::Cpu, Device::Auto, Device::Reference] {
        let y = x.to(d).unwrap();
        assert_eq!(y.device(), Device::Cpu);
        assert_eq!(y.id(), x.id());
    }

    // Data created while the default is a device belongs to that device, even before any
    // backend is reached; an op over it and a CPU tensor is misuse, named at the op.
    set_device(Device::OpenCl(0));
    let on_cl = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], [3]);
    assert_eq!(on_cl.device(), Device::OpenCl(0));
    assert_eq!(Tensor::ones([3]).device(), Device::OpenCl(0));
    // A floating operand takes the device of the other: no mismatch.
    assert_eq!((&x + &Tensor::ones([3])).device(), Device::Cpu);
    assert_eq!((&on_cl * 2.0).device(), Device::OpenCl(0));
    let (a, b) = (x.clone(), on_cl.clone());
    let msg = panic_message(move || {
        let _ = &a + &b;
    });
    assert!(
        msg.contains("device mismatch in")
            && msg.contains("on cpu")
            && msg.contains("on opencl:0")
            && msg.contains("Tensor::to"),
        "{msg}"
    );
    let (a, b) = (x.clone(), on_cl.clone());
    let msg = panic_message(move || a.assign(&b));
    assert!(msg.contains("device mismatch in assign"), "{msg}");

    // Moving to a device either works and keeps the values, or fails with an error naming
    // the device; it never panics and never loses the source.
    match x.to(Device::OpenCl(0)) {
        Ok(y) => {
            assert_eq!(y.device(), Device::OpenCl(0));
            let back = (&y * 2.0).to(Device::Cpu).unwrap();
            assert_eq!(back.device(), Device::Cpu);
            assert_eq!(back.to_vec::<f32>().unwrap(), vec![2.0, -4.0, 6.0]);
        }
        Err(e) => assert!(e.to_string().contains("opencl:0"), "{e}"),
    }
    match Tensor::from_vec(vec![1i32, 2], [2]).to(Device::Cuda(0)) {
        Ok(y) => assert_eq!(y.to_vec::<i32>().unwrap(), vec![1, 2]),
        Err(e) => assert!(e.to_string().contains("cuda:0"), "{e}"),
    }
    assert_eq!(x.to_vec::<f32>().unwrap(), vec![1.0, -2.0, 3.0]);

    // A tensor that requires grad does not move (gradients do not cross devices yet).
    set_device(Device::Cpu);
    let w = Tensor::ones([2]).requires_grad_(true);
    let msg = panic_message(move || {
        let _ = w.to(Device::OpenCl(0));
    });
    assert!(msg.contains("requires grad"), "{msg}");

    // Realizing several tensors on two devices runs one graph per device.
    let c = &x * 3.0;
    let d = &on_cl + 1.0;
    let r = metajit::realize_all(&[&c, &d]);
    assert_eq!(c.to_vec::<f32>().unwrap(), vec![3.0, -6.0, 9.0]);
    match r {
        Ok(()) => assert_eq!(d.to_vec::<f32>().unwrap(), vec![2.0, 3.0, 4.0]),
        Err(e) => assert!(e.to_string().contains("opencl:0"), "{e}"),
    }
}
