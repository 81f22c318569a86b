//! The schedule of one training step of any network described in `nn`: its layers grouped by the
//! fusion rules below, a buffer per tensor, and every bind group and dispatch, forward and
//! backward, built once per batch size. The rules, tried in order at each layer:
//!
//! - Conv2d + ReLU + MaxPool2d(2, 2) as one kernel writing the pooled output and its masked
//!   argmax, with the pool's backward inside the conv's gradients, where the adapter runs those
//!   kernels (lavapipe); else Conv2d with the ReLU in its epilogue.
//! - BatchNorm2d with the ReLU after it in the same kernel.
//! - Linear with its bias and ReLU in the GEMM epilogue, its bias grad inside the weight-grad
//!   GEMM where that kernel runs, and the ReLU before it applied (as a mask) by its input grad.
//! - A ReLU before a MaxPool2d is applied to the pool's backward; Flatten is a view.
//!
//! Each rule's plain kernels are the fallback; kernels know no network.

use super::kernels::{conv_shape, op_at, pool_shape, LayerKernels, NetKernels};
use super::net::Net;
use crate::gpu::Gpu;
use crate::kernels::gemm::{Epilogue, Product};
use crate::kernels::{batchnorm2d::BnState, Dispatch, StepTable, View};
use crate::model::CLASSES;
use crate::nn::{Layer, Op};

/// One kernel's part of a step: its name, its dispatches, recorded in order, and what it costs
/// (for `bench-kernels`).
pub struct Stage {
    pub name: String,
    pub dispatches: Vec<Dispatch>,
    pub flops: f64,
    pub bytes: f64,
}

impl Stage {
    fn new(name: String, dispatches: Vec<Dispatch>, (flops, bytes): (usize, usize)) -> Stage {
        Stage { name, dispatches, flops: flops as f64, bytes: bytes as f64 }
    }
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, step_offset: u32) {
        for d in &self.dispatches {
            d.record(pass, step_offset);
        }
    }
}

/// How the layers run: each group is one or more layers executed together.
#[derive(Clone, Copy, Debug)]
enum Group {
    /// Conv2d, ReLU, MaxPool2d as the fused kernels.
    ConvPooled {
        conv: usize,
        pool: usize,
    },
    /// Conv2d, with the following ReLU in its epilogue when `relu`.
    Conv {
        conv: usize,
    },
    /// BatchNorm2d, with the following ReLU when `relu`.
    BatchNorm {
        bn: usize,
    },
    Pool {
        pool: usize,
    },
    Flatten,
    /// Linear, with the following ReLU in its epilogue when `relu`.
    Linear {
        fc: usize,
        relu: bool,
    },
}

/// The step's tensors, by name: the input `x` and `labels`, each group's output, its grad.
pub struct Activations {
    pub x: wgpu::Buffer,
    pub labels: wgpu::Buffer,
    pub logits: wgpu::Buffer,
    tensors: Vec<(String, wgpu::Buffer)>,
}

impl Activations {
    pub fn get(&self, name: &str) -> &wgpu::Buffer {
        &self.tensors.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no tensor named {name}")).1
    }
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|(n, _)| n.as_str())
    }
}

/// The dispatches of one training step (and of an evaluation step) at one batch size.
pub struct Schedule {
    pub batch: usize,
    pub acts: Activations,
    /// Gathers the step's batch into `acts.x` / `acts.labels`; set by the data pipeline.
    pub prepare: Option<Dispatch>,
    /// Forward stages of a training step, the loss last.
    pub forward: Vec<Stage>,
    /// Forward stages of an evaluation step where they differ (BatchNorm's running statistics).
    pub eval_forward: Option<Vec<Stage>>,
    /// Backward stages, the optimizer last.
    pub backward: Vec<Stage>,
    /// For each forward stage (of a training step), the tensor it leaves its result in.
    pub outputs: Vec<String>,
    /// Kept alive for the bind groups that use them.
    _scratch: Vec<wgpu::Buffer>,
}

