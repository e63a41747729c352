//! Tensor devices: placement, floating values, `Tensor::to`, and the errors for ops over two
//! devices and for devices that cannot be opened.
//!
//! The default device is process-wide, so every scenario that changes it runs inside one test,
//! in order, restoring the CPU at the end.

mod common;

use std::sync::{Mutex, MutexGuard};

use metajit::nn::Module;
use metajit::nn::functional as F;
use metajit::optim::{Optimizer, Sgd, SgdConfig};
use metajit::{Device, Tensor, set_device};

/// The default device is process-wide: tests that change it take turns.
static SETTING: Mutex<()> = Mutex::new(());

fn take_setting() -> MutexGuard<'static, ()> {
    SETTING.lock().unwrap_or_else(|p| p.into_inner())
}

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
    let _turn = take_setting();
    set_device(Device::Cpu);
    let x = Tensor::from_vec(vec![1.0f32, -2.0, 3.0], [3]);
    assert_eq!(x.device(), Device::Cpu);
    // A floating value (made from no data) follows the default device, and a value computed
    // from a CPU tensor is on the CPU.
    assert_eq!(Tensor::zeros([2]).device(), Device::Cpu);
    assert_eq!((&x + 1.0).device(), Device::Cpu);
    // A floating value moved to the default device is pinned there: changing the default
    // afterwards does not move it.
    let pinned = Tensor::arange(0, 3, 1).to(Device::Cpu).unwrap();
    let pinned_w = Tensor::zeros([2]).requires_grad_(true);
    pinned_w.move_to(Device::Cpu).unwrap();
    set_device(Device::OpenCl(0));
    assert_eq!(pinned.device(), Device::Cpu);
    assert_eq!(pinned_w.device(), Device::Cpu);
    assert!(pinned_w.requires_grad());
    set_device(Device::Cpu);
    // `to` the same device is the same tensor; Reference is the CPU, and so is Auto where it
    // did not resolve to CUDA.
    for d in [Device::Cpu, Device::Auto, Device::Reference] {
        if d.placement() != Device::Cpu {
            continue;
        }
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
            // A checkpoint loaded into a device tensor while the default device is the CPU.
            set_device(Device::Cpu);
            let path = std::env::temp_dir().join(format!(
                "metajit-devices-load-{}.safetensors",
                std::process::id()
            ));
            metajit::io::save_safetensors(&path, &[("y", &y)]).unwrap();
            let z = Tensor::zeros([3]).to(Device::OpenCl(0)).unwrap();
            metajit::io::load_into(&[("y", &z)], &path).unwrap();
            std::fs::remove_file(&path).ok();
            assert_eq!(z.device(), Device::OpenCl(0));
            assert_eq!(z.to_vec::<f32>().unwrap(), vec![1.0, -2.0, 3.0]);
            set_device(Device::OpenCl(0));
        }
        Err(e) => assert!(e.to_string().contains("opencl:0"), "{e}"),
    }
    match Tensor::from_vec(vec![1i32, 2], [2]).to(Device::Cuda(0)) {
        Ok(y) => assert_eq!(y.to_vec::<i32>().unwrap(), vec![1, 2]),
        Err(e) => assert!(e.to_string().contains("cuda:0"), "{e}"),
    }
    assert_eq!(x.to_vec::<f32>().unwrap(), vec![1.0, -2.0, 3.0]);

    set_device(Device::Cpu);
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

