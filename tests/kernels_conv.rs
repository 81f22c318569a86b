//! The convolution kernels against their CPU references on the adapter CI has (forward, fused
//! with ReLU and max-pool, input and weight grads, the pooled variants): LeNet's own shapes,
//! batch 1, odd batches, odd spatial sizes, non-square kernels, several seeds.

mod common;
mod kernel_helpers;
use common::*;
use kernel_helpers::*;

use gpu_lenet::kernels::conv2d_backward_input::{self, Conv2dBackwardInput, Conv2dBackwardInputPooled};
use gpu_lenet::kernels::conv2d_backward_weight::{self, Conv2dBackwardWeight, Conv2dBackwardWeightPooled};
use gpu_lenet::kernels::conv2d_forward::{self, Conv2dForward, ConvShape, Input, Tiles};
use gpu_lenet::kernels::maxpool2d_backward;
use gpu_lenet::kernels::maxpool2d_forward::{self, PoolShape};
use gpu_lenet::kernels::{run_all, subgroup_sharing, tolerance, View, UNIFORM_SLACK_BYTES};

fn conv_shapes() -> Vec<ConvShape> {
    let c = |batch, cin, h, w, cout, kh, kw| ConvShape { batch, cin, h, w, cout, kh, kw, stride: 1, pad: 0 };
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
