//! The schedule of one training step: every bind group and dispatch, forward and backward, built
//! once per batch size, and the recording of a step or its forward half into a pass.

use super::{pool1_shape, pool2_shape, Activations, Lenet, LenetKernels};
use crate::gpu::Gpu;
use crate::kernels::gemm::{Epilogue, Product};
use crate::kernels::{Dispatch, StepTable, View};
use crate::model::CLASSES;

/// One kernel's part of a step: its name and its dispatches, recorded in order.
pub struct Stage {
    pub name: &'static str,
    pub dispatches: Vec<Dispatch>,
}

impl Stage {
    fn new(name: &'static str, dispatches: Vec<Dispatch>) -> Stage {
        Stage { name, dispatches }
    }
    fn one(name: &'static str, d: Dispatch) -> Stage {
        Stage { name, dispatches: vec![d] }
    }
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, step_offset: u32) {
        for d in &self.dispatches {
            d.record(pass, step_offset);
        }
    }
}

/// The dispatches of one training step (and its forward half, for evaluation) at one batch size.
pub struct Schedule {
    pub batch: usize,
    pub acts: Activations,
    /// Gathers the step's batch into `acts.x` / `acts.labels`; set by the data pipeline.
    pub prepare: Option<Dispatch>,
    /// Forward stages, the loss last.
    pub forward: Vec<Stage>,
    /// Backward stages, the optimizer last.
    pub backward: Vec<Stage>,
    /// Kept alive for the bind groups that use them.
    _scratch: Vec<wgpu::Buffer>,
}

