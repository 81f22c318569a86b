//! The CPU reference of any network described in `nn`: a training (or evaluation) step
//! interpreted layer by layer from the kernels' own CPU references (each accumulating in f64),
//! forward, loss, and backward in reverse, a tensor read by two layers getting both grads. The GPU schedules are tested against it.

use super::{Layer, Network, Op, ParamKind, Source, StepRule};
use crate::kernels::conv2d_forward::ConvShape;
use crate::kernels::gemm::{self, Epilogue, Product};
use crate::kernels::maxpool2d_forward::PoolShape;
use crate::kernels::shortcut_option_a::ShortcutShape;
use crate::kernels::{
    batchnorm2d, bias_grad, conv2d_backward_input, conv2d_backward_weight, conv2d_forward, global_avg_pool,
    maxpool2d_backward, maxpool2d_forward, relu, sgd_momentum, shortcut_option_a, softmax_cross_entropy,
};
use crate::model::{Arena, CLASSES};

/// BatchNorm's running statistics (an arena of their own: evaluation reads them, training
/// updates them, the optimizer never touches them) and the count of training batches.
#[derive(Clone, Debug)]
pub struct State {
    pub arena: Arena,
    pub values: Vec<f32>,
    pub batches_tracked: u64,
}

impl State {
    /// PyTorch's initial statistics: running_mean 0, running_var 1.
    pub fn new(net: &Network) -> State {
        let specs = net.specs(ParamKind::RunningStat);
        let refs: Vec<(&str, Vec<usize>)> = specs.iter().map(|(n, s)| (n.as_str(), s.clone())).collect();
        let arena = Arena::new(&refs, 4);
        let mut values = vec![0f32; arena.words];
        for (n, _) in &specs {
            if n.ends_with(".running_var") {
                arena.slice_mut(&mut values, n).fill(1.0);
            }
        }
        State { arena, values, batches_tracked: 0 }
    }
}

/// What one step produced.
pub struct StepResult {
    pub logits: Vec<f32>,
    /// Summed (not mean) loss over the batch.
    pub loss_sum: f64,
    pub correct: u32,
    /// Gradients in the parameter arena's layout (padding words zero); empty for evaluation.
    pub grads: Vec<f32>,
    /// Each layer's output, in layer order.
    pub outputs: Vec<Vec<f32>>,
    /// The gradient of the loss at each layer's output, summed over the layers reading it
    /// (empty for the layers no gradient reaches, and for evaluation).
    pub output_grads: Vec<Vec<f32>>,
}

fn conv_shape(l: &Layer, batch: usize) -> ConvShape {
    l.conv_shape(batch)
}

fn pool_shape(l: &Layer, batch: usize) -> PoolShape {
    let Op::MaxPool2d { kernel, stride } = l.op else { unreachable!("{} is not a MaxPool2d", l.name) };
    PoolShape { planes: batch * l.input.c, h: l.input.h, w: l.input.w, k: kernel, stride }
}

fn bn_shape(l: &Layer) -> batchnorm2d::BnShape {
    batchnorm2d::BnShape { channels: l.input.c, plane: l.input.h * l.input.w }
}

/// An option-A shortcut layer's shape.
pub fn shortcut_shape(l: &Layer) -> ShortcutShape {
    let Op::ShortcutA { stride, pad } = l.op else { unreachable!("{} is not a ShortcutA", l.name) };
    ShortcutShape { cin: l.input.c, h: l.input.h, w: l.input.w, stride, pad }
}

/// One forward pass, the loss and (with `train`) the backward pass for a batch: BatchNorm uses
/// the batch statistics and updates `state` when training, the running statistics otherwise.
#[allow(clippy::too_many_arguments)]
pub fn step(
    net: &Network,
    arena: &Arena,
    weights: &[f32],
    state: &mut State,
    x: &[f32],
    labels: &[u32],
    batch: usize,
    train: bool,
) -> StepResult {
    step_with(net, arena, weights, state, x, labels, batch, train, 0.0)
}

/// The tensor a layer input reads: the image, or an earlier layer's output.
fn read<'a>(s: Source, x: &'a [f32], outputs: &'a [Vec<f32>]) -> &'a [f32] {
    match s {
        Source::Image => x,
        Source::Layer(j) => &outputs[j],
    }
}

