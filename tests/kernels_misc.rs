//! The other kernels against their CPU references on the adapter CI has: max-pool forward
//! (with ties, first maximum, NaN) and backward, ReLU, softmax-cross-entropy (logits of +-80,
//! non-finite logits) and SGD with momentum, several seeds.

mod common;
mod kernel_helpers;
use common::*;
use kernel_helpers::*;

use gpu_lenet::kernels::global_avg_pool::{self, GlobalAvgPool};
use gpu_lenet::kernels::maxpool2d_backward::{self, Maxpool2dBackward};
use gpu_lenet::kernels::maxpool2d_forward::{self, Maxpool2dForward, PoolShape};
use gpu_lenet::kernels::relu::{self, Relu};
use gpu_lenet::kernels::sgd_momentum::{self, SgdMomentum, SgdOptions};
use gpu_lenet::kernels::shortcut_option_a::{self, ShortcutOptionA, ShortcutShape};
use gpu_lenet::kernels::softmax_cross_entropy::{self, SoftmaxCrossEntropy, METRICS_WORDS};
use gpu_lenet::kernels::{run_all, tolerance, StepTable};

fn pool_shapes() -> Vec<PoolShape> {
    let p = |planes, h, w, k, stride| PoolShape { planes, h, w, k, stride };
    vec![
        p(64 * 6, 28, 28, 2, 2),  // LeNet pool1
        p(64 * 16, 10, 10, 2, 2), // LeNet pool2
        p(6, 28, 28, 2, 2),       // batch 1
        p(13 * 16, 10, 10, 2, 2), // odd batch
        p(7, 9, 11, 2, 2),        // odd sizes: the last row and column are dropped (floor mode)
        p(5, 9, 9, 3, 2),         // overlapping windows: a pixel can be the max of several
    ]
}

#[test]
fn maxpool2d_forward_matches_reference_with_ties() {
    let g = gpu();
    for s in pool_shapes() {
        let k = Maxpool2dForward::new(g, s);
        for seed in SEEDS {
            for ties in [false, true] {
                let mut r = Rng(seed * 31 + s.planes as u64);
                // With ties: values from {0, 0.5, 1}, or all zero after a ReLU in many windows.
                let x: Vec<f32> = (0..s.input_len())
                    .map(|_| if ties { (r.below(3) as f32) * 0.5 } else { r.uniform(-1.0, 1.0) })
                    .collect();
                let (xb, yb, ib) = (upload(&x), out(s.output_len()), out(s.output_len()));
                k.bind(g, s.planes, &v(&xb), &v(&yb), &v(&ib)).run(g);
                let (y, idx) = maxpool2d_forward::reference(s, &x);
                let what = format!("maxpool2d_forward {s:?} ties={ties} seed={seed}");
                assert_eq!(read(&yb), y, "{what}: values");
                assert_eq!(read_u32(&ib), idx, "{what}: argmax");
            }
        }
    }
}

#[test]
fn maxpool2d_forward_first_maximum_and_nan() {
    let g = gpu();
    let s = PoolShape { planes: 1, h: 2, w: 6, k: 2, stride: 2 };
    let k = Maxpool2dForward::new(g, s);
    // Window 0: all equal -> index 0. Window 1: max at (1,0) twice -> first in row-major order.
    // Window 2: a NaN wins and is propagated.
    let x = vec![1.0, 1.0, 0.0, 2.0, 0.5, f32::NAN, 1.0, 1.0, 2.0, 0.0, 9.0, 3.0];
    let (xb, yb, ib) = (upload(&x), out(3), out(3));
    k.bind(g, s.planes, &v(&xb), &v(&yb), &v(&ib)).run(g);
    let (want_y, want_i) = maxpool2d_forward::reference(s, &x);
    assert_eq!(want_i, vec![0, 3, 5]);
    assert_eq!(read_u32(&ib), want_i);
    let y = read(&yb);
    assert_eq!(&y[..2], &want_y[..2]);
    assert!(y[2].is_nan() && want_y[2].is_nan());
}

