//! The CPU reference of LeNet's training step, composed from the kernels' own CPU references
//! (each accumulating in f64). Tests run the GPU schedule and this side by side.

use super::lenet::{conv1_shape, conv2_shape, pool1_shape, pool2_shape};
use super::{Arena, CLASSES};
use crate::kernels::gemm::{self, Epilogue, Product};
use crate::kernels::{
    bias_grad, conv2d_backward_input, conv2d_backward_weight, conv2d_forward, maxpool2d_backward, maxpool2d_forward,
    sgd_momentum, softmax_cross_entropy,
};

/// What one forward + backward pass produced.
pub struct StepResult {
    pub logits: Vec<f32>,
    /// Summed (not mean) loss over the batch.
    pub loss_sum: f64,
    pub correct: u32,
    /// Gradients in the arena's layout (padding words zero).
    pub grads: Vec<f32>,
    /// Every intermediate tensor by the name the GPU schedule's buffers have: a1, p1, a2, p2,
    /// a3, a4, logits, d_logits, d_a4, d_a3, d_p2, d_a2, d_p1, d_a1.
    pub acts: Vec<(&'static str, Vec<f32>)>,
}

impl StepResult {
    pub fn act(&self, name: &str) -> &[f32] {
        &self.acts.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no intermediate {name}")).1
    }
}

/// Forward, loss and every parameter gradient for one batch.
pub fn forward_backward(
    arena: &Arena,
    in_channels: usize,
    weights: &[f32],
    x: &[f32],
    labels: &[u32],
    batch: usize,
) -> StepResult {
    let w = |n: &str| arena.slice(weights, n);
    let (c1, c2) = (conv1_shape(batch, in_channels), conv2_shape(batch));
    let (s1, s2) = (pool1_shape(batch), pool2_shape(batch));
    let relu = Epilogue { bias: true, relu: true, mask: false };
    let linear = Epilogue { bias: true, relu: false, mask: false };
    let masked = Epilogue { bias: false, relu: false, mask: true };
    let none = Epilogue::default();

    let a1 = conv2d_forward::reference(c1, true, x, w("conv1.weight"), w("conv1.bias"));
    let (p1, i1) = maxpool2d_forward::reference(s1, &a1);
    let a2 = conv2d_forward::reference(c2, true, &p1, w("conv2.weight"), w("conv2.bias"));
    let (p2, i2) = maxpool2d_forward::reference(s2, &a2);
    let a3 = gemm::reference(Product::Forward, (batch, 120, 400), relu, &p2, w("fc1.weight"), w("fc1.bias"), &[]);
    let a4 = gemm::reference(Product::Forward, (batch, 84, 120), relu, &a3, w("fc2.weight"), w("fc2.bias"), &[]);
    let logits =
        gemm::reference(Product::Forward, (batch, CLASSES, 84), linear, &a4, w("fc3.weight"), w("fc3.bias"), &[]);
    let (d_logits, loss_sum, correct) = softmax_cross_entropy::reference(batch, CLASSES, &logits, labels);

    let mut grads = vec![0f32; arena.words];
    let mut put = |name: &str, v: Vec<f32>| arena.slice_mut(&mut grads, name).copy_from_slice(&v);
    put("fc3.weight", gemm::reference(Product::WeightGrad, (batch, CLASSES, 84), none, &d_logits, &a4, &[], &[]));
    put("fc3.bias", bias_grad::reference(batch, CLASSES, &d_logits));
    let d_a4 = gemm::reference(Product::InputGrad, (batch, CLASSES, 84), masked, &d_logits, w("fc3.weight"), &[], &a4);
    put("fc2.weight", gemm::reference(Product::WeightGrad, (batch, 84, 120), none, &d_a4, &a3, &[], &[]));
    put("fc2.bias", bias_grad::reference(batch, 84, &d_a4));
    let d_a3 = gemm::reference(Product::InputGrad, (batch, 84, 120), masked, &d_a4, w("fc2.weight"), &[], &a3);
    put("fc1.weight", gemm::reference(Product::WeightGrad, (batch, 120, 400), none, &d_a3, &p2, &[], &[]));
    put("fc1.bias", bias_grad::reference(batch, 120, &d_a3));
    let d_p2 = gemm::reference(Product::InputGrad, (batch, 120, 400), none, &d_a3, w("fc1.weight"), &[], &[]);
    let d_a2 = maxpool2d_backward::reference(s2, true, &d_p2, &i2, &a2);
    let (dw2, db2) = conv2d_backward_weight::reference(c2, &d_a2, &p1);
    put("conv2.weight", dw2);
    put("conv2.bias", db2);
    let d_p1 = conv2d_backward_input::reference(c2, &d_a2, w("conv2.weight"));
    let d_a1 = maxpool2d_backward::reference(s1, true, &d_p1, &i1, &a1);
    let (dw1, db1) = conv2d_backward_weight::reference(c1, &d_a1, x);
    put("conv1.weight", dw1);
    put("conv1.bias", db1);
    let acts = vec![
        ("a1", a1),
        ("p1", p1),
        ("a2", a2),
        ("p2", p2),
        ("a3", a3),
        ("a4", a4),
        ("logits", logits.clone()),
        ("d_logits", d_logits),
        ("d_a4", d_a4),
        ("d_a3", d_a3),
        ("d_p2", d_p2),
        ("d_a2", d_a2),
        ("d_p1", d_p1),
        ("d_a1", d_a1),
    ];
    StepResult { logits, loss_sum, correct, grads, acts }
}

/// One full SGD-with-momentum training step on the CPU, updating `weights` and `velocity`.
#[allow(clippy::too_many_arguments)]
pub fn train_step(
    arena: &Arena,
    in_channels: usize,
    weights: &mut [f32],
    velocity: &mut [f32],
    x: &[f32],
    labels: &[u32],
    batch: usize,
    lr: f32,
    momentum: f32,
) -> StepResult {
    let r = forward_backward(arena, in_channels, weights, x, labels, batch);
    sgd_momentum::reference(lr, momentum, &r.grads, weights, velocity);
    r
}