/// [`step`] with the loss's label smoothing.
#[allow(clippy::too_many_arguments)]
pub fn step_with(
    net: &Network,
    arena: &Arena,
    weights: &[f32],
    state: &mut State,
    x: &[f32],
    labels: &[u32],
    batch: usize,
    train: bool,
    label_smoothing: f32,
) -> StepResult {
    step_anchored(net, arena, weights, state, x, labels, batch, train, label_smoothing, &|_| None)
}

/// [`step_with`], each layer's output replaced by `anchor(layer)` where it gives one (the GPU's
/// own value of that tensor, so that each kernel is checked on the inputs it had, and a ReLU's
/// mask is the one the GPU used: a value within rounding of 0 may fall either side).
#[allow(clippy::too_many_arguments)]
pub fn step_anchored(
    net: &Network,
    arena: &Arena,
    weights: &[f32],
    state: &mut State,
    x: &[f32],
    labels: &[u32],
    batch: usize,
    train: bool,
    label_smoothing: f32,
    anchor: &dyn Fn(usize) -> Option<Vec<f32>>,
) -> StepResult {
    let w = |n: &str| arena.slice(weights, n);
    let zeros = vec![0f32; net.layers.iter().map(|l| l.output.c).max().unwrap_or(0)];
    let bias = |l: &Layer, has: bool| if has { w(&format!("{}.bias", l.name)) } else { &zeros[..] };
    let plain = Epilogue { bias: true, relu: false, mask: false };
    let mut outputs: Vec<Vec<f32>> = Vec::new();
    let mut computed: Vec<Vec<f32>> = Vec::new();
    let mut argmax: Vec<Vec<u32>> = Vec::new();
    for (i, l) in net.layers.iter().enumerate() {
        let input = read(l.inputs[0], x, &outputs);
        let mut idx = Vec::new();
        let y = match l.op {
            Op::Conv2d { bias: has, .. } => conv2d_forward::reference(
                conv_shape(l, batch),
                false,
                input,
                w(&format!("{}.weight", l.name)),
                bias(l, has),
            ),
            Op::BatchNorm2d => {
                let (s, n) = (bn_shape(l), &l.name);
                let (g, b) = (w(&format!("{n}.weight")), w(&format!("{n}.bias")));
                let (rm, rv) = (format!("{n}.running_mean"), format!("{n}.running_var"));
                if train {
                    let (m0, v0) = (state.arena.slice(&state.values, &rm), state.arena.slice(&state.values, &rv));
                    let r = batchnorm2d::reference_forward_train(s, batch, false, input, g, b, m0, v0);
                    state.arena.slice_mut(&mut state.values, &rm).copy_from_slice(&r.running_mean);
                    state.arena.slice_mut(&mut state.values, &rv).copy_from_slice(&r.running_var);
                    r.y
                } else {
                    let (m, v) = (state.arena.slice(&state.values, &rm), state.arena.slice(&state.values, &rv));
                    batchnorm2d::reference_forward_eval(s, batch, false, input, g, b, m, v)
                }
            }
            Op::Relu => relu::reference_forward(input),
            Op::MaxPool2d { .. } => {
                let (y, i) = maxpool2d_forward::reference(pool_shape(l, batch), input);
                idx = i;
                y
            }
            Op::Flatten => input.to_vec(),
            Op::Linear { out, bias: has } => {
                let (k, n) = (l.input.len(), &l.name);
                gemm::reference(
                    Product::Forward,
                    (batch, out, k),
                    plain,
                    input,
                    w(&format!("{n}.weight")),
                    bias(l, has),
                    &[],
                )
            }
            Op::Add => input.iter().zip(read(l.inputs[1], x, &outputs)).map(|(a, b)| a + b).collect(),
            Op::ShortcutA { .. } => shortcut_option_a::reference_forward(shortcut_shape(l), batch, input),
            Op::GlobalAvgPool => global_avg_pool::reference_forward(l.input.h * l.input.w, input),
        };
        // The value computed here is the one reported; the anchor, where given, is propagated.
        outputs.push(anchor(i).unwrap_or_else(|| y.clone()));
        computed.push(y);
        argmax.push(idx);
    }
    if train {
        state.batches_tracked += 1;
    }
    let logits = outputs.last().cloned().unwrap_or_default();
    let (d_logits, loss_sum, correct) =
        softmax_cross_entropy::reference_smoothed(batch, CLASSES, label_smoothing, &logits, labels);
    if !train {
        return StepResult {
            logits,
            loss_sum,
            correct,
            grads: Vec::new(),
            outputs: computed,
            output_grads: Vec::new(),
        };
    }

    // Backward, layers in reverse: a layer's output grad is complete once every layer reading it
    // (all later ones) has added its part.
    let mut grads = vec![0f32; arena.words];
    let mut put = |name: String, v: Vec<f32>| arena.slice_mut(&mut grads, &name).copy_from_slice(&v);
    let mut output_grads: Vec<Vec<f32>> = vec![Vec::new(); net.layers.len()];
    if let Some(last) = output_grads.last_mut() {
        *last = d_logits;
    }
    for (i, l) in net.layers.iter().enumerate().rev() {
        if output_grads[i].is_empty() {
            continue;
        }
        let dy = output_grads[i].clone();
        let input = read(l.inputs[0], x, &outputs);
        let needs_dx = l.inputs.iter().any(|s| matches!(s, Source::Layer(_)));
        let n = &l.name;
        let dx: Vec<Vec<f32>> = match l.op {
            Op::Conv2d { bias: has, .. } => {
                let s = conv_shape(l, batch);
                let (dw, db) = conv2d_backward_weight::reference(s, &dy, input);
                put(format!("{n}.weight"), dw);
                if has {
                    put(format!("{n}.bias"), db);
                }
                if needs_dx {
                    vec![conv2d_backward_input::reference(s, &dy, w(&format!("{n}.weight")))]
                } else {
                    vec![]
                }
            }
            Op::BatchNorm2d => {
                let (dx, dg, db) =
                    batchnorm2d::reference_backward(bn_shape(l), batch, input, &dy, w(&format!("{n}.weight")));
                put(format!("{n}.weight"), dg);
                put(format!("{n}.bias"), db);
                vec![dx]
            }
            Op::Relu => vec![relu::reference_backward(&dy, &outputs[i])],
            Op::MaxPool2d { .. } => {
                vec![maxpool2d_backward::reference(pool_shape(l, batch), false, &dy, &argmax[i], input)]
            }
            Op::Flatten => vec![dy.clone()],
            Op::Linear { out, bias: has } => {
                let dims = (batch, out, l.input.len());
                let none = Epilogue::default();
                put(format!("{n}.weight"), gemm::reference(Product::WeightGrad, dims, none, &dy, input, &[], &[]));
                if has {
                    put(format!("{n}.bias"), bias_grad::reference(batch, out, &dy));
                }
                if needs_dx {
                    vec![gemm::reference(Product::InputGrad, dims, none, &dy, w(&format!("{n}.weight")), &[], &[])]
                } else {
                    vec![]
                }
            }
            Op::Add => vec![dy.clone(), dy.clone()],
            Op::ShortcutA { .. } => vec![shortcut_option_a::reference_backward(shortcut_shape(l), batch, &dy)],
            Op::GlobalAvgPool => vec![global_avg_pool::reference_backward(l.input.h * l.input.w, &dy)],
        };
        for (s, d) in l.inputs.iter().zip(dx) {
            if let Source::Layer(j) = *s {
                let g = &mut output_grads[j];
                if g.is_empty() {
                    *g = d;
                } else {
                    g.iter_mut().zip(&d).for_each(|(a, b)| *a += b);
                }
            }
        }
    }
    StepResult { logits, loss_sum, correct, grads, outputs: computed, output_grads }
}

/// One SGD-with-momentum training step on the CPU, updating `weights`, `velocity` and `state`.
#[allow(clippy::too_many_arguments)]
pub fn train_step(
    net: &Network,
    arena: &Arena,
    weights: &mut [f32],
    velocity: &mut [f32],
    state: &mut State,
    x: &[f32],
    labels: &[u32],
    batch: usize,
    lr: f32,
    momentum: f32,
    rule: StepRule,
) -> StepResult {
    let r = step_with(net, arena, weights, state, x, labels, batch, true, rule.label_smoothing);
    sgd_momentum::reference(lr, momentum, rule.sgd, &r.grads, weights, velocity);
    r
}