/// Values of the Tensor API's main kinds of op (element-wise, reductions in every layout,
/// softmax, matmul, conv and pooling, integer arithmetic, random numbers) and the losses of a
/// few SGD steps of a small conv net, all created on the default device.
fn workload() -> Vec<(&'static str, Vec<f64>)> {
    metajit::manual_seed(11);
    let x = Tensor::randn([5, 7]);
    let w = Tensor::randn([7, 3]);
    let v = |t: &Tensor| t.to_f64_vec().unwrap();
    let mut out = vec![
        ("randn", v(&x)),
        ("w1", v(&((&x * 1.5 + 0.5).relu() * x.sigmoid() + x.tanh()))),
        ("exp log", v(&(x.abs() + 1.0).log().exp())),
        ("sum 0", v(&x.sum(0, false))),
        ("sum 1", v(&x.sum(1, true))),
        ("sum all", v(&x.sum_all())),
        ("max 1", v(&x.max(1, false))),
        ("argmax 0", v(&x.argmax(0, false))),
        ("softmax", v(&F::softmax(&x, -1))),
        ("log_softmax 0", v(&F::log_softmax(&x, 0))),
        ("matmul", v(&x.matmul(&w))),
        ("transpose matmul", v(&x.transpose(0, 1).matmul(&x))),
    ];
    let i = Tensor::arange(-7, 8, 1);
    out.push((
        "int div mod",
        v(&(i.floor_divide(&Tensor::scalar(3i64)) * 10 + i.remainder(&Tensor::scalar(4i64)))),
    ));
    let img = Tensor::randn([2, 3, 9, 9]);
    let k = Tensor::randn([4, 3, 3, 3]);
    let c = F::conv2d(&img, &k, None, (1, 1), (1, 1), (1, 1), 1);
    out.push(("conv2d", v(&c)));
    out.push((
        "max_pool2d",
        v(&F::max_pool2d(&c, (2, 2), None, (0, 0), (1, 1), false)),
    ));

    // A few training steps: conv, relu, pool, linear, cross-entropy, SGD with momentum.
    let conv = (Tensor::randn([4, 1, 3, 3]) * 0.3)
        .detach()
        .requires_grad_(true);
    let lin = (Tensor::randn([4 * 4 * 4, 3]) * 0.1)
        .detach()
        .requires_grad_(true);
    let bias = Tensor::zeros([3]).requires_grad_(true);
    let data = Tensor::randn([6, 1, 8, 8]);
    let labels = Tensor::from_vec(vec![0i64, 1, 2, 2, 1, 0], [6]);
    let mut opt = Sgd::new(
        [conv.clone(), lin.clone(), bias.clone()],
        SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            ..Default::default()
        },
    );
    let mut losses = Vec::new();
    for _ in 0..4 {
        opt.zero_grad();
        let h = F::conv2d(&data, &conv, None, (1, 1), (1, 1), (1, 1), 1).relu();
        let h = F::max_pool2d(&h, (2, 2), None, (0, 0), (1, 1), false).reshape([6, 64]);
        let logits = h.matmul(&lin) + &bias;
        let loss = F::cross_entropy(&logits, &labels, &Default::default());
        loss.backward();
        opt.step();
        losses.push(loss.item::<f32>().unwrap() as f64);
    }
    out.push(("training losses", losses));
    // A gradient crossing devices: a CPU leaf used on this device gets its gradient on the CPU.
    let cpu_leaf = Tensor::from_vec(vec![0.5f32, -1.0, 2.0], [3])
        .to(Device::Cpu)
        .unwrap()
        .requires_grad_(true);
    let here = cpu_leaf.to(metajit::config::try_device().unwrap()).unwrap();
    (&here * &here).sum_all().backward();
    let grad = cpu_leaf.grad().expect("the CPU leaf has a gradient");
    assert_eq!(grad.device(), Device::Cpu);
    out.push(("gradient through to", v(&grad)));
    // A module moved to the CPU and back, trained a step on each side.
    let here = metajit::config::try_device().unwrap().placement();
    let m = metajit::nn::Linear::new(3, 2);
    let xs = Tensor::randn([4, 3]);
    for d in [Device::Cpu, here] {
        m.to(d).unwrap();
        assert!(
            m.parameters()
                .iter()
                .all(|p| p.device() == d && p.requires_grad())
        );
        let mut opt = Sgd::new(
            m.parameters(),
            SgdConfig {
                lr: 0.5,
                ..Default::default()
            },
        );
        opt.zero_grad();
        m.forward(&xs.to(d).unwrap()).square().mean_all().backward();
        opt.step();
        out.push(("moved module", v(&m.parameters()[0])));
    }
    out.push(("trained weights", v(&lin)));
    // A checkpoint written from this device and read back into a tensor on it.
    let path = std::env::temp_dir().join(format!(
        "metajit-devices-{}-{}.safetensors",
        std::process::id(),
        lin.device()
    ));
    metajit::io::save_safetensors(&path, &[("lin", &lin)]).unwrap();
    let restored = Tensor::zeros([4 * 4 * 4, 3]).requires_grad_(true);
    metajit::io::load_into(&[("lin", &restored)], &path).unwrap();
    std::fs::remove_file(&path).ok();
    assert_eq!(restored.device(), lin.device());
    assert_eq!(v(&restored), v(&lin));
    out
}

