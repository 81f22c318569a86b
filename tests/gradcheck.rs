//! The CPU references of every backward kernel checked by central finite differences of the
//! forward references: for a random cotangent r and L(x) = sum(r * f(x)), the backward
//! reference must give dL/dx. These are the references the GPU kernels are held to.

mod common;
use common::Rng;

use gpu_lenet::kernels::conv2d_forward::ConvShape;
use gpu_lenet::kernels::gemm::{self, Epilogue, Product};
use gpu_lenet::kernels::maxpool2d_forward::PoolShape;
use gpu_lenet::kernels::{
    bias_grad, conv2d_backward_input, conv2d_backward_weight, conv2d_forward, global_avg_pool, maxpool2d_backward,
    maxpool2d_forward, relu, shortcut_option_a, softmax_cross_entropy,
};
use gpu_lenet::model::{self, Arena};
use gpu_lenet::nn::{self, reference, Init, ParamKind};

fn dot(r: &[f32], y: &[f32]) -> f64 {
    r.iter().zip(y).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// Central difference of `f` with respect to `x[i]`, for a sample of indices, against `grad`.
/// Error is measured relative to the largest gradient magnitude.
fn check(what: &str, x: &mut [f32], grad: &[f32], eps: f32, tol: f64, samples: usize, f: &dyn Fn(&[f32]) -> f64) {
    assert_eq!(x.len(), grad.len(), "{what}");
    let scale = grad.iter().fold(0f64, |m, &g| m.max((g as f64).abs())).max(1e-12);
    let mut r = Rng(x.len() as u64);
    let step = (x.len() / samples).max(1);
    let mut worst = 0f64;
    for k in 0..samples.min(x.len()) {
        // Spread the probes over the whole tensor, with a random jitter.
        let i = (k * step + r.below(step as u32) as usize).min(x.len() - 1);
        let orig = x[i];
        x[i] = orig + eps;
        let up = f(x);
        x[i] = orig - eps;
        let down = f(x);
        x[i] = orig;
        let numeric = (up - down) / (2.0 * eps as f64);
        let err = (numeric - grad[i] as f64).abs() / scale;
        worst = worst.max(err);
        assert!(
            err <= tol,
            "{what}: d/dx[{i}] numeric {numeric} vs analytic {} (error {err:e} of max |grad| {scale:e})",
            grad[i]
        );
    }
    assert!(worst.is_finite());
}

#[test]
fn conv2d_backward_references_match_finite_differences() {
    let shapes = [
        ConvShape { batch: 2, cin: 3, h: 12, w: 12, cout: 6, kh: 5, kw: 5, stride: 1, pad: 0 },
        ConvShape { batch: 3, cin: 2, h: 9, w: 11, cout: 4, kh: 3, kw: 2, stride: 1, pad: 0 },
        // ResNet's 3x3 with padding 1, at stride 1 and at stride 2 on odd sizes.
        ConvShape { batch: 2, cin: 3, h: 7, w: 6, cout: 5, kh: 3, kw: 3, stride: 1, pad: 1 },
        ConvShape { batch: 2, cin: 2, h: 9, w: 7, cout: 3, kh: 3, kw: 3, stride: 2, pad: 1 },
    ];
    for s in shapes {
        let mut rng = Rng(42);
        let mut x = rng.vec(s.input_len(), -1.0, 1.0);
        let mut w = rng.vec(s.weight_len(), -0.5, 0.5);
        let mut b = rng.vec(s.cout, -0.5, 0.5);
        let r = rng.vec(s.output_len(), -1.0, 1.0);
        let dx = conv2d_backward_input::reference(s, &r, &w);
        let (dw, db) = conv2d_backward_weight::reference(s, &r, &x);
        let (w0, b0, x0) = (w.clone(), b.clone(), x.clone());
        check("conv dx", &mut x, &dx, 1e-2, 1e-3, 64, &|x| dot(&r, &conv2d_forward::reference(s, false, x, &w0, &b0)));
        check("conv dw", &mut w, &dw, 1e-2, 1e-3, 64, &|w| dot(&r, &conv2d_forward::reference(s, false, &x0, w, &b0)));
        check("conv db", &mut b, &db, 1e-2, 1e-3, 64, &|b| dot(&r, &conv2d_forward::reference(s, false, &x0, &w0, b)));
    }
}

#[test]
fn global_avg_pool_backward_reference_matches_finite_differences() {
    for (planes, plane) in [(6usize, 64usize), (3, 35), (4, 1)] {
        let mut rng = Rng(plane as u64);
        let mut x = rng.vec(planes * plane, -1.0, 1.0);
        let r = rng.vec(planes, -1.0, 1.0);
        let dx = global_avg_pool::reference_backward(plane, &r);
        check("global_avg_pool dx", &mut x, &dx, 1e-2, 1e-3, 64, &|x| {
            dot(&r, &global_avg_pool::reference_forward(plane, x))
        });
    }
}

#[test]
fn shortcut_option_a_backward_reference_matches_finite_differences() {
    use shortcut_option_a::ShortcutShape;
    for s in [
        ShortcutShape { cin: 4, h: 7, w: 6, stride: 2, pad: 2 },
        ShortcutShape { cin: 3, h: 4, w: 4, stride: 1, pad: 1 },
    ] {
        let batch = 2;
        let mut rng = Rng(s.h as u64);
        let mut x = rng.vec(batch * s.input_len(), -1.0, 1.0);
        let r = rng.vec(batch * s.output_len(), -1.0, 1.0);
        let dx = shortcut_option_a::reference_backward(s, batch, &r);
        let f = |x: &[f32]| dot(&r, &shortcut_option_a::reference_forward(s, batch, x));
        check("shortcut dx", &mut x, &dx, 1e-2, 1e-3, 128, &f);
    }
}

#[test]
fn maxpool2d_backward_reference_matches_finite_differences() {
    for s in
        [PoolShape { planes: 4, h: 10, w: 10, k: 2, stride: 2 }, PoolShape { planes: 3, h: 9, w: 9, k: 3, stride: 2 }]
    {
        let mut rng = Rng(7);
        // Distinct values at least 0.01 apart, so an eps of 1e-3 never changes an argmax, and
        // no value within 1e-3 of zero, where the ReLU kinks.
        let n = s.input_len();
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, rng.below(i as u32 + 1) as usize);
        }
        let mut x: Vec<f32> = order.iter().map(|&k| (k as f32 - n as f32 / 2.0 + 0.5) * 0.01).collect();
        let r = rng.vec(s.output_len(), -1.0, 1.0);
        // Plain pool.
        let (_, idx) = maxpool2d_forward::reference(s, &x);
        let dx = maxpool2d_backward::reference(s, false, &r, &idx, &x);
        check("maxpool dx", &mut x, &dx, 1e-3, 1e-3, 128, &|x| dot(&r, &maxpool2d_forward::reference(s, x).0));
        // Pool over a ReLU, with the fused mask: L = sum(r * pool(relu(x))).
        let act = relu::reference_forward(&x);
        let (_, idx) = maxpool2d_forward::reference(s, &act);
        let dx = maxpool2d_backward::reference(s, true, &r, &idx, &act);
        check("maxpool+relu dx", &mut x, &dx, 1e-3, 1e-3, 128, &|x| {
            dot(&r, &maxpool2d_forward::reference(s, &relu::reference_forward(x)).0)
        });
    }
}

