//! Every GPU kernel against its CPU reference on the adapter CI has: LeNet's own shapes,
//! batch 1, sizes that are multiples of no tile or workgroup size, odd spatial sizes, several
//! seeds, ties for max-pool and logits of +-80 for the loss.

mod common;
use common::*;

use gpu_lenet::kernels::conv2d_backward_input::{self, Conv2dBackwardInput, Conv2dBackwardInputPooled};
use gpu_lenet::kernels::conv2d_backward_weight::{self, Conv2dBackwardWeight, Conv2dBackwardWeightPooled};
use gpu_lenet::kernels::conv2d_forward::{self, Conv2dForward, ConvShape, Input, Tiles};
use gpu_lenet::kernels::gemm::{self, Epilogue, Gemm, Product, Variant};
use gpu_lenet::kernels::maxpool2d_backward::{self, Maxpool2dBackward};
use gpu_lenet::kernels::maxpool2d_forward::{self, Maxpool2dForward, PoolShape};
use gpu_lenet::kernels::relu::{self, Relu};
use gpu_lenet::kernels::sgd_momentum::{self, SgdMomentum};
use gpu_lenet::kernels::softmax_cross_entropy::{self, SoftmaxCrossEntropy, METRICS_WORDS};
use gpu_lenet::kernels::{
    bias_grad, bias_grad::BiasGrad, run_all, subgroup_sharing, tolerance, StepTable, View, UNIFORM_SLACK_BYTES,
};

const SEEDS: [u64; 3] = [1, 2, 3];

fn conv_shapes() -> Vec<ConvShape> {
    let c = |batch, cin, h, w, cout, kh, kw| ConvShape { batch, cin, h, w, cout, kh, kw };
    vec![
        c(64, 3, 32, 32, 6, 5, 5),  // LeNet conv1
        c(64, 6, 14, 14, 16, 5, 5), // LeNet conv2
        c(1, 3, 32, 32, 6, 5, 5),   // batch 1
        c(13, 6, 14, 14, 16, 5, 5), // the partial last batch of a CIFAR epoch at batch 64 is 16; 13 is prime
        c(3, 2, 11, 13, 5, 3, 3),   // odd spatial sizes, output width 11 (not a multiple of 4)
        c(2, 1, 9, 7, 3, 5, 2),     // non-square kernel, output 5x6
        c(5, 1, 32, 32, 6, 5, 5),   // Fashion-MNIST's one input channel
    ]
}

fn v(b: &wgpu::Buffer) -> View {
    View::whole(b)
}

/// Register tilings to test besides each kernel's default: one channel and one quad, wide
/// tiles that overhang the row and the channel count, and a GPU's default (2 channels).
/// (Each tiling is its own pipeline to compile, so the extra ones run on a few shapes only.)
/// Each with the adapter's default for sharing weight loads across a subgroup; where the adapter
/// can share, the default tiling also runs without sharing (the kernel other adapters get).
fn tilings(s: &ConvShape, channels: usize) -> Vec<(Option<Tiles>, Option<bool>)> {
    let mut t = vec![(None, None)];
    if subgroup_sharing(gpu(), 64) {
        t.push((Some(Tiles { co: channels.min(8), quads: 1 }), Some(false)));
    }
    if s.batch == 2 || s.batch == 3 || (s.batch == 64 && s.cin == 3) {
        t.extend(
            [
                Tiles { co: 1, quads: 1 },
                Tiles { co: channels.min(3), quads: 8 },
                Tiles { co: channels.min(5), quads: 3 },
            ]
            .map(|t| (Some(t), None)),
        );
        // What a GPU runs: 2 channels a lane, no subgroup sharing.
        t.push((Some(Tiles { co: channels.min(2), quads: 1 }), Some(false)));
    }
    t
}

