//! The schedule of one training step of any network described in `nn`: its layers grouped by the
//! fusion rules below, a buffer per tensor, and every bind group and dispatch, forward and
//! backward, built once per batch size. The rules, tried in order at each layer:
//!
//! - Conv2d + ReLU + MaxPool2d(2, 2) as one kernel writing the pooled output and its masked
//!   argmax, with the pool's backward inside the conv's gradients, where the adapter runs those
//!   kernels (lavapipe); else Conv2d with the ReLU in its epilogue.
//! - BatchNorm2d with the ReLU after it in the same kernel, or with a residual Add and the ReLU
//!   after that (a residual block's join: one pass over the tensor, forward).
//! - A tensor read by two layers (a residual block's input) gets its grad from the later reader
//!   first, written; the earlier reader's kernel adds to it (a fixed order, no atomics).
//! - Linear with its bias and ReLU in the GEMM epilogue, its bias grad inside the weight-grad
//!   GEMM where that kernel runs, and the ReLU before it applied (as a mask) by its input grad.
//! - A ReLU before a MaxPool2d is applied to the pool's backward; Flatten is a view.
//!
//! Each rule's plain kernels are the fallback; kernels know no network.

mod backward;
mod forward;
pub mod memory;

use super::kernels::{conv_shape, LayerKernels, NetKernels};
use super::net::Net;
use crate::gpu::Gpu;
use crate::kernels::{Dispatch, StepTable, View};
use crate::nn::{Layer, Network, Op, Source};
use memory::{Lifetime, Memory, Uses};

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
    /// BatchNorm2d, with the following ReLU when its kernels fuse it.
    BatchNorm {
        bn: usize,
    },
    /// BatchNorm2d, the Add after it and the ReLU after that.
    BatchNormAdd {
        bn: usize,
        add: usize,
    },
    Shortcut {
        layer: usize,
    },
    GlobalAvgPool {
        layer: usize,
    },
    Pool {
        pool: usize,
    },
    Flatten {
        layer: usize,
    },
    /// Linear, with the following ReLU in its epilogue when `relu`.
    Linear {
        fc: usize,
        relu: bool,
    },
}

/// The step's tensors, by name: the input `x` and `labels`, each group's output, its grad.
/// Tensors whose lifetimes do not meet share a buffer (see [`memory`]): a tensor holds its value
/// from the stage that writes it to the last that reads it. The logits stay readable after a step.
pub struct Activations {
    pub x: wgpu::Buffer,
    pub labels: wgpu::Buffer,
    pub logits: wgpu::Buffer,
    tensors: Vec<(String, View)>,
}

impl Activations {
    pub fn get(&self, name: &str) -> View {
        self.tensors.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no tensor named {name}")).1.clone()
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
    /// The memory of the step's tensors (beside `x`, the labels and the parameters).
    pub memory: Memory,
    /// Kept alive for the bind groups that use them.
    _scratch: Vec<wgpu::Buffer>,
}

fn groups(net: &Net, k: &NetKernels) -> Vec<Group> {
    let layers = &net.network.layers;
    let mut g = Vec::new();
    let mut i = 0;
    while i < layers.len() {
        let relu_next = net.network.only_next(i, |op| *op == Op::Relu);
        let (group, used) = match (&layers[i].op, &k.layers[i]) {
            (Op::Conv2d { .. }, LayerKernels::Conv(c)) if c.pooled.is_some() => {
                (Group::ConvPooled { conv: i, pool: i + 2 }, 3)
            }
            (Op::Conv2d { .. }, _) => (Group::Conv { conv: i }, 1 + relu_next as usize),
            (Op::BatchNorm2d, LayerKernels::BatchNorm(_, f)) if f.residual => {
                (Group::BatchNormAdd { bn: i, add: i + 1 }, 3)
            }
            (Op::BatchNorm2d, LayerKernels::BatchNorm(_, f)) => (Group::BatchNorm { bn: i }, 1 + f.relu as usize),
            (Op::MaxPool2d { .. }, _) => (Group::Pool { pool: i }, 1),
            (Op::Flatten, _) => (Group::Flatten { layer: i }, 1),
            (Op::Linear { .. }, _) => (Group::Linear { fc: i, relu: relu_next }, 1 + relu_next as usize),
            (Op::ShortcutA { .. }, _) => (Group::Shortcut { layer: i }, 1),
            (Op::GlobalAvgPool, _) => (Group::GlobalAvgPool { layer: i }, 1),
            (Op::Relu, _) => panic!("{}: a ReLU must follow a Conv2d, BatchNorm2d or Linear", layers[i].name),
            (Op::Add, _) => panic!("{}: an Add must follow the BatchNorm2d it adds to", layers[i].name),
            (Op::BatchNorm2d, _) => unreachable!("a BatchNorm2d layer has BatchNorm kernels"),
        };
        g.push(group);
        i += used;
    }
    g
}

/// The layer whose output a group leaves (a fused ReLU's, a pool's).
fn last_layer(network: &Network, g: &Group) -> usize {
    let relu_after = |i: usize| network.only_next(i, |op| *op == Op::Relu) as usize;
    match *g {
        Group::ConvPooled { pool, .. } => pool,
        Group::Conv { conv: i } | Group::BatchNorm { bn: i } => i + relu_after(i),
        Group::BatchNormAdd { add, .. } => add + 1,
        Group::Pool { pool } => pool,
        Group::Flatten { .. } => usize::MAX,
        Group::Linear { fc, relu } => fc + relu as usize,
        Group::Shortcut { layer } | Group::GlobalAvgPool { layer } => layer,
    }
}

/// The first layer of a group (whose first input is the group's input).
fn first_layer(g: &Group) -> usize {
    match *g {
        Group::ConvPooled { conv, .. } | Group::Conv { conv } => conv,
        Group::BatchNorm { bn } | Group::BatchNormAdd { bn, .. } => bn,
        Group::Pool { pool } => pool,
        Group::Flatten { layer } => layer,
        Group::Linear { fc, .. } => fc,
        Group::Shortcut { layer } | Group::GlobalAvgPool { layer } => layer,
    }
}

/// Everything the forward and backward planning share: the network, its groups and tensors.
struct Plan<'a> {
    gpu: &'a Gpu,
    k: &'a NetKernels,
    net: &'a Net,
    batch: usize,
    groups: Vec<Group>,
    /// The input tensor of each group.
    inputs: Vec<String>,
    /// The residual a BatchNormAdd group adds, by group.
    residuals: Vec<Option<String>>,
    /// The last group's output.
    logits: String,
    acts: Activations,
    /// Unused bias/aux slots are bound to a read-only weight view.
    unused: View,
    /// Every tensor binding and the moment of the timeline it is made at.
    uses: Uses,
    steps: &'a StepTable,
    metrics: &'a View,
    preds: &'a View,
}