#[test]
fn gemm_and_bias_grad_references_match_finite_differences() {
    let (m, n, k) = (5, 7, 11);
    let mut rng = Rng(3);
    let mut x = rng.vec(m * k, -1.0, 1.0);
    let mut w = rng.vec(n * k, -0.5, 0.5);
    let mut b = rng.vec(n, -0.5, 0.5);
    let r = rng.vec(m * n, -1.0, 1.0);
    let lin = Epilogue { bias: true, relu: false, mask: false };
    let none = Epilogue::default();
    let fwd = |x: &[f32], w: &[f32], b: &[f32]| gemm::reference(Product::Forward, (m, n, k), lin, x, w, b, &[]);
    let dx = gemm::reference(Product::InputGrad, (m, n, k), none, &r, &w, &[], &[]);
    let dw = gemm::reference(Product::WeightGrad, (m, n, k), none, &r, &x, &[], &[]);
    let db = bias_grad::reference(m, n, &r);
    let (x0, w0, b0) = (x.clone(), w.clone(), b.clone());
    check("gemm dx", &mut x, &dx, 1e-2, 1e-4, 55, &|x| dot(&r, &fwd(x, &w0, &b0)));
    check("gemm dW", &mut w, &dw, 1e-2, 1e-4, 77, &|w| dot(&r, &fwd(&x0, w, &b0)));
    check("gemm db", &mut b, &db, 1e-2, 1e-4, 7, &|b| dot(&r, &fwd(&x0, &w0, b)));

    // The input grad with the fused ReLU-backward mask: the layer below is h = relu(z), and
    // the mask is read from h. L = sum(r * (relu(z)·Wᵀ)).
    let mut z = Rng(4).vec(m * k, -1.0, 1.0);
    let h = relu::reference_forward(&z);
    let dz = gemm::reference(Product::InputGrad, (m, n, k), Epilogue { mask: true, ..none }, &r, &w0, &[], &h);
    check("gemm masked dz", &mut z, &dz, 1e-3, 1e-4, 55, &|z| {
        dot(&r, &gemm::reference(Product::Forward, (m, n, k), none, &relu::reference_forward(z), &w0, &[], &[]))
    });
}