#[test]
fn conv2d_forward_matches_reference() {
    let g = gpu();
    for s in conv_shapes() {
        for relu in [true, false] {
            for (tiles, share) in tilings(&s, s.cout) {
                let k = match (tiles, share) {
                    (Some(t), Some(share)) => Conv2dForward::with_options(g, s, relu, t, share),
                    (Some(t), None) => Conv2dForward::with_tiles(g, s, relu, t),
                    (None, _) => Conv2dForward::new(g, s, relu),
                };
                let share = k.shares_weights();
                for seed in SEEDS {
                    let mut r = Rng(seed * 1000 + s.batch as u64);
                    let x = r.vec(s.input_len(), -1.0, 1.0);
                    let w = r.vec(s.weight_len(), -0.3, 0.3);
                    let b = r.vec(s.cout, -0.3, 0.3);
                    let want = conv2d_forward::reference(s, relu, &x, &w, &b);
                    // Without slack after x the storage kernel runs; with it, uniform windows.
                    for slack in [0, UNIFORM_SLACK_BYTES as usize / 4] {
                        let mut xs = x.clone();
                        xs.resize(x.len() + slack, 0.0);
                        let (xb, wb, bb, yb) = (upload(&xs), upload(&w), upload(&b), out(s.output_len()));
                        let ds = k.bind(g, s.batch, &v(&xb), &v(&wb), &v(&bb), &v(&yb));
                        if slack > 0 && k.input() == Input::UniformWindows && s.batch > 16 {
                            assert!(ds.len() > 1, "several windows expected for {s:?}");
                        }
                        run_all(g, &ds.iter().collect::<Vec<_>>());
                        let what = format!(
                            "conv2d_forward {s:?} relu={relu} tiles={tiles:?} shared={share} seed={seed} slack={slack}"
                        );
                        assert_close(&what, &read(&yb), &want, tolerance(s.cin * s.kh * s.kw));
                    }
                }
            }
        }
    }
}