#[test]
fn maxpool2d_backward_matches_reference() {
    let g = gpu();
    for s in pool_shapes() {
        let fwd = Maxpool2dForward::new(g, s);
        for (ties, relu_mask) in [(false, false), (true, true), (false, true)] {
            let k = Maxpool2dBackward::new(g, s, relu_mask);
            for seed in SEEDS {
                let mut r = Rng(seed * 17 + s.planes as u64);
                // The pooled tensor is a ReLU output: many zeros, and ties when asked.
                let x: Vec<f32> = (0..s.input_len())
                    .map(|_| if ties { (r.below(3) as f32) * 0.5 } else { r.uniform(-1.0, 1.0).max(0.0) })
                    .collect();
                let dy = r.vec(s.output_len(), -1.0, 1.0);
                let (xb, yb, ib) = (upload(&x), out(s.output_len()), out(s.output_len()));
                let (dyb, dxb) = (upload(&dy), out(s.input_len()));
                let f = fwd.bind(g, s.planes, &v(&xb), &v(&yb), &v(&ib));
                let b = k.bind(g, s.planes, &v(&dyb), &v(&ib), &v(&xb), &v(&dxb));
                run_all(g, &[&f, &b]);
                let (_, idx) = maxpool2d_forward::reference(s, &x);
                let want = maxpool2d_backward::reference(s, relu_mask, &dy, &idx, &x);
                let tol = tolerance(s.k * s.k);
                assert_close(
                    &format!("maxpool2d_backward {s:?} ties={ties} mask={relu_mask} seed={seed}"),
                    &read(&dxb),
                    &want,
                    tol,
                );
            }
        }
    }
}

/// ResNet's pool before its classifier at its planes (8x8 with 64 channels), odd planes, one
/// plane, batch 1, and more planes than a workgroup holds (the last workgroup partial).
#[test]
fn global_avg_pool_forward_and_backward_match_reference() {
    let g = gpu();
    for (planes, h, w) in
        [(1usize, 8usize, 8usize), (64, 8, 8), (64 * 7 + 3, 8, 8), (13, 7, 5), (130, 1, 1), (2, 32, 32)]
    {
        let k = GlobalAvgPool::new(g, h, w);
        for seed in SEEDS {
            let mut r = Rng(seed * 31 + planes as u64);
            let x = r.vec(planes * h * w, -1.0, 1.0);
            let dy = r.vec(planes, -1.0, 1.0);
            let (xb, yb, dyb, dxb) = (upload(&x), out(planes), upload(&dy), out(planes * h * w));
            let f = k.bind_forward(g, planes, &v(&xb), &v(&yb));
            let b = k.bind_backward(g, planes, &v(&dyb), &v(&dxb));
            run_all(g, &[&f, &b]);
            let what = format!("global_avg_pool {planes}x{h}x{w} seed {seed}");
            assert_close(
                &format!("{what} forward"),
                &read(&yb),
                &global_avg_pool::reference_forward(h * w, &x),
                tolerance(h * w),
            );
            assert_eq!(read(&dxb), global_avg_pool::reference_backward(h * w, &dy), "{what} backward");
        }
    }
}

/// ResNet-20's two downsampling shortcuts (16→32 at 32x32, 32→64 at 16x16), odd sizes (the
/// last row and column kept), channels not a multiple of 4, and a stride-1 widening; batch 1
/// and 3. Copies: the GPU must give the reference's values exactly.
#[test]
fn shortcut_option_a_forward_and_backward_match_reference() {
    let g = gpu();
    let shapes = [
        ShortcutShape { cin: 16, h: 32, w: 32, stride: 2, pad: 8 },
        ShortcutShape { cin: 32, h: 16, w: 16, stride: 2, pad: 16 },
        ShortcutShape { cin: 5, h: 7, w: 9, stride: 2, pad: 3 },
        ShortcutShape { cin: 3, h: 5, w: 5, stride: 1, pad: 2 },
    ];
    for s in shapes {
        let k = ShortcutOptionA::new(g, s);
        for batch in [1usize, 3] {
            let mut r = Rng(batch as u64 * 131 + s.cin as u64);
            let x = r.vec(batch * s.input_len(), -1.0, 1.0);
            let dy = r.vec(batch * s.output_len(), -1.0, 1.0);
            let (xb, yb) = (upload(&x), out(batch * s.output_len()));
            let (dyb, dxb) = (upload(&dy), out(batch * s.input_len()));
            let f = k.bind_forward(g, batch, &v(&xb), &v(&yb));
            let b = k.bind_backward(g, batch, &v(&dyb), &v(&dxb));
            run_all(g, &[&f, &b]);
            assert_eq!(read(&yb), shortcut_option_a::reference_forward(s, batch, &x), "{s:?} batch {batch} forward");
            assert_eq!(
                read(&dxb),
                shortcut_option_a::reference_backward(s, batch, &dy),
                "{s:?} batch {batch} backward"
            );
            // Adding to the grad already there (the block's first convolution's).
            let before = r.vec(batch * s.input_len(), -1.0, 1.0);
            let dxb = upload(&before);
            run_all(g, &[&ShortcutOptionA::accumulating(g, s).bind_backward(g, batch, &v(&dyb), &v(&dxb))]);
            let want: Vec<f32> =
                shortcut_option_a::reference_backward(s, batch, &dy).iter().zip(&before).map(|(a, b)| a + b).collect();
            assert_eq!(&read(&dxb)[..want.len()], &want[..], "{s:?} batch {batch} accumulating backward");
        }
    }
}