#[test]
fn values_on_each_gpu_device_match_the_cpu() {
    let _turn = take_setting();
    set_device(Device::Cpu);
    let want = workload();
    for device in common::gpu_devices() {
        set_device(device);
        let got = std::panic::catch_unwind(workload);
        set_device(Device::Cpu);
        let got = got.unwrap_or_else(|e| std::panic::resume_unwind(e));
        assert_eq!(want.len(), got.len());
        for ((name, w), (_, g)) in want.iter().zip(&got) {
            assert_eq!(w.len(), g.len(), "{name} on {device}: element count");
            for (k, (a, b)) in w.iter().zip(g).enumerate() {
                // The GPU precision contract: f32 accumulation (see codegen's gpu module).
                let ok = a == b
                    || (a.is_nan() && b.is_nan())
                    || (a - b).abs() <= 1e-4 * (1.0 + a.abs().max(b.abs()));
                assert!(
                    ok,
                    "{name} on {device}: element {k} is {b}, the CPU gives {a}"
                );
            }
        }
    }
}

#[test]
fn auto_is_the_cpu_without_a_cuda_driver() {
    let _turn = take_setting();
    let t0 = std::time::Instant::now();
    let auto = Device::Auto.placement();
    let took = t0.elapsed();
    match metajit_codegen::gpu::cuda::libraries_present() {
        Err(why) => {
            eprintln!("auto resolved to {auto} in {took:?} ({why})");
            assert_eq!(auto, Device::Cpu);
            // METAJIT_DEVICE=auto behaves as the CPU: tensors are created, computed and moved
            // there, and the eager fast paths apply.
            set_device(Device::Auto);
            let x = Tensor::from_vec(vec![1.0f32, -2.0, 3.0], [3]);
            assert_eq!(x.device(), Device::Cpu);
            assert_eq!(Tensor::zeros([2]).device(), Device::Cpu);
            let y = (&x * 2.0).exp().sum_all();
            assert_eq!(y.device(), Device::Cpu);
            let want = [2.0f32, -4.0, 6.0].iter().map(|v| v.exp()).sum::<f32>();
            assert!((y.item::<f32>().unwrap() - want).abs() <= 1e-5 * want);
            assert_eq!(x.to(Device::Auto).unwrap().id(), x.id());
            set_device(Device::Cpu);
        }
        // A machine with CUDA: auto is CUDA device 0 when its self-check passed, which it must
        // where CUDA is required (METAJIT_REQUIRE_DEVICES names it, as on a GPU check run).
        Ok(()) => {
            eprintln!("auto resolved to {auto} in {took:?}");
            let required = std::env::var("METAJIT_REQUIRE_DEVICES").unwrap_or_default();
            if required.split(',').any(|d| d.trim() == "cuda") {
                assert_eq!(auto, Device::Cuda(0));
            } else {
                assert!(matches!(auto, Device::Cpu | Device::Cuda(0)), "{auto}");
            }
        }
    }
}

#[test]
fn realizes_run_ahead_of_the_device_and_reads_wait_for_them() {
    let _turn = take_setting();
    for device in common::gpu_devices() {
        // More realizes than may be in flight at once (64), each reading the last: every
        // intermediate read and the final value must see all the work before it.
        set_device(device);
        let mut x = Tensor::from_vec(vec![0.0f32, 1.0, -1.0, 0.5], [4]);
        let mut want = vec![0.0f32, 1.0, -1.0, 0.5];
        for i in 0..200 {
            x = &x * 0.5 + 1.0;
            x.realize().unwrap();
            for w in &mut want {
                *w = *w * 0.5 + 1.0;
            }
            if i % 97 == 0 {
                assert_eq!(x.to_vec::<f32>().unwrap(), want, "{device}, step {i}");
            }
        }
        metajit::synchronize().unwrap();
        assert_eq!(x.device(), device);
        assert_eq!(x.to_vec::<f32>().unwrap(), want, "{device}");
        set_device(Device::Cpu);
    }
}