impl Plan<'_> {
    fn layers(&self) -> &[Layer] {
        &self.net.network.layers
    }
    fn last_layer(&self, g: &Group) -> usize {
        last_layer(&self.net.network, g)
    }
    /// The moment of the timeline group `gi`'s forward runs at; the loss runs at `groups`.
    fn forward_at(&self, gi: usize) -> usize {
        gi
    }
    fn backward_at(&self, gi: usize) -> usize {
        2 * self.groups.len() - gi
    }
    fn t(&self, name: &str) -> View {
        if name == "x" {
            View::whole(&self.acts.x)
        } else {
            self.uses.touch(name);
            self.acts.get(name)
        }
    }
    fn dt(&self, name: &str) -> View {
        let d = format!("d_{name}");
        self.uses.touch(&d);
        self.acts.get(&d)
    }
}

impl Schedule {
    /// Builds every bind group of a step for `batch` images. Metrics rows are written by the
    /// loss kernel at the row the step table selects, predictions into `preds` at the step's start;
    /// the optimizer takes the lr and momentum of that row.
    pub fn new(
        gpu: &Gpu,
        k: &NetKernels,
        net: &Net,
        batch: usize,
        steps: &StepTable,
        metrics: &View,
        preds: &View,
    ) -> Schedule {
        let layers = &net.network.layers;
        let groups = groups(net, k);
        let b = batch;
        let slack = (crate::kernels::UNIFORM_SLACK_BYTES / 4) as usize;
        // Tensor names: the input "x", then each group's output named after its last layer
        // (a Flatten's output is its input's buffer). Tensors read through uniform windows get
        // room for a full last window; a pool's input and the logits are read as storage only.
        // Group gi's forward runs at moment gi, the loss at G, its backward at 2G - gi.
        let count = groups.len();
        let mut lives: Vec<Lifetime> = Vec::new();
        let mut live = |name: &str, words: usize, at: usize| match lives.iter_mut().find(|t| t.name == name) {
            Some(t) => (t.words, t.first, t.last) = (t.words.max(words), t.first.min(at), t.last.max(at)),
            None => lives.push(Lifetime { name: name.to_string(), words, first: at, last: at }),
        };
        let x = gpu.storage("x", b * net.network.input.len() + slack);
        // The tensor holding each layer's output: its group's output (a Flatten's is its input's).
        let mut tensor_of: Vec<Option<String>> = vec![None; layers.len()];
        let source = |tensor_of: &[Option<String>], s: Source| match s {
            Source::Image => "x".to_string(),
            Source::Layer(j) => {
                tensor_of[j].clone().unwrap_or_else(|| panic!("{} is read inside a fused group", layers[j].name))
            }
        };
        let mut inputs: Vec<String> = Vec::new(); // the input tensor of each group
        let mut residuals: Vec<Option<String>> = Vec::new();
        for (gi, g) in groups.iter().enumerate() {
            let input = source(&tensor_of, layers[first_layer(g)].inputs[0]);
            let residual = match *g {
                Group::BatchNormAdd { add, .. } => Some(source(&tensor_of, layers[add].inputs[1])),
                _ => None,
            };
            inputs.push(input.clone());
            residuals.push(residual.clone());
            if let Group::Flatten { layer } = *g {
                tensor_of[layer] = Some(input);
                continue;
            }
            let (fwd, bwd) = (gi, 2 * count - gi);
            let last = last_layer(&net.network, g);
            let l = &layers[last];
            let len = b * l.output.len();
            let feeds_pool = matches!(groups.get(gi + 1), Some(Group::Pool { .. }));
            let is_logits = gi + 1 == count;
            let extra = if feeds_pool || is_logits { 0 } else { slack };
            for t in std::iter::once(&input).chain(&residual) {
                if t != "x" {
                    // Read by this group's forward and by its backward (weight grads, masks), whose
                    // grad it writes or adds to.
                    live(t, 0, fwd);
                    live(t, 0, bwd);
                    live(&format!("d_{t}"), 0, bwd);
                }
            }
            live(&l.name, len + extra, fwd);
            // A ReLU's mask taken from the group's own output in its backward.
            let reads_output = match (g, &k.layers[first_layer(g)]) {
                (Group::BatchNormAdd { .. }, _) => true,
                (Group::BatchNorm { .. }, LayerKernels::BatchNorm(_, f)) => f.mask,
                _ => false,
            };
            if reads_output {
                live(&l.name, 0, bwd);
            }
            if let Group::ConvPooled { .. } | Group::Pool { .. } = g {
                let n = format!("{}.argmax", l.name);
                live(&n, len + slack, fwd);
                live(&n, 0, bwd);
            }
            // Read by this group's backward; written by the groups reading it (or the loss).
            let d = format!("d_{}", l.name);
            live(&d, len + slack, if is_logits { count } else { bwd });
            live(&d, 0, bwd);
            tensor_of[last] = Some(l.name.clone());
        }
        let names = inputs;
        let logits_name = tensor_of[layers.len() - 1].clone().expect("the last layer gives the logits");
        // The logits stay readable after the step (the loss reads them, evaluation reads them back).
        live(&logits_name, 0, count);
        live(&logits_name, 0, 2 * count + 1);
        let (of_tensor, buffer_words) = memory::assign(&lives);
        let buffers: Vec<wgpu::Buffer> = (0..buffer_words.len())
            .map(|j| {
                let held: Vec<&str> =
                    lives.iter().zip(&of_tensor).filter(|(_, &o)| o == j).map(|(t, _)| t.name.as_str()).collect();
                gpu.storage(&held.join(" | "), buffer_words[j])
            })
            .collect();
        let tensors: Vec<(String, View)> = lives
            .iter()
            .zip(&of_tensor)
            .map(|(t, &j)| (t.name.clone(), View { buffer: buffers[j].clone(), offset: 0, len: t.words.max(1) }))
            .collect();
        let memory = Memory::of(&lives, &buffer_words);
        let labels = gpu.storage("labels", b);
        let logits = find(&tensors, &logits_name).buffer.clone();
        let acts = Activations { x: x.clone(), labels: labels.clone(), logits, tensors };

        let last_fc = layers.iter().rev().find(|l| matches!(l.op, Op::Linear { .. })).expect("a Linear layer");
        let unused = net.w(&format!("{}.bias", last_fc.name));
        let plan = Plan {
            gpu,
            k,
            net,
            batch,
            groups,
            inputs: names,
            residuals,
            logits: logits_name,
            acts,
            unused,
            uses: Uses::default(),
            steps,
            metrics,
            preds,
        };
        let fwd = forward::stages(&plan);
        let (backward, mut scratch) = backward::stages(&plan, &fwd.saved);
        scratch.extend(fwd.saved.into_iter().map(|(_, b)| b));
        plan.uses.check(&lives);
        Schedule {
            batch,
            acts: plan.acts,
            prepare: None,
            forward: fwd.stages,
            eval_forward: fwd.eval,
            backward,
            outputs: fwd.outputs,
            memory,
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

    /// GPU bytes of the step's buffers beside the network's own: the batch, every activation
    /// and gradient (shared where lifetimes allow), and the kernels' scratch.
    pub fn bytes(&self) -> u64 {
        self.acts.x.size() + self.acts.labels.size() + self.memory.shared_bytes + self.scratch_bytes()
    }
    pub fn scratch_bytes(&self) -> u64 {
        self._scratch.iter().map(|b| b.size()).sum()
    }

    /// Dispatches per training step.
    pub fn dispatches_per_step(&self) -> usize {
        self.prepare.is_some() as usize
            + self.forward.iter().chain(&self.backward).map(|s| s.dispatches.len()).sum::<usize>()
    }
}

fn find<'a>(tensors: &'a [(String, View)], name: &str) -> &'a View {
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
