//! The convolution kernels with stride and zero padding (ResNet-20's 3x3 convolutions) against
//! their CPU references: ResNet-20's own shapes at small batches, weights too large for one
//! uniform binding (64 -> 64 channels), stride 2 on odd sizes, channels that are not a multiple
//! of 4, batch 1, a partial batch, a 5x5 kernel with padding 2; the input grad also adding to
//! what its output holds (the second branch of a residual block).

mod common;
mod kernel_helpers;
use common::*;
use kernel_helpers::*;

use gpu_lenet::kernels::conv2d_backward_input::{self, Conv2dBackwardInput};
use gpu_lenet::kernels::conv2d_backward_weight::{self, Conv2dBackwardWeight};
use gpu_lenet::kernels::conv2d_forward::{self, Conv2dForward, ConvShape, Tiles};
use gpu_lenet::kernels::{run_all, subgroup_sharing, tolerance, UNIFORM_SLACK_BYTES};

#[allow(clippy::too_many_arguments)]
fn c(batch: usize, cin: usize, h: usize, w: usize, cout: usize, k: usize, stride: usize, pad: usize) -> ConvShape {
    ConvShape { batch, cin, h, w, cout, kh: k, kw: k, stride, pad }
}

fn shapes() -> Vec<ConvShape> {
    vec![
        c(3, 3, 32, 32, 16, 3, 1, 1),  // ResNet-20's first convolution
        c(2, 16, 32, 32, 32, 3, 2, 1), // layer2.0.conv1: stride 2
        c(2, 64, 8, 8, 64, 3, 1, 1),   // layer3: 147 KB of weights, four uniform blocks
        c(1, 32, 16, 16, 64, 3, 2, 1), // layer3.0.conv1 at batch 1: 73 KB of weights
        c(5, 5, 9, 11, 6, 3, 2, 1),    // stride 2 on odd sizes, 5 and 6 channels
        c(3, 7, 13, 10, 5, 3, 1, 1),   // odd sizes, output width 10
        c(2, 3, 11, 9, 4, 5, 2, 2),    // 5x5, padding 2, stride 2
        c(17, 6, 8, 8, 10, 3, 1, 1),   // a partial batch of 17
    ]
}

/// x, padded with the slack uniform windows need when `slack`.
fn with_slack(v: &[f32], slack: bool) -> Vec<f32> {
    let mut v = v.to_vec();
    if slack {
        v.resize(v.len() + UNIFORM_SLACK_BYTES as usize / 4, 0.0);
    }
    v
}

#[test]
fn strided_padded_conv2d_forward_matches_reference() {
    let g = gpu();
    for s in shapes() {
        let mut kernels = vec![
            (Conv2dForward::new(g, s, false), true, false),
            (Conv2dForward::without_bias(g, s, true), false, true),
        ];
        if subgroup_sharing(g, 64) && s.batch <= 2 {
            kernels.push((
                Conv2dForward::with_options(g, s, false, Tiles { co: s.cout.min(2), quads: 2 }, false),
                true,
                false,
            ));
        }
        for (k, bias, relu) in &kernels {
            let mut r = Rng(7 + s.batch as u64 + s.cin as u64);
            let x = r.vec(s.input_len(), -1.0, 1.0);
            let w = r.vec(s.weight_len(), -0.3, 0.3);
            let b = if *bias { r.vec(s.cout, -0.3, 0.3) } else { vec![0.0; s.cout] };
            let want = conv2d_forward::reference(s, *relu, &x, &w, &b);
            for slack in [false, true] {
                let (xb, wb, bb, yb) = (upload(&with_slack(&x, slack)), upload(&w), upload(&b), out(s.output_len()));
                let ds = k.bind(g, s.batch, &v(&xb), &v(&wb), &v(&bb), &v(&yb));
                run_all(g, &ds.iter().collect::<Vec<_>>());
                let what = format!("conv2d_forward {s:?} bias={bias} relu={relu} slack={slack}");
                assert_close(&what, &read(&yb), &want, tolerance(s.cin * s.kh * s.kw));
            }
        }
    }
}

#[test]
fn strided_padded_conv2d_backward_input_matches_reference() {
    let g = gpu();
    for s in shapes() {
        let mut kernels =
            vec![(Conv2dBackwardInput::new(g, s), false), (Conv2dBackwardInput::accumulating(g, s), true)];
        if s.batch <= 2 {
            let t = Tiles { co: s.cin.min(3), quads: 2 };
            kernels.push((Conv2dBackwardInput::build(g, s, t, false, false), false));
        }
        for (k, accumulate) in &kernels {
            let mut r = Rng(11 + s.batch as u64 + s.cout as u64);
            let dy = r.vec(s.output_len(), -1.0, 1.0);
            let w = r.vec(s.weight_len(), -0.3, 0.3);
            let before = r.vec(s.input_len(), -1.0, 1.0);
            let mut want = conv2d_backward_input::reference(s, &dy, &w);
            if *accumulate {
                want.iter_mut().zip(&before).for_each(|(a, b)| *a += b);
            }
            for slack in [false, true] {
                let (dyb, wb, dxb) = (upload(&with_slack(&dy, slack)), upload(&w), upload(&before));
                let ds = k.bind(g, s.batch, &v(&dyb), &v(&wb), &v(&dxb));
                run_all(g, &ds.iter().collect::<Vec<_>>());
                let what = format!("conv2d_backward_input {s:?} accumulate={accumulate} slack={slack}");
                assert_close(&what, &read(&dxb)[..want.len()], &want, tolerance(s.cout * s.kh * s.kw + 1));
            }
        }
    }
}

#[test]
fn strided_padded_conv2d_backward_weight_matches_reference() {
    let g = gpu();
    for s in shapes() {
        let mut variants = vec![Conv2dBackwardWeight::new(g, s), Conv2dBackwardWeight::with_rows(g, s, 3)];
        if Conv2dBackwardWeight::subgroups_usable(g) {
            variants.push(Conv2dBackwardWeight::with_options(g, s, !Conv2dBackwardWeight::subgroups_pay(g)));
        }
        for k in &variants {
            let mut r = Rng(13 + s.batch as u64 + s.cout as u64);
            let dy = r.vec(s.output_len(), -1.0, 1.0);
            let x = r.vec(s.input_len(), -1.0, 1.0);
            let (dw, db) = conv2d_backward_weight::reference(s, &dy, &x);
            let n = s.batch * s.oh() * s.ow();
            for slack in [false, true] {
                let (dyb, xb) = (upload(&with_slack(&dy, slack)), upload(&with_slack(&x, slack)));
                let (dwb, dbb) = (out(s.weight_len()), out(s.cout));
                let d = k.bind(g, s.batch, &v(&dyb), &v(&xb), &v(&dwb), &v(&dbb));
                run_all(g, &d.all());
                let what = format!("conv2d_backward_weight {s:?} {} slack={slack}", k.variant());
                assert_close(&format!("{what} dw"), &read(&dwb), &dw, tolerance(n));
                assert_close(&format!("{what} db"), &read(&dbb), &db, tolerance(n));
            }
        }
    }
}