#[test]
fn softmax_cross_entropy_reference_matches_finite_differences() {
    for (scale, e) in [(1.0f32, 0.0f32), (20.0, 0.0), (1.0, 0.1), (20.0, 0.3)] {
        let (batch, classes) = (6, 10);
        let mut rng = Rng(11);
        let mut logits = rng.vec(batch * classes, -scale, scale);
        let labels: Vec<u32> = (0..batch).map(|_| rng.below(classes as u32)).collect();
        let (grad, _, _) = softmax_cross_entropy::reference_smoothed(batch, classes, e, &logits, &labels);
        check(&format!("softmax-CE dlogits, label smoothing {e}"), &mut logits, &grad, 1e-3, 1e-3, 60, &|l| {
            softmax_cross_entropy::reference_smoothed(batch, classes, e, l, &labels).1 / batch as f64
        });
    }
}

#[test]
fn whole_network_reference_gradients_match_finite_differences() {
    // The composed reference (every layer's backward chained) against the mean loss itself.
    // Per tensor, a directional derivative: along a random direction d over the whole tensor,
    // (L(w + eps d) - L(w - eps d)) / 2 eps must equal <grad, d>. Summing over a whole tensor keeps
    // f32 rounding noise and the odd ReLU/max-pool kink small against the signal.
    for in_channels in [3usize, 1] {
        let net = nn::lenet5(in_channels);
        let arena = Arena::new(&model::param_specs(in_channels), 4);
        let batch = 3;
        let mut rng = Rng(5 + in_channels as u64);
        let mut weights = vec![0f32; arena.words];
        for p in net.params().into_iter().filter(|p| p.kind == ParamKind::Trainable) {
            let Init::Uniform { fan_in } = p.init else { unreachable!("LeNet-5 has no BatchNorm") };
            let bound = 1.0 / (fan_in as f32).sqrt();
            for v in arena.slice_mut(&mut weights, &p.name) {
                *v = rng.uniform(-bound, bound);
            }
        }
        let state = reference::State::new(&net);
        let x = rng.vec(batch * in_channels * 32 * 32, -1.0, 1.0);
        let labels = vec![3u32, 0, 9];
        let step = |w: &[f32]| reference::step(&net, &arena, w, &mut state.clone(), &x, &labels, batch, true);
        let res = step(&weights);
        let loss = |w: &[f32]| step(w).loss_sum / batch as f64;
        for t in &arena.tensors {
            let grad = arena.slice(&res.grads, &t.name);
            // The direction follows the gradient's sign with random magnitudes, so the
            // directional derivative cannot vanish by cancellation; it has unit length, so a
            // step of eps moves each weight by about eps/sqrt(len), small enough to cross few
            // ReLU and max-pool kinks.
            let mut d: Vec<f32> = grad.iter().map(|&g| g.signum() * rng.uniform(0.5, 1.0)).collect();
            let norm = d.iter().map(|&e| (e as f64).powi(2)).sum::<f64>().sqrt() as f32;
            d.iter_mut().for_each(|e| *e /= norm);
            let analytic: f64 = grad.iter().zip(&d).map(|(&g, &e)| g as f64 * e as f64).sum();
            let eps = 5e-5f32;
            let shifted = |sign: f32| {
                let mut w = weights.clone();
                for (v, &e) in arena.slice_mut(&mut w, &t.name).iter_mut().zip(&d) {
                    *v += sign * eps * e;
                }
                loss(&w)
            };
            let numeric = (shifted(1.0) - shifted(-1.0)) / (2.0 * eps as f64);
            let err = (numeric - analytic).abs() / analytic.abs();
            assert!(
                err < 2e-2,
                "lenet {} (in_channels {in_channels}): directional derivative numeric {numeric} vs analytic \
                    {analytic} (relative error {err:e})",
                t.name
            );
        }
    }
}
