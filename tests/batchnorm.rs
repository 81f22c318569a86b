//! BatchNorm2d: the CPU references of its backward against finite differences of its forward,
//! and the GPU kernels (training forward with the running-statistics update, evaluation
//! forward, backward) against those references on awkward shapes: batch 1, odd batches, a 1x1
//! map, several seeds, a channel whose values are all equal (variance 0).

mod common;
use common::*;

use gpu_lenet::kernels::batchnorm2d::{self, BatchNorm2d, BnShape, BnState};
use gpu_lenet::kernels::{run_all, tolerance, View};

/// The first `n` values of a buffer (buffers may be rounded up in size).
fn read_n(b: &wgpu::Buffer, n: usize) -> Vec<f32> {
    read(b)[..n].to_vec()
}

fn dot(r: &[f32], y: &[f32]) -> f64 {
    r.iter().zip(y).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// max |numeric - analytic| over every element, relative to the largest analytic magnitude.
fn finite_difference_error(x: &mut [f32], grad: &[f32], eps: f32, f: &dyn Fn(&[f32]) -> f64) -> f64 {
    let scale = grad.iter().fold(0f64, |m, &g| m.max((g as f64).abs())).max(1e-12);
    let mut worst = 0f64;
    for i in 0..x.len() {
        let orig = x[i];
        x[i] = orig + eps;
        let up = f(x);
        x[i] = orig - eps;
        let down = f(x);
        x[i] = orig;
        worst = worst.max(((up - down) / (2.0 * eps as f64) - grad[i] as f64).abs() / scale);
    }
    worst
}

#[test]
fn batchnorm2d_backward_reference_matches_finite_differences() {
    for (s, batch) in [(BnShape { channels: 3, plane: 25 }, 2), (BnShape { channels: 2, plane: 1 }, 3)] {
        let mut r = Rng(7 + s.plane as u64);
        let x = r.vec(batch * s.channels * s.plane, -2.0, 2.0);
        let gamma = r.vec(s.channels, 0.5, 1.5);
        let beta = r.vec(s.channels, -0.5, 0.5);
        let cot = r.vec(x.len(), -1.0, 1.0);
        let (rm, rv) = (vec![0f32; s.channels], vec![1f32; s.channels]);
        let loss = |x: &[f32], g: &[f32], b: &[f32]| {
            dot(&cot, &batchnorm2d::reference_forward_train(s, batch, false, x, g, b, &rm, &rv).y)
        };
        let (dx, dgamma, dbeta) = batchnorm2d::reference_backward(s, batch, &x, &cot, &gamma);
        let what = format!("{s:?} batch {batch}");
        let e = finite_difference_error(&mut x.clone(), &dx, 1e-3, &|v| loss(v, &gamma, &beta));
        assert!(e < 2e-3, "{what}: dx off by {e:e}");
        let e = finite_difference_error(&mut gamma.clone(), &dgamma, 1e-3, &|v| loss(&x, v, &beta));
        assert!(e < 2e-3, "{what}: dgamma off by {e:e}");
        let e = finite_difference_error(&mut beta.clone(), &dbeta, 1e-3, &|v| loss(&x, &gamma, v));
        assert!(e < 2e-3, "{what}: dbeta off by {e:e}");
        // The gradient through the batch statistics sums to zero over each channel.
        let sums: Vec<f64> = (0..s.channels)
            .map(|c| {
                (0..batch)
                    .flat_map(|n| (0..s.plane).map(move |q| (n * s.channels + c) * s.plane + q))
                    .map(|i| dx[i] as f64)
                    .sum()
            })
            .collect();
        assert!(sums.iter().all(|v| v.abs() < 1e-4), "{what}: {sums:?}");
    }
}

#[test]
fn batchnorm2d_refuses_training_on_one_value_per_channel() {
    let s = BnShape { channels: 16, plane: 1 };
    let e = s.check_training_batch(1).unwrap_err();
    assert!(e.contains("more than 1 value per channel") && e.contains("[1, 16"), "{e}");
    assert!(s.check_training_batch(2).is_ok());
    assert!(BnShape { channels: 6, plane: 784 }.check_training_batch(1).is_ok());
}

#[test]
fn batchnorm2d_kernels_match_reference() {
    let g = gpu();
    let cases = [
        (BnShape { channels: 6, plane: 28 * 28 }, 64, true), // LeNet-BN's bn1 at batch 64
        (BnShape { channels: 16, plane: 10 * 10 }, 13, true), // bn2, an odd partial batch
        (BnShape { channels: 6, plane: 28 * 28 }, 1, false), // batch 1 (legal: 784 values)
        (BnShape { channels: 5, plane: 7 * 7 }, 3, false),   // odd everything
        (BnShape { channels: 16, plane: 1 }, 2, true),       // a 1x1 map: 2 values per channel
    ];
    for (s, batch, relu) in cases {
        let k = BatchNorm2d::new(g, s, relu);
        for seed in [1u64, 2, 3] {
            let what = format!("{s:?} batch {batch} relu {relu} seed {seed}");
            let mut r = Rng(seed * 101 + s.plane as u64);
            let n = batch * s.channels * s.plane;
            let mut x = r.vec(n, -3.0, 5.0);
            // Channel 0 constant: variance 0, so y = beta there.
            for b in 0..batch {
                x[b * s.channels * s.plane..][..s.plane].iter_mut().for_each(|v| *v = 0.7);
            }
            let gamma = r.vec(s.channels, 0.5, 1.5);
            let beta = r.vec(s.channels, -0.5, 0.5);
            let rm0 = r.vec(s.channels, -0.2, 0.2);
            let rv0 = r.vec(s.channels, 0.5, 2.0);
            let dy = r.vec(n, -1.0, 1.0);
            let (xb, gb, bb) = (upload(&x), upload(&gamma), upload(&beta));
            let (rmb, rvb, saved, y) = (upload(&rm0), upload(&rv0), out(2 * s.channels), out(n));
            let state = BnState {
                gamma: &View::whole(&gb),
                beta: &View::whole(&bb),
                running_mean: &View::whole(&rmb),
                running_var: &View::whole(&rvb),
                saved: &View::whole(&saved),
            };
            let fwd = k.bind_forward(g, batch, true, &View::whole(&xb), &state, &View::whole(&y));
            run_all(g, &[&fwd]);
            let want = batchnorm2d::reference_forward_train(s, batch, relu, &x, &gamma, &beta, &rm0, &rv0);
            let tol = tolerance(batch * s.plane);
            assert_close(&format!("{what}: y"), &read_n(&y, n), &want.y, tol);
            assert_close(&format!("{what}: running_mean"), &read_n(&rmb, s.channels), &want.running_mean, tol);
            assert_close(&format!("{what}: running_var"), &read_n(&rvb, s.channels), &want.running_var, tol);
            let sv = read_n(&saved, 2 * s.channels);
            let mean: Vec<f32> = (0..s.channels).map(|c| sv[2 * c]).collect();
            let invstd: Vec<f32> = (0..s.channels).map(|c| sv[2 * c + 1]).collect();
            let want_mean: Vec<f32> = want.mean.iter().map(|&m| m as f32).collect();
            let want_invstd: Vec<f32> =
                want.var.iter().map(|&v| (1.0 / (v + batchnorm2d::EPS as f64).sqrt()) as f32).collect();
            assert_close(&format!("{what}: saved mean"), &mean, &want_mean, tol);
            assert_close(&format!("{what}: saved invstd"), &invstd, &want_invstd, tol);

            // Backward, dy masked by the ReLU where there is one (as the max-pool's backward does).
            let dy_masked: Vec<f32> =
                dy.iter().zip(&want.y).map(|(&d, &yv)| if relu && yv <= 0.0 { 0.0 } else { d }).collect();
            let (dyb, dgb, dbb, dxb) = (upload(&dy_masked), out(s.channels), out(s.channels), out(n));
            let (v, vg) = (View::whole, View::whole(&gb));
            let bwd = k.bind_backward(g, batch, &v(&xb), &v(&dyb), &vg, &v(&saved), &v(&dgb), &v(&dbb), &v(&dxb));
            run_all(g, &[&bwd]);
            let (dx, dgamma, dbeta) = batchnorm2d::reference_backward(s, batch, &x, &dy_masked, &gamma);
            assert_close(&format!("{what}: dgamma"), &read_n(&dgb, s.channels), &dgamma, tol);
            assert_close(&format!("{what}: dbeta"), &read_n(&dbb, s.channels), &dbeta, tol);
            // dx is a difference of terms of size |gamma * invstd * dy| that cancel (almost
            // entirely for 2 values per channel): its error is measured against those terms,
            // channel by channel.
            let got_dx = read_n(&dxb, n);
            for c in 0..s.channels {
                let (mut err, mut term) = (0f64, 0f64);
                for i in (0..n).filter(|i| (i / s.plane) % s.channels == c) {
                    err = err.max((got_dx[i] as f64 - dx[i] as f64).abs());
                    term = term.max((gamma[c] * invstd[c] * dy_masked[i]).abs() as f64);
                }
                assert!(
                    err <= tol * term,
                    "{what}: dx of channel {c} off by {err:e}, terms {term:e}, tolerance {tol:e}"
                );
            }

            // Evaluation: the running statistics (those the training forward just wrote).
            let (rm1, rv1) = (read_n(&rmb, s.channels), read_n(&rvb, s.channels));
            let ye = out(n);
            let eval = k.bind_forward(g, batch, false, &View::whole(&xb), &state, &View::whole(&ye));
            run_all(g, &[&eval]);
            let want_eval = batchnorm2d::reference_forward_eval(s, batch, relu, &x, &gamma, &beta, &rm1, &rv1);
            assert_close(&format!("{what}: eval y"), &read_n(&ye, n), &want_eval, tol);
            assert_eq!(read_n(&rmb, s.channels), rm1, "{what}: evaluation changed the running mean");
        }
    }
}

#[test]
fn batchnorm2d_with_a_residual_add_and_its_own_relu_mask_matches_reference() {
    use gpu_lenet::kernels::batchnorm2d::BnFusion;
    let g = gpu();
    // ResNet's 8x8 planes (read as vec4s) and an odd plane (read as scalars).
    for (s, batch) in [(BnShape { channels: 5, plane: 64 }, 3), (BnShape { channels: 3, plane: 7 * 7 }, 2)] {
        let n = batch * s.channels * s.plane;
        let mut r = Rng(31 + s.plane as u64);
        let (x, res, dy) = (r.vec(n, -3.0, 5.0), r.vec(n, -1.0, 1.0), r.vec(n, -1.0, 1.0));
        let (gamma, beta) = (r.vec(s.channels, 0.5, 1.5), r.vec(s.channels, -0.5, 0.5));
        let (rm0, rv0) = (vec![0f32; s.channels], vec![1f32; s.channels]);
        let bn = batchnorm2d::reference_forward_train(s, batch, false, &x, &gamma, &beta, &rm0, &rv0);
        let want_y: Vec<f32> = bn.y.iter().zip(&res).map(|(a, b)| (a + b).max(0.0)).collect();
        let tol = tolerance(batch * s.plane);
        let (xb, rb, gb, bb) = (upload(&x), upload(&res), upload(&gamma), upload(&beta));
        let (rmb, rvb, saved, y) = (upload(&rm0), upload(&rv0), out(2 * s.channels), out(n));
        let v = View::whole;
        let state =
            BnState { gamma: &v(&gb), beta: &v(&bb), running_mean: &v(&rmb), running_var: &v(&rvb), saved: &v(&saved) };
        let k = BatchNorm2d::fused(g, s, BnFusion { relu: true, residual: true, mask: false });
        let fwd = k.bind_forward_residual(g, batch, true, &v(&xb), &v(&rb), &state, &v(&y));
        run_all(g, &[&fwd]);
        assert_close(&format!("{s:?} relu(bn(x) + res)"), &read_n(&y, n), &want_y, tol);

        // The backward masking dy by its own ReLU's output (bn + ReLU, the grad unmasked).
        let k = BatchNorm2d::fused(g, s, BnFusion { relu: true, residual: false, mask: true });
        let relu_y: Vec<f32> = bn.y.iter().map(|v| v.max(0.0)).collect();
        let masked: Vec<f32> = dy.iter().zip(&relu_y).map(|(&d, &yv)| if yv > 0.0 { d } else { 0.0 }).collect();
        let (dx, dgamma, dbeta) = batchnorm2d::reference_backward(s, batch, &x, &masked, &gamma);
        let (dyb, yb, dgb, dbb, dxb) = (upload(&dy), upload(&relu_y), out(s.channels), out(s.channels), out(n));
        let bwd = k.bind_backward_masked(
            g,
            batch,
            &v(&xb),
            &v(&dyb),
            &v(&yb),
            &v(&gb),
            &v(&saved),
            &v(&dgb),
            &v(&dbb),
            &v(&dxb),
        );
        run_all(g, &[&bwd]);
        assert_close(&format!("{s:?} masked dgamma"), &read_n(&dgb, s.channels), &dgamma, tol);
        assert_close(&format!("{s:?} masked dbeta"), &read_n(&dbb, s.channels), &dbeta, tol);
        assert_close(&format!("{s:?} masked dx"), &read_n(&dxb, n), &dx, 10.0 * tol);
    }
}