impl Schedule {
    /// Builds every bind group of a step for `batch` images. Metrics rows are written by the
    /// loss kernel at the row the step table selects, predictions into `preds` at the step's start.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        k: &LenetKernels,
        net: &Lenet,
        batch: usize,
        steps: &StepTable,
        metrics: &View,
        preds: &View,
        lr: f32,
        momentum: f32,
    ) -> Schedule {
        let acts = Activations::new(gpu, batch, net.in_channels);
        let v = View::whole;
        let a = &acts;
        let (s1, s2) = (pool1_shape(batch), pool2_shape(batch));
        let relu = Epilogue { bias: true, relu: true, mask: false };
        let linear = Epilogue { bias: true, relu: false, mask: false };
        // Unused bias/aux slots are bound to a read-only weight view.
        let unused = net.w("fc3.bias");

        // Each layer contributes one or more dispatches (a GEMM may split its A operand).
        let none = Epilogue::default();
        let masked = Epilogue { bias: false, relu: false, mask: true };
        // conv2's grads straight from pool2's output grad where the fused kernels run, else
        // pool2's backward (with conv2's ReLU) first.
        let slack = "pooled grads, argmax and inputs are allocated with uniform-window slack";
        let (pool2_backward, conv2_w, conv2_i) = match &k.conv2_pooled {
            Some((c, backward_input)) => (
                None,
                c.backward_weight
                    .bind(gpu, batch, &v(&a.d_p2), &v(&a.i2), &v(&a.p1), &net.g("conv2.weight"), &net.g("conv2.bias"))
                    .expect(slack),
                backward_input
                    .bind(gpu, batch, &v(&a.d_p2), &v(&a.i2), &net.w("conv2.weight"), &v(&a.d_p1))
                    .expect(slack),
            ),
            None => (
                Some(Stage::one(
                    "pool2_backward",
                    k.pool2_backward.bind(gpu, s2.planes, &v(&a.d_p2), &v(&a.i2), &v(&a.a2), &v(&a.d_a2)),
                )),
                k.conv2_backward_weight.bind(
                    gpu,
                    batch,
                    &v(&a.d_a2),
                    &v(&a.p1),
                    &net.g("conv2.weight"),
                    &net.g("conv2.bias"),
                ),
                k.conv2_backward_input.bind(gpu, batch, &v(&a.d_a2), &net.w("conv2.weight"), &v(&a.d_p1)),
            ),
        };
        // conv1's weight grad straight from pool1's output grad where the fused kernel runs,
        // else pool1's backward (with conv1's ReLU) and then the weight grad.
        let (pool1_backward, conv1_w) = match &k.conv1_pooled {
            Some(c) => (
                None,
                c.backward_weight
                    .bind(gpu, batch, &v(&a.d_p1), &v(&a.i1), &v(&a.x), &net.g("conv1.weight"), &net.g("conv1.bias"))
                    .expect(slack),
            ),
            None => (
                Some(Stage::one(
                    "pool1_backward",
                    k.pool1_backward.bind(gpu, s1.planes, &v(&a.d_p1), &v(&a.i1), &v(&a.a1), &v(&a.d_a1)),
                )),
                k.conv1_backward_weight.bind(
                    gpu,
                    batch,
                    &v(&a.d_a1),
                    &v(&a.x),
                    &net.g("conv1.weight"),
                    &net.g("conv1.bias"),
                ),
            ),
        };
        let all = |buf: &wgpu::Buffer| View::whole(buf);
        let arena_view = |buf: &wgpu::Buffer| View { buffer: buf.clone(), offset: 0, len: net.arena.words };
        // Each named stage is one kernel's work: one dispatch, or a few (GEMM windows, the
        // two passes of the conv weight grad).
        let conv1_pool1 = match &k.conv1_pooled {
            Some(c) => vec![Stage::new(
                "conv1_pool1_forward",
                c.forward.bind(
                    gpu,
                    batch,
                    &v(&a.x),
                    &net.w("conv1.weight"),
                    &net.w("conv1.bias"),
                    &v(&a.p1),
                    &v(&a.i1),
                ),
            )],
            None => vec![
                Stage::new(
                    "conv1_forward",
                    k.conv1_forward.bind(gpu, batch, &v(&a.x), &net.w("conv1.weight"), &net.w("conv1.bias"), &v(&a.a1)),
                ),
                Stage::one("pool1_forward", k.pool1_forward.bind(gpu, s1.planes, &v(&a.a1), &v(&a.p1), &v(&a.i1))),
            ],
        };
        let forward: Vec<Stage> = conv1_pool1
            .into_iter()
            .chain(match &k.conv2_pooled {
                Some((c, _)) => vec![Stage::new(
                    "conv2_pool2_forward",
                    c.forward.bind(
                        gpu,
                        batch,
                        &v(&a.p1),
                        &net.w("conv2.weight"),
                        &net.w("conv2.bias"),
                        &v(&a.p2),
                        &v(&a.i2),
                    ),
                )],
                None => vec![
                    Stage::new(
                        "conv2_forward",
                        k.conv2_forward.bind(
                            gpu,
                            batch,
                            &v(&a.p1),
                            &net.w("conv2.weight"),
                            &net.w("conv2.bias"),
                            &v(&a.a2),
                        ),
                    ),
                    Stage::one("pool2_forward", k.pool2_forward.bind(gpu, s2.planes, &v(&a.a2), &v(&a.p2), &v(&a.i2))),
                ],
            })
            .chain([
                Stage::new(
                    "fc1_forward",
                    k.gemm.bind(
                        gpu,
                        Product::Forward,
                        (batch, 120, 400),
                        relu,
                        &v(&a.p2),
                        &net.w("fc1.weight"),
                        &net.w("fc1.bias"),
                        &unused,
                        &v(&a.a3),
                    ),
                ),
                Stage::new(
                    "fc2_forward",
                    k.gemm.bind(
                        gpu,
                        Product::Forward,
                        (batch, 84, 120),
                        relu,
                        &v(&a.a3),
                        &net.w("fc2.weight"),
                        &net.w("fc2.bias"),
                        &unused,
                        &v(&a.a4),
                    ),
                ),
                Stage::new(
                    "fc3_forward",
                    k.gemm.bind(
                        gpu,
                        Product::Forward,
                        (batch, CLASSES, 84),
                        linear,
                        &v(&a.a4),
                        &net.w("fc3.weight"),
                        &net.w("fc3.bias"),
                        &unused,
                        &v(&a.logits),
                    ),
                ),
                Stage::one(
                    "softmax_cross_entropy",
                    k.softmax.bind(
                        gpu,
                        batch,
                        CLASSES,
                        steps,
                        &v(&a.logits),
                        &v(&a.labels),
                        &v(&a.d_logits),
                        metrics,
                        preds,
                    ),
                ),
            ])
            .collect();
        // A layer's weight grad, and its bias grad in the same dispatches where the GEMM kernel
        // can write it (the uniform-window kernels: a dispatch fewer per layer), else a
        // bias_grad dispatch after it.
        let fc_param_grads = |(w_stage, b_stage): (&'static str, &'static str),
                              layer: &str,
                              (n, k_in): (usize, usize),
                              dy: &View,
                              x: &View| {
            let (w, b) = (net.g(&format!("{layer}.weight")), net.g(&format!("{layer}.bias")));
            match k.gemm.bind_weight_grad_and_bias(gpu, k.gemm.default_variant(), (batch, n, k_in), dy, x, &w, &b) {
                Some(d) => vec![Stage::new(w_stage, d)],
                None => vec![
                    Stage::new(
                        w_stage,
                        k.gemm.bind(gpu, Product::WeightGrad, (batch, n, k_in), none, dy, x, &unused, &unused, &w),
                    ),
                    Stage::one(b_stage, k.bias_grad.bind(gpu, batch, n, dy, &b)),
                ],
            }
        };
        let backward: Vec<Stage> = [
            fc_param_grads(("fc3_weight_grad", "fc3_bias_grad"), "fc3", (CLASSES, 84), &v(&a.d_logits), &v(&a.a4)),
            vec![Stage::new(
                "fc3_input_grad",
                k.gemm.bind(
                    gpu,
                    Product::InputGrad,
                    (batch, CLASSES, 84),
                    masked,
                    &v(&a.d_logits),
                    &net.w("fc3.weight"),
                    &unused,
                    &v(&a.a4),
                    &v(&a.d_a4),
                ),
            )],
            fc_param_grads(("fc2_weight_grad", "fc2_bias_grad"), "fc2", (84, 120), &v(&a.d_a4), &v(&a.a3)),
            vec![Stage::new(
                "fc2_input_grad",
                k.gemm.bind(
                    gpu,
                    Product::InputGrad,
                    (batch, 84, 120),
                    masked,
                    &v(&a.d_a4),
                    &net.w("fc2.weight"),
                    &unused,
                    &v(&a.a3),
                    &v(&a.d_a3),
                ),
            )],
            fc_param_grads(("fc1_weight_grad", "fc1_bias_grad"), "fc1", (120, 400), &v(&a.d_a3), &v(&a.p2)),
            vec![Stage::new(
                "fc1_input_grad",
                k.gemm.bind(
                    gpu,
                    Product::InputGrad,
                    (batch, 120, 400),
                    none,
                    &v(&a.d_a3),
                    &net.w("fc1.weight"),
                    &unused,
                    &unused,
                    &v(&a.d_p2),
                ),
            )],
            // pool2's backward fuses the ReLU of conv2; conv1's input grad is not needed.
            pool2_backward.into_iter().collect(),
            vec![Stage::new("conv2_backward_weight", conv2_w.partials.into_iter().chain(conv2_w.reduce).collect())],
            vec![Stage::new("conv2_backward_input", conv2_i)],
            pool1_backward.into_iter().collect(),
            vec![Stage::new("conv1_backward_weight", conv1_w.partials.into_iter().chain(conv1_w.reduce).collect())],
            vec![Stage::one(
                "sgd_momentum",
                k.sgd.bind(gpu, lr, momentum, &all(&net.grads), &arena_view(&net.weights), &all(&net.velocity)),
            )],
        ]
        .into_iter()
        .flatten()
        .collect();
        Schedule {
            batch,
            acts,
            prepare: None,
            forward,
            backward,
            _scratch: [conv2_w.scratch, conv1_w.scratch].into_iter().flatten().collect(),
        }
    }

    /// Records one training step (prepare, forward, loss, backward, SGD) into `pass`.
    pub fn record_train_step(&self, pass: &mut wgpu::ComputePass<'_>, step_offset: u32) {
        if let Some(p) = &self.prepare {
            p.record(pass, step_offset);
        }
        for st in self.forward.iter().chain(&self.backward) {
            st.record(pass, step_offset);
        }
    }

    /// Records the forward half and the loss (evaluation).
    pub fn record_eval_step(&self, pass: &mut wgpu::ComputePass<'_>, step_offset: u32) {
        if let Some(p) = &self.prepare {
            p.record(pass, step_offset);
        }
        for st in &self.forward {
            st.record(pass, step_offset);
        }
    }

    /// Dispatches per training step.
    pub fn dispatches_per_step(&self) -> usize {
        self.prepare.is_some() as usize
            + self.forward.iter().chain(&self.backward).map(|s| s.dispatches.len()).sum::<usize>()
    }
}