/// The two references against PyTorch's own `F.adaptive_avg_pool2d(x, 1)` and
/// `F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8))` on odd planes (`make_fixtures.py`).
#[test]
fn global_avg_pool_and_shortcut_references_are_pytorchs() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/resnet_layers.safetensors");
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = |name: &str| -> Vec<f32> {
        let v = st.tensor(name).unwrap();
        v.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    };
    let x = t("x");
    assert_close("avg_pool", &global_avg_pool::reference_forward(9 * 7, &x), &t("avg_pool"), 1e-6);
    let s = ShortcutShape { cin: 16, h: 9, w: 7, stride: 2, pad: 8 };
    assert_eq!(shortcut_option_a::reference_forward(s, 3, &x), t("shortcut"));
}

#[test]
fn relu_forward_and_backward_match_reference() {
    let g = gpu();
    let k = Relu::new(g);
    // Multiples of 4 take the vec4 backward.
    for n in [1usize, 4, 63, 64, 65, 4704 * 3 + 1, 16 * 32 * 32 * 3] {
        let mut r = Rng(n as u64);
        let x = r.vec(n, -1.0, 1.0);
        let dy = r.vec(n, -1.0, 1.0);
        let (xb, yb, dyb, dxb) = (upload(&x), out(n), upload(&dy), out(n));
        let f = k.bind_forward(g, &v(&xb), &v(&yb));
        let b = k.bind_backward(g, &v(&dyb).slice(0, n), &v(&yb), &v(&dxb));
        run_all(g, &[&f, &b]);
        let y = relu::reference_forward(&x);
        assert_eq!(read(&yb), y, "relu forward n={n}");
        assert_eq!(read(&dxb), relu::reference_backward(&dy, &y), "relu backward n={n}");
    }
}

#[test]
fn softmax_cross_entropy_matches_reference_including_large_logits() {
    for smoothing in [0.0f32, 0.1, 1.0] {
        softmax_case(smoothing);
    }
}