fn groups(net: &Net, k: &NetKernels) -> Vec<Group> {
    let layers = &net.network.layers;
    let mut g = Vec::new();
    let mut i = 0;
    while i < layers.len() {
        let relu_next = op_at(&net.network, i + 1) == Some(&Op::Relu);
        let (group, used) = match (&layers[i].op, &k.layers[i]) {
            (Op::Conv2d { .. }, LayerKernels::Conv(c)) if c.pooled.is_some() => {
                (Group::ConvPooled { conv: i, pool: i + 2 }, 3)
            }
            (Op::Conv2d { .. }, _) => (Group::Conv { conv: i }, 1 + relu_next as usize),
            (Op::BatchNorm2d, _) => (Group::BatchNorm { bn: i }, 1 + relu_next as usize),
            (Op::MaxPool2d { .. }, _) => (Group::Pool { pool: i }, 1),
            (Op::Flatten, _) => (Group::Flatten, 1),
            (Op::Linear { .. }, _) => (Group::Linear { fc: i, relu: relu_next }, 1 + relu_next as usize),
            (Op::Relu, _) => panic!("{}: a ReLU must follow a Conv2d, BatchNorm2d or Linear", layers[i].name),
        };
        g.push(group);
        i += used;
    }
    g
}

impl Schedule {
    /// Builds every bind group of a step for `batch` images. Metrics rows are written by the
    /// loss kernel at the row the step table selects, predictions into `preds` at the step's start.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        k: &NetKernels,
        net: &Net,
        batch: usize,
        steps: &StepTable,
        metrics: &View,
        preds: &View,
        lr: f32,
        momentum: f32,
    ) -> Schedule {
        let layers = &net.network.layers;
        let groups = groups(net, k);
        let b = batch;
        let slack = (crate::kernels::UNIFORM_SLACK_BYTES / 4) as usize;
        let last_layer = |g: &Group| match *g {
            Group::ConvPooled { pool, .. } => pool,
            Group::Conv { conv: i } | Group::BatchNorm { bn: i } => {
                i + (op_at(&net.network, i + 1) == Some(&Op::Relu)) as usize
            }
            Group::Pool { pool } => pool,
            Group::Flatten => usize::MAX,
            Group::Linear { fc, relu } => fc + relu as usize,
        };
        // Tensor names: the input "x", then each group's output named after its last layer
        // (a Flatten's output is its input's buffer). Buffers read through uniform windows get
        // room for a full last window; a pool's input and the logits are read as storage only.
        let mut tensors: Vec<(String, wgpu::Buffer)> = Vec::new();
        let mut grads: Vec<(String, wgpu::Buffer)> = Vec::new();
        let x = gpu.storage("x", b * net.network.input.len() + slack);
        let mut inputs: Vec<String> = Vec::new(); // the input tensor of each group
        let mut current = "x".to_string();
        for (gi, g) in groups.iter().enumerate() {
            inputs.push(current.clone());
            if let Group::Flatten = g {
                continue;
            }
            let l = &layers[last_layer(g)];
            let len = b * l.output.len();
            let feeds_pool = matches!(groups.get(gi + 1), Some(Group::Pool { .. }));
            let is_logits = gi + 1 == groups.len();
            let extra = if feeds_pool || is_logits { 0 } else { slack };
            tensors.push((l.name.clone(), gpu.storage(&l.name, len + extra)));
            if let Group::ConvPooled { .. } | Group::Pool { .. } = g {
                let n = format!("{}.argmax", l.name);
                tensors.push((n.clone(), gpu.storage(&n, len + slack)));
            }
            let d = format!("d_{}", l.name);
            grads.push((d.clone(), gpu.storage(&d, len + slack)));
            current = l.name.clone();
        }
        let names = inputs;
        let logits_name = current;
        tensors.extend(grads);
        let labels = gpu.storage("labels", b);
        let acts =
            Activations { x: x.clone(), labels: labels.clone(), logits: find(&tensors, &logits_name).clone(), tensors };
        let t = |name: &str| -> View {
            if name == "x" {
                View::whole(&acts.x)
            } else {
                View::whole(acts.get(name))
            }
        };
        let dt = |name: &str| View::whole(acts.get(&format!("d_{name}")));

        let relu = Epilogue { bias: true, relu: true, mask: false };
        let linear = Epilogue { bias: true, relu: false, mask: false };
        let none = Epilogue::default();
        let masked = Epilogue { bias: false, relu: false, mask: true };
        let last_fc = layers.iter().rev().find(|l| matches!(l.op, Op::Linear { .. })).expect("a Linear layer");
        // Unused bias/aux slots are bound to a read-only weight view.
        let unused = net.w(&format!("{}.bias", last_fc.name));
        let slack_msg = "pooled grads, argmax and inputs are allocated with uniform-window slack";
        let mut scratch = Vec::new();
        let mut saved: Vec<(usize, wgpu::Buffer)> = Vec::new();

        // Forward.
        let mut forward = Vec::new();
        let mut eval_forward = Vec::new();
        let mut outputs = Vec::new();
        let mut has_bn = false;
        for (gi, g) in groups.iter().enumerate() {
            let input = names[gi].clone();
            let out_name = if let Group::Flatten = g { input.clone() } else { layers[last_layer(g)].name.clone() };
            let mut eval_stage = None;
            let stages: Vec<Stage> = match *g {
                Group::ConvPooled { conv, pool } => {
                    let (c, p) = (&layers[conv], &layers[pool]);
                    let LayerKernels::Conv(ck) = &k.layers[conv] else { unreachable!() };
                    let pc = ck.pooled.as_ref().expect("pooled kernels");
                    let s = conv_shape(c, b);
                    let ps = pool_shape(p, b);
                    let d = pc.forward.bind(
                        gpu,
                        b,
                        &t(&input),
                        &net.w(&format!("{}.weight", c.name)),
                        &net.w(&format!("{}.bias", c.name)),
                        &t(&p.name),
                        &t(&format!("{}.argmax", p.name)),
                    );
                    let cost = (
                        conv_flops(c, b) + 3 * ps.output_len(),
                        4 * (s.input_len() + s.weight_len() + 2 * ps.output_len()),
                    );
                    vec![Stage::new(format!("{}_{}_forward", c.name, p.name), d, cost)]
                }
                Group::Conv { conv } => {
                    let c = &layers[conv];
                    let LayerKernels::Conv(ck) = &k.layers[conv] else { unreachable!() };
                    let forward = &ck.forward;
                    let s = conv_shape(c, b);
                    let d = forward.bind(
                        gpu,
                        b,
                        &t(&input),
                        &net.w(&format!("{}.weight", c.name)),
                        &bias_or_unused(net, c, &unused),
                        &t(&out_name),
                    );
                    let cost = (conv_flops(c, b), 4 * (s.input_len() + s.weight_len() + s.output_len()));
                    vec![Stage::new(format!("{}_forward", c.name), d, cost)]
                }
                Group::BatchNorm { bn } => {
                    has_bn = true;
                    let l = &layers[bn];
                    let LayerKernels::BatchNorm(kernel) = &k.layers[bn] else { unreachable!() };
                    let sv = gpu.storage(&format!("{} saved statistics", l.name), 2 * l.input.c);
                    let (gamma, beta) = (net.w(&format!("{}.weight", l.name)), net.w(&format!("{}.bias", l.name)));
                    let (rm, rv) =
                        (net.s(&format!("{}.running_mean", l.name)), net.s(&format!("{}.running_var", l.name)));
                    let svv = View::whole(&sv);
                    let state =
                        BnState { gamma: &gamma, beta: &beta, running_mean: &rm, running_var: &rv, saved: &svv };
                    let n = b * l.input.len();
                    let cost = (8 * n, 16 * n);
                    let name = format!("{}_forward", l.name);
                    let train = kernel.bind_forward(gpu, b, true, &t(&input), &state, &t(&out_name));
                    let eval = kernel.bind_forward(gpu, b, false, &t(&input), &state, &t(&out_name));
                    eval_stage = Some(Stage::new(name.clone(), vec![eval], cost));
                    saved.push((bn, sv));
                    vec![Stage::new(name, vec![train], cost)]
                }
                Group::Pool { pool } => {
                    let p = &layers[pool];
                    let LayerKernels::Pool { forward, .. } = &k.layers[pool] else { unreachable!() };
                    let ps = pool_shape(p, b);
                    let d = forward.bind(gpu, ps.planes, &t(&input), &t(&p.name), &t(&format!("{}.argmax", p.name)));
                    vec![Stage::new(
                        format!("{}_forward", p.name),
                        vec![d],
                        (3 * ps.output_len(), 4 * (ps.input_len() + 2 * ps.output_len())),
                    )]
                }
                Group::Flatten => vec![],
                Group::Linear { fc, relu: r } => {
                    let l = &layers[fc];
                    let Op::Linear { out, .. } = l.op else { unreachable!() };
                    let dims = (b, out, l.input.len());
                    let d = k.gemm.bind(
                        gpu,
                        Product::Forward,
                        dims,
                        if r { relu } else { linear },
                        &t(&input),
                        &net.w(&format!("{}.weight", l.name)),
                        &bias_or_unused(net, l, &unused),
                        &unused,
                        &t(&out_name),
                    );
                    vec![Stage::new(format!("{}_forward", l.name), d, gemm_cost(dims))]
                }
            };
            for _ in &stages {
                outputs.push(out_name.clone());
            }
            match eval_stage {
                Some(e) => eval_forward.push(e),
                None => eval_forward.extend(stages.iter().map(|s| Stage {
                    name: s.name.clone(),
                    dispatches: s.dispatches.clone(),
                    flops: s.flops,
                    bytes: s.bytes,
                })),
            }
            forward.extend(stages);
        }
        let loss = Stage::new(
            "softmax_cross_entropy".into(),
            vec![k.softmax.bind(
                gpu,
                b,
                CLASSES,
                steps,
                &t(&logits_name),
                &View::whole(&acts.labels),
                &dt(&logits_name),
                metrics,
                preds,
            )],
            (6 * b * CLASSES, 4 * (2 * b * CLASSES + b)),
        );
        outputs.push(format!("d_{logits_name}"));
        eval_forward.push(Stage {
            name: loss.name.clone(),
            dispatches: loss.dispatches.clone(),
            flops: loss.flops,
            bytes: loss.bytes,
        });
        forward.push(loss);

        // Backward, groups in reverse; `dy` is the grad at the current group's output.
        let mut backward = Vec::new();
        for (gi, g) in groups.iter().enumerate().rev() {
            let input = names[gi].clone();
            let first = gi == 0;
            let out_name = if let Group::Flatten = g { continue } else { layers[last_layer(g)].name.clone() };
            match *g {
                Group::ConvPooled { conv, pool } => {
                    let (c, p) = (&layers[conv], &layers[pool]);
                    let LayerKernels::Conv(ck) = &k.layers[conv] else { unreachable!() };
                    let pc = ck.pooled.as_ref().expect("pooled kernels");
                    let s = conv_shape(c, b);
                    let argmax = t(&format!("{}.argmax", p.name));
                    let wd = pc
                        .backward_weight
                        .bind(
                            gpu,
                            b,
                            &dt(&p.name),
                            &argmax,
                            &t(&input),
                            &net.g(&format!("{}.weight", c.name)),
                            &net.g(&format!("{}.bias", c.name)),
                        )
                        .expect(slack_msg);
                    let wcost =
                        (conv_flops(c, b) + s.output_len(), 4 * (s.output_len() + s.input_len() + s.weight_len()));
                    backward.push(Stage::new(
                        format!("{}_backward_weight", c.name),
                        wd.partials.into_iter().chain(wd.reduce).collect(),
                        wcost,
                    ));
                    scratch.extend(wd.scratch);
                    if let (false, Some(bi)) = (first, &pc.backward_input) {
                        let d = bi
                            .bind(gpu, b, &dt(&p.name), &argmax, &net.w(&format!("{}.weight", c.name)), &dt(&input))
                            .expect(slack_msg);
                        let icost = (conv_flops(c, b), 4 * (s.output_len() + s.weight_len() + s.input_len()));
                        backward.push(Stage::new(format!("{}_backward_input", c.name), d, icost));
                    }
                }
                Group::Conv { conv } => {
                    let c = &layers[conv];
                    let LayerKernels::Conv(ck) = &k.layers[conv] else { unreachable!() };
                    let (backward_weight, backward_input) = (&ck.backward_weight, &ck.backward_input);
                    let s = conv_shape(c, b);
                    let has_bias = matches!(c.op, Op::Conv2d { bias: true, .. });
                    assert!(has_bias, "{}: the conv weight-gradient kernel writes a bias grad", c.name);
                    let wd = backward_weight.bind(
                        gpu,
                        b,
                        &dt(&out_name),
                        &t(&input),
                        &net.g(&format!("{}.weight", c.name)),
                        &net.g(&format!("{}.bias", c.name)),
                    );
                    let wcost =
                        (conv_flops(c, b) + s.output_len(), 4 * (s.output_len() + s.input_len() + s.weight_len()));
                    backward.push(Stage::new(
                        format!("{}_backward_weight", c.name),
                        wd.partials.into_iter().chain(wd.reduce).collect(),
                        wcost,
                    ));
                    scratch.extend(wd.scratch);
                    if let (false, Some(bi)) = (first, backward_input) {
                        let d = bi.bind(gpu, b, &dt(&out_name), &net.w(&format!("{}.weight", c.name)), &dt(&input));
                        let icost = (conv_flops(c, b), 4 * (s.output_len() + s.weight_len() + s.input_len()));
                        backward.push(Stage::new(format!("{}_backward_input", c.name), d, icost));
                    }
                }
                Group::BatchNorm { bn } => {
                    let l = &layers[bn];
                    let LayerKernels::BatchNorm(kernel) = &k.layers[bn] else { unreachable!() };
                    let sv = &saved.iter().find(|(i, _)| *i == bn).expect("saved statistics").1;
                    let d = kernel.bind_backward(
                        gpu,
                        b,
                        &t(&input),
                        &dt(&out_name),
                        &net.w(&format!("{}.weight", l.name)),
                        &View::whole(sv),
                        &net.g(&format!("{}.weight", l.name)),
                        &net.g(&format!("{}.bias", l.name)),
                        &dt(&input),
                    );
                    let n = b * l.input.len();
                    backward.push(Stage::new(format!("{}_backward", l.name), vec![d], (9 * n, 20 * n)));
                }
                Group::Pool { pool } => {
                    let p = &layers[pool];
                    let LayerKernels::Pool { backward: kernel, .. } = &k.layers[pool] else { unreachable!() };
                    let ps = pool_shape(p, b);
                    let d = kernel.bind(
                        gpu,
                        ps.planes,
                        &dt(&p.name),
                        &t(&format!("{}.argmax", p.name)),
                        &t(&input),
                        &dt(&input),
                    );
                    backward.push(Stage::new(
                        format!("{}_backward", p.name),
                        vec![d],
                        (ps.input_len(), 4 * (3 * ps.input_len() + 2 * ps.output_len())),
                    ));
                }
                Group::Flatten => unreachable!(),
                Group::Linear { fc, .. } => {
                    let l = &layers[fc];
                    let Op::Linear { out, .. } = l.op else { unreachable!() };
                    let dims = (b, out, l.input.len());
                    let (w, bias) = (net.g(&format!("{}.weight", l.name)), net.g(&format!("{}.bias", l.name)));
                    let (dy, x_in) = (dt(&out_name), t(&input));
                    match k.gemm.bind_weight_grad_and_bias(gpu, k.gemm.default_variant(), dims, &dy, &x_in, &w, &bias) {
                        Some(d) => backward.push(Stage::new(format!("{}_weight_grad", l.name), d, gemm_cost(dims))),
                        None => {
                            let d = k.gemm.bind(gpu, Product::WeightGrad, dims, none, &dy, &x_in, &unused, &unused, &w);
                            backward.push(Stage::new(format!("{}_weight_grad", l.name), d, gemm_cost(dims)));
                            let d = k.bias_grad.bind(gpu, b, out, &dy, &bias);
                            backward.push(Stage::new(
                                format!("{}_bias_grad", l.name),
                                vec![d],
                                (b * out, 4 * (b * out + out)),
                            ));
                        }
                    }
                    if !first {
                        // The ReLU that produced this layer's input is applied here, as a mask.
                        let after_relu = fc > 0 && layers[fc - 1].op == Op::Relu;
                        let (epi, aux) = if after_relu { (masked, x_in.clone()) } else { (none, unused.clone()) };
                        let d = k.gemm.bind(
                            gpu,
                            Product::InputGrad,
                            dims,
                            epi,
                            &dy,
                            &net.w(&format!("{}.weight", l.name)),
                            &unused,
                            &aux,
                            &dt(&input),
                        );
                        backward.push(Stage::new(format!("{}_input_grad", l.name), d, gemm_cost(dims)));
                    }
                }
            }
        }
        let words = net.arena.words;
        let arena_view = |buf: &wgpu::Buffer| View { buffer: buf.clone(), offset: 0, len: words };
        backward.push(Stage::new(
            "sgd_momentum".into(),
            vec![k.sgd.bind(
                gpu,
                lr,
                momentum,
                &View::whole(&net.grads),
                &arena_view(&net.weights),
                &View::whole(&net.velocity),
            )],
            (4 * words, 20 * words),
        ));
        scratch.extend(saved.into_iter().map(|(_, b)| b));
        Schedule {
            batch,
            acts,
            prepare: None,
            forward,
            eval_forward: has_bn.then_some(eval_forward),
            backward,
            outputs,
            _scratch: scratch,
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
        for st in self.eval_forward.as_ref().unwrap_or(&self.forward) {
            st.record(pass, step_offset);
        }
    }

    /// Dispatches per training step.
    pub fn dispatches_per_step(&self) -> usize {
        self.prepare.is_some() as usize
            + self.forward.iter().chain(&self.backward).map(|s| s.dispatches.len()).sum::<usize>()
    }
}

fn find<'a>(tensors: &'a [(String, wgpu::Buffer)], name: &str) -> &'a wgpu::Buffer {
    &tensors.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no tensor named {name}")).1
}

fn bias_or_unused(net: &Net, l: &Layer, unused: &View) -> View {
    let has = matches!(l.op, Op::Conv2d { bias: true, .. } | Op::Linear { bias: true, .. });
    if has {
        net.w(&format!("{}.bias", l.name))
    } else {
        unused.clone()
    }
}

fn conv_flops(l: &Layer, b: usize) -> usize {
    let s = conv_shape(l, b);
    2 * s.output_len() * s.cin * s.kh * s.kw
}

fn gemm_cost((m, n, k): (usize, usize, usize)) -> (usize, usize) {
    (2 * m * n * k, 4 * (m * k + n * k + m * n))
}