#[test]
fn conv2d_relu_maxpool_forward_matches_reference() {
    use gpu_lenet::kernels::conv2d_relu_maxpool_forward::{self as fused, Conv2dReluMaxpoolForward};
    let g = gpu();
    for s in conv_shapes() {
        let mut kernels = vec![Conv2dReluMaxpoolForward::new(g, s)];
        if s.batch == 2 || s.batch == 3 || (s.batch == 64 && s.cin == 3) {
            // One channel per invocation, and all of them (more than 4 overhangs the channels).
            kernels.push(Conv2dReluMaxpoolForward::with_options(g, s, 1, subgroup_sharing(g, 64)));
            kernels.push(Conv2dReluMaxpoolForward::with_options(g, s, s.cout.min(8), subgroup_sharing(g, 64)));
        }
        if subgroup_sharing(g, 64) {
            kernels.push(Conv2dReluMaxpoolForward::with_options(g, s, s.cout.div_ceil(s.cout.div_ceil(4)), false));
        }
        for (k, seed) in kernels.iter().flat_map(|k| SEEDS.map(|seed| (k, seed))) {
            let mut r = Rng(seed * 1009 + s.batch as u64);
            let x = r.vec(s.input_len(), -1.0, 1.0);
            let w = r.vec(s.weight_len(), -0.3, 0.3);
            let b = r.vec(s.cout, -0.3, 0.3);
            let (want, want_idx) = fused::reference(s, &x, &w, &b);
            let conv = conv2d_forward::reference(s, true, &x, &w, &b);
            let ps = k.pooled(s.batch);
            for slack in [0, UNIFORM_SLACK_BYTES as usize / 4] {
                let mut xs = x.clone();
                xs.resize(x.len() + slack, 0.0);
                let (xb, wb, bb, pb, ib) =
                    (upload(&xs), upload(&w), upload(&b), out(ps.output_len()), out(ps.output_len()));
                let ds = k.bind(g, s.batch, &v(&xb), &v(&wb), &v(&bb), &v(&pb), &v(&ib));
                if slack > 0 && k.input() == Input::UniformWindows && s.batch > 16 {
                    assert!(ds.len() > 1, "several windows expected for {s:?}");
                }
                run_all(g, &ds.iter().collect::<Vec<_>>());
                let what = format!(
                    "conv2d_relu_maxpool_forward {s:?} shared={} seed={seed} slack={slack}",
                    k.shares_weights()
                );
                let tol = tolerance(s.cin * s.kh * s.kw);
                let got = read(&pb);
                assert_close(&what, &got, &want, tol);
                if want.len() > 1000 {
                    assert!(want_idx.contains(&maxpool2d_forward::NO_GRAD), "{what}: windows without grad expected");
                }
                // The argmax names a maximum of its window: the reference's own where the maximum
                // is clear, else any position whose value is the maximum within rounding; and it
                // is masked exactly where the kernel's own maximum is not positive.
                let scale = want.iter().fold(0f32, |m, &v| m.max(v.abs())).max(1e-30);
                let (oh, ow) = (s.oh(), s.ow());
                for (o, &i) in read_u32(&ib).iter().enumerate() {
                    assert_eq!(
                        i == maxpool2d_forward::NO_GRAD,
                        got[o] <= 0.0 || got[o].is_nan(),
                        "{what}: mask of window {o} (max {})",
                        got[o]
                    );
                    if i == maxpool2d_forward::NO_GRAD {
                        continue;
                    }
                    let plane = o / (ps.oh() * ps.ow());
                    let (py, px) = ((o / ps.ow()) % ps.oh(), o % ps.ow());
                    let (iy, ix) = (i as usize / ow, i as usize % ow);
                    assert!(iy / 2 == py && ix / 2 == px && iy < oh, "{what}: argmax {i} outside window {o}");
                    let v = conv[plane * oh * ow + i as usize];
                    assert!(
                        (v - want[o]).abs() <= tol as f32 * scale,
                        "{what}: argmax {i} of window {o} holds {v}, the maximum is {}",
                        want[o]
                    );
                    if i != want_idx[o] && want_idx[o] != maxpool2d_forward::NO_GRAD {
                        let theirs = conv[plane * oh * ow + want_idx[o] as usize];
                        assert!(
                            (theirs - v).abs() <= tol as f32 * scale,
                            "{what}: argmax {i} != {} at {o} with distinct values",
                            want_idx[o]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn conv2d_backward_input_matches_reference() {
    let g = gpu();
    for s in conv_shapes() {
        for (tiles, share) in tilings(&s, s.cin) {
            let k = match (tiles, share) {
                (Some(t), Some(share)) => Conv2dBackwardInput::with_options(g, s, t, share),
                (Some(t), None) => Conv2dBackwardInput::with_tiles(g, s, t),
                (None, _) => Conv2dBackwardInput::new(g, s),
            };
            let share = k.shares_weights();
            for seed in SEEDS {
                let mut r = Rng(seed * 7 + s.batch as u64);
                let dy = r.vec(s.output_len(), -1.0, 1.0);
                let w = r.vec(s.weight_len(), -0.3, 0.3);
                let want = conv2d_backward_input::reference(s, &dy, &w);
                for slack in [0, UNIFORM_SLACK_BYTES as usize / 4] {
                    let mut dys = dy.clone();
                    dys.resize(dy.len() + slack, 0.0);
                    let (dyb, wb, dxb) = (upload(&dys), upload(&w), out(s.input_len()));
                    let ds = k.bind(g, s.batch, &v(&dyb), &v(&wb), &v(&dxb));
                    if slack > 0 && k.input() == Input::UniformWindows && s.batch > 16 {
                        assert!(ds.len() > 1, "several windows expected for {s:?}");
                    }
                    run_all(g, &ds.iter().collect::<Vec<_>>());
                    let what =
                        format!("conv2d_backward_input {s:?} tiles={tiles:?} shared={share} seed={seed} slack={slack}");
                    assert_close(&what, &read(&dxb), &want, tolerance(s.cout * s.kh * s.kw));
                }
            }
        }
    }
}

#[test]
fn conv2d_backward_weight_matches_reference() {
    let g = gpu();
    for s in conv_shapes() {
        let mut variants = vec![Conv2dBackwardWeight::new(g, s)];
        if Conv2dBackwardWeight::subgroups_usable(g) && s.batch >= 13 {
            variants.push(Conv2dBackwardWeight::with_options(g, s, false));
        }
        // Blocks of 3 output rows (what GPUs run, in blocks of at most 7): most heights leave a short
        // last block.
        variants.push(Conv2dBackwardWeight::with_rows(g, s, 3));
        for (k, seed) in variants.iter().flat_map(|k| SEEDS.map(|seed| (k, seed))) {
            let mut r = Rng(seed * 13 + s.batch as u64);
            let dy = r.vec(s.output_len(), -1.0, 1.0);
            let x = r.vec(s.input_len(), -1.0, 1.0);
            let (dw, db) = conv2d_backward_weight::reference(s, &dy, &x);
            let n = s.batch * s.oh() * s.ow();
            // Without slack after x and dy the storage kernel runs; with it, uniform windows.
            for slack in [0, UNIFORM_SLACK_BYTES as usize / 4] {
                let (mut xs, mut dys) = (x.clone(), dy.clone());
                xs.resize(x.len() + slack, 0.0);
                dys.resize(dy.len() + slack, 0.0);
                let (dyb, xb, dwb, dbb) = (upload(&dys), upload(&xs), out(s.weight_len()), out(s.cout));
                let d = k.bind(g, s.batch, &v(&dyb), &v(&xb), &v(&dwb), &v(&dbb));
                if slack > 0 && k.input() == Input::UniformWindows && s.batch > 16 {
                    assert!(d.partials.len() > 1, "several windows expected for {s:?}");
                }
                let all = d.all();
                run_all(g, &all);
                let what = format!("conv2d_backward_weight {s:?} {} seed={seed} slack={slack}", k.variant());
                assert_close(&format!("{what} dw"), &read(&dwb), &dw, tolerance(n));
                assert_close(&format!("{what} db"), &read(&dbb), &db, tolerance(n));
            }
        }
    }
}

/// A buffer holding `data` and the slack a full last uniform window needs after it.
fn upload_with_slack<T: bytemuck::Pod + Default>(data: &[T]) -> wgpu::Buffer {
    let mut padded = data.to_vec();
    padded.resize(data.len() + UNIFORM_SLACK_BYTES as usize / 4, T::default());
    upload(&padded)
}

/// What the pooled conv-gradient kernels read, on the GPU (the pool's output grad and masked
/// argmax, with slack for uniform windows), and the conv output's grad the unfused path computes
/// from them (the pool's backward reference with the ReLU mask).
struct PooledGrad {
    d_pooled: wgpu::Buffer,
    argmax: wgpu::Buffer,
    d_act: Vec<f32>,
}

/// conv -> ReLU -> 2x2/2 max-pool on a random ReLU output (many windows all zero, so without
/// grad, and some ties) and a random pooled grad.
fn pooled_grad(r: &mut Rng, s: ConvShape) -> PooledGrad {
    let ps = PoolShape { planes: s.batch * s.cout, h: s.oh(), w: s.ow(), k: 2, stride: 2 };
    let act: Vec<f32> = (0..s.output_len()).map(|_| (r.below(5) as f32 - 2.0).max(0.0) * r.uniform(0.5, 1.0)).collect();
    let (pooled, idx) = maxpool2d_forward::reference(ps, &act);
    let masked = maxpool2d_forward::masked_argmax(&pooled, &idx);
    let d_pooled = r.vec(ps.output_len(), -1.0, 1.0);
    let d_act = maxpool2d_backward::reference(ps, true, &d_pooled, &idx, &act);
    PooledGrad { d_pooled: upload_with_slack(&d_pooled), argmax: upload_with_slack(&masked), d_act }
}

/// conv -> ReLU -> 2x2/2 max-pool, and the weight grad taken from the pool's output grad and
/// masked argmax (pool1's backward fused into conv1's weight grad), against the references of
/// the pool's backward (with the ReLU mask) and the weight grad. Where the adapter does not run
/// the fused kernel (it needs 8-lane subgroups and uniform windows) there is nothing to test.
#[test]
fn conv2d_backward_weight_pooled_matches_reference() {
    let g = gpu();
    for s in conv_shapes().into_iter().filter(|s| s.oh() >= 2 && s.ow() >= 2) {
        let Some(k) = Conv2dBackwardWeightPooled::new(g, s) else {
            eprintln!("conv2d_backward_weight_pooled: not run on this adapter");
            return;
        };
        for seed in SEEDS {
            let mut r = Rng(seed * 17 + s.batch as u64);
            let p = pooled_grad(&mut r, s);
            let x = r.vec(s.input_len(), -1.0, 1.0);
            let (dw, db) = conv2d_backward_weight::reference(s, &p.d_act, &x);
            let (xb, dwb, dbb) = (upload_with_slack(&x), out(s.weight_len()), out(s.cout));
            let d = k
                .bind(g, s.batch, &v(&p.d_pooled), &v(&p.argmax), &v(&xb), &v(&dwb), &v(&dbb))
                .expect("buffers have slack");
            if s.batch > 16 {
                assert!(d.partials.len() > 1, "several windows expected for {s:?}");
            }
            let all = d.all();
            run_all(g, &all);
            let what = format!("conv2d_backward_weight_pooled {s:?} seed={seed}");
            let n = s.batch * s.oh() * s.ow();
            assert_close(&format!("{what} dw"), &read(&dwb), &dw, tolerance(n));
            assert_close(&format!("{what} db"), &read(&dbb), &db, tolerance(n));
            // dw and db in one buffer, db after dw at an aligned offset (as in the parameter
            // arena): the windows sum into them in place, no reduction pass. Run twice: the
            // first window overwrites what a previous step left.
            let db_at = (s.weight_len() * 4).next_multiple_of(256);
            let gb = upload(&vec![5.0f32; db_at / 4 + s.cout]);
            let dwv = View { buffer: gb.clone(), offset: 0, len: s.weight_len() };
            let dbv = View { buffer: gb.clone(), offset: db_at as u64, len: s.cout };
            let d =
                k.bind(g, s.batch, &v(&p.d_pooled), &v(&p.argmax), &v(&xb), &dwv, &dbv).expect("buffers have slack");
            assert!(d.reduce.is_none(), "{what}: dw and db in one buffer should sum in place");
            run_all(g, &d.all());
            run_all(g, &d.all());
            let got = read(&gb);
            assert_close(&format!("{what} dw in place"), &got[..s.weight_len()], &dw, tolerance(n));
            assert_close(&format!("{what} db in place"), &got[db_at / 4..db_at / 4 + s.cout], &db, tolerance(n));
            assert!(got[s.weight_len()..db_at / 4].iter().all(|&v| v == 5.0), "{what}: wrote between dw and db");
        }
    }
}

/// The input grad taken from the pool's output grad and masked argmax (pool2's backward fused
/// into conv2's input grad), against the references of the pool's backward (with the ReLU mask)
/// and the input grad; shapes with even and odd kernel widths (the paired and unpaired loads).
#[test]
fn conv2d_backward_input_pooled_matches_reference() {
    let g = gpu();
    for s in conv_shapes().into_iter().filter(|s| s.oh() >= 2 && s.ow() >= 2) {
        let Some(k) = Conv2dBackwardInputPooled::new(g, s) else {
            eprintln!("conv2d_backward_input_pooled: not run on this adapter");
            return;
        };
        for seed in SEEDS {
            let mut r = Rng(seed * 29 + s.batch as u64);
            let p = pooled_grad(&mut r, s);
            let w = r.vec(s.weight_len(), -0.5, 0.5);
            let want = conv2d_backward_input::reference(s, &p.d_act, &w);
            let (wb, dxb) = (upload(&w), out(s.input_len()));
            let ds = k.bind(g, s.batch, &v(&p.d_pooled), &v(&p.argmax), &v(&wb), &v(&dxb)).expect("buffers have slack");
            run_all(g, &ds.iter().collect::<Vec<_>>());
            let what = format!("conv2d_backward_input_pooled {s:?} seed={seed}");
            assert_close(&what, &read(&dxb), &want, tolerance(s.cout * s.kh * s.kw));
        }
    }
}

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

/// (M, N, K) of a linear layer: batch, outputs, inputs.
fn gemm_shapes() -> Vec<(usize, usize, usize)> {
    vec![
        (64, 120, 400), // fc1
        (64, 84, 120),  // fc2
        (64, 10, 84),   // fc3
        (1, 120, 400),  // batch 1
        (13, 84, 120),  // odd batch
        (65, 13, 7),    // nothing a multiple of the 4x4 tile or the 8x8 workgroup
        (3, 1, 1),
    ]
}

#[test]
fn gemm_matches_reference_for_all_three_products_and_both_variants() {
    let g = gpu();
    // The adapter's default, and where it shares A's loads across a subgroup, the plain kernel.
    let mut kernels = vec![(Gemm::new(g), "default")];
    if subgroup_sharing(g, 8) {
        kernels.push((Gemm::with_sharing(g, false), "unshared"));
    }
    // The storage kernel's other row tilings (1 is what GPUs run; 3 leaves partial tiles).
    for (rows, name) in [(1, "1 row a lane"), (3, "3 rows a lane")] {
        kernels.push((Gemm::with_options(g, false, rows), name));
    }
    // Windows over the reduction summed one (or two) a dispatch, the rest added into C in order.
    kernels.push((Gemm::new(g).with_max_windows(1), "1 window a dispatch"));
    kernels.push((Gemm::with_options(g, false, 4).with_max_windows(2), "2 windows a dispatch"));
    let mut shapes = gemm_shapes();
    // A tall batch: the forward's A (x) spans several 64 KiB uniform windows, and the weight
    // grad accumulates over several windows of dy.
    shapes.push((1100, 120, 400));
    for (m, n, kk) in shapes {
        for seed in SEEDS {
            let mut r = Rng(seed * 101 + m as u64);
            let x = r.vec(m * kk, -1.0, 1.0);
            let w = r.vec(n * kk, -0.3, 0.3);
            let b = r.vec(n, -0.3, 0.3);
            let dy = r.vec(m * n, -1.0, 1.0);
            let act_x = r.vec(m * kk, -1.0, 1.0); // a ReLU mask source shaped like x
            let cases = [
                (Product::Forward, Epilogue { bias: true, relu: true, mask: false }),
                (Product::Forward, Epilogue { bias: true, relu: false, mask: false }),
                (Product::Forward, Epilogue::default()),
                (Product::InputGrad, Epilogue { bias: false, relu: false, mask: true }),
                (Product::InputGrad, Epilogue::default()),
                (Product::WeightGrad, Epilogue::default()),
            ];
            for (product, epi) in cases {
                let (a, bm) = match product {
                    Product::Forward => (&x, &w),
                    Product::InputGrad => (&dy, &w),
                    Product::WeightGrad => (&dy, &x),
                };
                let (rows, cols, red) = gemm::dims(product, m, n, kk);
                let want = gemm::reference(product, (m, n, kk), epi, a, bm, &b, &act_x);
                for ((k, kname), variant) in kernels
                    .iter()
                    .flat_map(|k| [Variant::Storage, Variant::UniformA, Variant::UniformAB].map(|v| (k, v)))
                {
                    // A and B with the slack the uniform variants' last windows need.
                    let pad = |v: &Vec<f32>| {
                        let mut p = v.clone();
                        p.resize(v.len() + (UNIFORM_SLACK_BYTES / 4) as usize, 0.0);
                        p
                    };
                    let (ab, bb, biasb, auxb, cb) =
                        (upload(&pad(a)), upload(&pad(bm)), upload(&b), upload(&act_x), out(rows * cols));
                    let ds = k.bind_variant(
                        g,
                        variant,
                        product,
                        (m, n, kk),
                        epi,
                        &v(&ab),
                        &v(&bb),
                        &v(&biasb),
                        &v(&auxb),
                        &v(&cb),
                    );
                    if variant == Variant::UniformA && m == 1100 {
                        assert!(ds.len() > 1, "{product:?}: expected several uniform windows");
                    }
                    if variant == Variant::UniformAB && n * kk * 4 > 65_536 && product != Product::WeightGrad {
                        // fc1's weights do not fit one window: split over columns (forward) or
                        // the reduction (input grad); B's windows share one dispatch per window
                        // of A (x: 40 rows of 400, dy: 136 of 120) where the kernel may, else a
                        // dispatch each.
                        let a_windows = m.div_ceil(if product == Product::Forward { 40 } else { 136 });
                        if *kname == "1 window a dispatch" {
                            assert!(ds.len() > a_windows, "{kname} {product:?}: expected a dispatch per window of B");
                        } else if *kname == "default" {
                            assert_eq!(
                                ds.len(),
                                a_windows,
                                "{kname} {product:?} m={m}: expected B's windows in one dispatch"
                            );
                        }
                    }
                    run_all(g, &ds.iter().collect::<Vec<_>>());
                    let what = format!("gemm {kname} {variant:?} {product:?} {epi:?} m={m} n={n} k={kk} seed={seed}");
                    assert_close(&what, &read(&cb), &want, tolerance(red));
                }
            }
        }
    }
}

#[test]
fn gemm_weight_grad_with_its_bias_grad_matches_both_references() {
    let g = gpu();
    let mut kernels = vec![(Gemm::new(g), "default")];
    if subgroup_sharing(g, 8) {
        kernels.push((Gemm::with_sharing(g, false), "unshared"));
    }
    kernels.push((Gemm::new(g).with_max_windows(1), "1 window a dispatch"));
    kernels.push((Gemm::with_options(g, false, 4).with_max_windows(3), "3 windows a dispatch"));
    let mut shapes = gemm_shapes();
    shapes.push((1100, 120, 400)); // dy and x over many windows of the reduction
    for (m, n, kk) in shapes {
        for seed in SEEDS {
            let mut r = Rng(seed * 31 + m as u64);
            let x = r.vec(m * kk, -1.0, 1.0);
            let dy = r.vec(m * n, -1.0, 1.0);
            let want_dw = gemm::reference(Product::WeightGrad, (m, n, kk), Epilogue::default(), &dy, &x, &[], &[]);
            let want_db = bias_grad::reference(m, n, &dy);
            for ((k, kname), variant) in
                kernels.iter().flat_map(|k| [Variant::Storage, Variant::UniformA, Variant::UniformAB].map(|v| (k, v)))
            {
                // db starts non-zero: the kernel must write it, not add to it.
                let (dyb, xb, dwb, dbb) =
                    (upload_with_slack(&dy), upload_with_slack(&x), out(n * kk), upload(&vec![7.0f32; n]));
                let what = format!("gemm {kname} {variant:?} weight grad + bias grad m={m} n={n} k={kk} seed={seed}");
                let Some(ds) =
                    k.bind_weight_grad_and_bias(g, variant, (m, n, kk), &v(&dyb), &v(&xb), &v(&dwb), &v(&dbb))
                else {
                    // Only the storage GEMM has no fused kernel (and adapters without uniform windows).
                    assert!(
                        variant == Variant::Storage || k.default_variant() == Variant::Storage,
                        "{what}: not bound"
                    );
                    continue;
                };
                run_all(g, &ds.iter().collect::<Vec<_>>());
                assert_close(&format!("{what}: dW"), &read(&dwb), &want_dw, tolerance(m));
                assert_close(&format!("{what}: db"), &read(&dbb)[..n], &want_db, tolerance(m));
            }
        }
    }
}

#[test]
fn bias_grad_matches_reference() {
    let g = gpu();
    let k = BiasGrad::new(g);
    for (m, n, _) in gemm_shapes() {
        for seed in SEEDS {
            let dy = Rng(seed + 5 * m as u64).vec(m * n, -1.0, 1.0);
            let (dyb, dbb) = (upload(&dy), out(n));
            k.bind(g, m, n, &v(&dyb), &v(&dbb)).run(g);
            assert_close(
                &format!("bias_grad m={m} n={n}"),
                &read(&dbb),
                &bias_grad::reference(m, n, &dy),
                tolerance(m),
            );
        }
    }
}

#[test]
fn relu_forward_and_backward_match_reference() {
    let g = gpu();
    let k = Relu::new(g);
    for n in [1usize, 63, 64, 65, 4704 * 3 + 1] {
        let mut r = Rng(n as u64);
        let x = r.vec(n, -1.0, 1.0);
        let dy = r.vec(n, -1.0, 1.0);
        let (xb, yb, dyb, dxb) = (upload(&x), out(n), upload(&dy), out(n));
        let f = k.bind_forward(g, &v(&xb), &v(&yb));
        let b = k.bind_backward(g, &v(&dyb), &v(&yb), &v(&dxb));
        run_all(g, &[&f, &b]);
        let y = relu::reference_forward(&x);
        assert_eq!(read(&yb), y, "relu forward n={n}");
        assert_eq!(read(&dxb), relu::reference_backward(&dy, &y), "relu backward n={n}");
    }
}

#[test]
fn softmax_cross_entropy_matches_reference_including_large_logits() {
    let g = gpu();
    let k = SoftmaxCrossEntropy::new(g);
    let table = StepTable::sequential(g, 3, 0);
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
                let (grad, loss, correct) = softmax_cross_entropy::reference(batch, classes, &logits, &labels);
                let what = format!("softmax_cross_entropy batch={batch} classes={classes} scale={scale} seed={seed}");
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
    let k = SoftmaxCrossEntropy::new(g);
    let table = StepTable::sequential(g, 1, 0);
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
    let k = SgdMomentum::new(g);
    // Lengths that are not a multiple of 4 take the scalar kernel, the others the vec4 one.
    for n in [1usize, 4, 62_006, 62_008, 62_006 + 64 * 9 + 3] {
        let mut r = Rng(n as u64);
        let mut w = r.vec(n, -1.0, 1.0);
        let mut vel = vec![0f32; n];
        let (wb, vb) = (upload(&w), upload(&vel));
        for step in 0..3 {
            let grad = r.vec(n, -1.0, 1.0);
            let gb = upload(&grad);
            k.bind(g, 0.01, 0.9, &v(&gb), &v(&wb), &v(&vb)).run(g);
            sgd_momentum::reference(0.01, 0.9, &grad, &mut w, &mut vel);
            assert_close(&format!("sgd weights n={n} step={step}"), &g.read_f32(&wb, n), &w, 1e-6);
            assert_close(&format!("sgd momentum n={n} step={step}"), &g.read_f32(&vb, n), &vel, 1e-6);
        }
    }
}