fn softmax_case(smoothing: f32) {
    let g = gpu();
    let k = SoftmaxCrossEntropy::new(g, smoothing);
    let table = StepTable::sequential(g, 3, 0, 0.0, 0.0);
    for (batch, classes) in [(64, 10), (1, 10), (100, 10), (13, 7), (129, 3)] {
        for seed in SEEDS {
            for scale in [1.0f32, 80.0] {
                let mut r = Rng(seed * 3 + batch as u64);
                let logits = r.vec(batch * classes, -scale, scale);
                let labels: Vec<u32> = (0..batch).map(|_| r.below(classes as u32)).collect();
                let (lb, yb, gb) = (upload(&logits), upload(&labels), out(batch * classes));
                let mb = out(3 * METRICS_WORDS);
                // Write into metrics row 2 to check the step table selects the row.
                let pb = out(batch);
                let d = k.bind(g, batch, classes, &table, &v(&lb), &v(&yb), &v(&gb), &v(&mb), &v(&pb));
                let mut enc = g.device.create_command_encoder(&Default::default());
                {
                    let mut pass = enc.begin_compute_pass(&Default::default());
                    d.record(&mut pass, table.offset(2));
                }
                g.queue.submit([enc.finish()]);
                let (grad, loss, correct) =
                    softmax_cross_entropy::reference_smoothed(batch, classes, smoothing, &logits, &labels);
                let what = format!(
                    "softmax_cross_entropy label_smoothing={smoothing} batch={batch} classes={classes} scale={scale} \
                        seed={seed}"
                );
                assert_close(&what, &read(&gb), &grad, tolerance(classes));
                let m = read(&mb);
                assert!(m[..8].iter().all(|&x| x == 0.0), "{what}: rows 0 and 1 untouched");
                assert_close(&format!("{what}: loss"), &m[8..9], &[loss as f32], tolerance(batch * classes));
                assert_eq!(m[9], correct as f32, "{what}: correct count");
                assert_eq!(m[10], batch as f32, "{what}: count");
                assert_eq!(m[11], 0.0, "{what}: non-finite flag");
                let preds = read_u32(&pb);
                let hits = preds.iter().zip(&labels).filter(|(p, l)| p == l).count();
                assert_eq!(hits as u32, correct, "{what}: predictions agree with the correct count");
                assert!(loss.is_finite() && loss > 0.0);
            }
        }
    }
}

#[test]
fn softmax_cross_entropy_flags_non_finite_logits() {
    let g = gpu();
    let k = SoftmaxCrossEntropy::new(g, 0.0);
    let table = StepTable::sequential(g, 1, 0, 0.0, 0.0);
    let mut logits = Rng(9).vec(4 * 10, -1.0, 1.0);
    logits[17] = f32::NAN;
    let (lb, yb, gb, mb) = (upload(&logits), upload(&[0u32, 1, 2, 3]), out(40), out(METRICS_WORDS));
    let pb = out(4);
    k.bind(g, 4, 10, &table, &v(&lb), &v(&yb), &v(&gb), &v(&mb), &v(&pb)).run(g);
    assert_eq!(read(&mb)[3], 1.0);
}

#[test]
fn sgd_momentum_matches_reference_over_several_steps() {
    let g = gpu();
    // Each step its own lr and momentum from the step table, as a schedule writes them.
    let rates = [(0.01f32, 0.9f32), (0.02, 0.85), (0.005, 0.95)];
    let mut rows = StepTable::sequential_rows(3, 0, 0.0, 0.0);
    for (r, &(lr, m)) in rows.iter_mut().zip(&rates) {
        (r.lr, r.momentum) = (lr, m);
    }
    let table = StepTable::new(g, &rows);
    for opts in [
        SgdOptions::default(),
        SgdOptions { weight_decay: 5e-4, nesterov: false },
        SgdOptions { weight_decay: 0.0, nesterov: true },
        SgdOptions { weight_decay: 1e-2, nesterov: true },
    ] {
        let k = SgdMomentum::new(g, opts);
        // Lengths that are not a multiple of 4 take the scalar kernel, the others the vec4 one.
        for n in [1usize, 4, 62_006, 62_008, 62_006 + 64 * 9 + 3] {
            let mut r = Rng(n as u64);
            let mut w = r.vec(n, -1.0, 1.0);
            let mut vel = vec![0f32; n];
            let (wb, vb) = (upload(&w), upload(&vel));
            for (step, &(lr, momentum)) in rates.iter().enumerate() {
                let grad = r.vec(n, -1.0, 1.0);
                let gb = upload(&grad);
                let d = k.bind(g, &table, &v(&gb), &v(&wb), &v(&vb));
                let mut enc = g.device.create_command_encoder(&Default::default());
                {
                    let mut pass = enc.begin_compute_pass(&Default::default());
                    d.record(&mut pass, table.offset(step));
                }
                g.queue.submit([enc.finish()]);
                sgd_momentum::reference(lr, momentum, opts, &grad, &mut w, &mut vel);
                let what = format!("sgd {opts:?} n={n} step={step}");
                assert_close(&format!("{what}: weights"), &g.read_f32(&wb, n), &w, 1e-6);
                assert_close(&format!("{what}: momentum"), &g.read_f32(&vb, n), &vel, 1e-6);
            }
        }
    }
}
