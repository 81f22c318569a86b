//! The forward stages of a step, group by group: the training forward, and where BatchNorm
//! makes them differ, the evaluation forward (running statistics), each ending with the loss.

use super::{bias_or_unused, conv_flops, gemm_cost, Group, Plan, Stage};
use crate::kernels::batchnorm2d::BnState;
use crate::kernels::gemm::{Epilogue, Product};
use crate::kernels::View;
use crate::model::kernels::{conv_shape, pool_shape, LayerKernels};
use crate::model::CLASSES;
use crate::nn::Op;

/// What the forward pass built.
pub(super) struct Forward {
    pub stages: Vec<Stage>,
    pub eval: Option<Vec<Stage>>,
    pub outputs: Vec<String>,
    /// Each BatchNorm layer's saved [mean, invstd] buffer, by layer index (the backward reads it).
    pub saved: Vec<(usize, wgpu::Buffer)>,
}

pub(super) fn stages(p: &Plan) -> Forward {
    let (gpu, k, net, b, layers) = (p.gpu, p.k, p.net, p.batch, p.layers());
    let (t, names, unused) = (|n: &str| p.t(n), &p.inputs, &p.unused);
    let relu = Epilogue { bias: true, relu: true, mask: false };
    let linear = Epilogue { bias: true, relu: false, mask: false };
    let mut saved: Vec<(usize, wgpu::Buffer)> = Vec::new();
    let mut forward = Vec::new();
    let mut eval_forward = Vec::new();
    let mut outputs = Vec::new();
    let mut has_bn = false;
    for (gi, g) in p.groups.iter().enumerate() {
        p.uses.at(p.forward_at(gi));
        let input = names[gi].clone();
        let out_name = if let Group::Flatten { .. } = g { input.clone() } else { layers[p.last_layer(g)].name.clone() };
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
                    &bias_or_unused(net, c, unused),
                    &t(&out_name),
                );
                let cost = (conv_flops(c, b), 4 * (s.input_len() + s.weight_len() + s.output_len()));
                vec![Stage::new(format!("{}_forward", c.name), d, cost)]
            }
            Group::BatchNorm { bn } | Group::BatchNormAdd { bn, .. } => {
                has_bn = true;
                let l = &layers[bn];
                let LayerKernels::BatchNorm(kernel, _) = &k.layers[bn] else { unreachable!() };
                let sv = gpu.storage(&format!("{} saved statistics", l.name), 2 * l.input.c);
                let (gamma, beta) = (net.w(&format!("{}.weight", l.name)), net.w(&format!("{}.bias", l.name)));
                let (rm, rv) = (net.s(&format!("{}.running_mean", l.name)), net.s(&format!("{}.running_var", l.name)));
                let svv = View::whole(&sv);
                let state = BnState { gamma: &gamma, beta: &beta, running_mean: &rm, running_var: &rv, saved: &svv };
                let n = b * l.input.len();
                let cost = (8 * n, 16 * n);
                let name = format!("{}_forward", l.name);
                let (x, y) = (t(&input), t(&out_name));
                // The residual of a BatchNormAdd; a plain BatchNorm's kernel does not read it.
                let res = p.residuals[gi].as_deref().map(t).unwrap_or_else(|| x.clone());
                let train = kernel.bind_forward_residual(gpu, b, true, &x, &res, &state, &y);
                let eval = kernel.bind_forward_residual(gpu, b, false, &x, &res, &state, &y);
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
            Group::Flatten { .. } => vec![],
            Group::Shortcut { layer } => {
                let l = &layers[layer];
                let LayerKernels::Shortcut(kernel) = &k.layers[layer] else { unreachable!() };
                let d = kernel.bind_forward(gpu, b, &t(&input), &t(&out_name));
                let n = b * l.output.len();
                vec![Stage::new(format!("{}_forward", l.name), vec![d], (0, 4 * (n + b * l.input.len() / 4)))]
            }
            Group::GlobalAvgPool { layer } => {
                let l = &layers[layer];
                let LayerKernels::GlobalAvgPool(kernel) = &k.layers[layer] else { unreachable!() };
                let d = kernel.bind_forward(gpu, b * l.input.c, &t(&input), &t(&out_name));
                let n = b * l.input.len();
                vec![Stage::new(format!("{}_forward", l.name), vec![d], (n, 4 * (n + b * l.input.c)))]
            }
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
                    &bias_or_unused(net, l, unused),
                    unused,
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
    p.uses.at(p.forward_at(p.groups.len()));
    let loss = Stage::new(
        "softmax_cross_entropy".into(),
        vec![k.softmax.bind(
            gpu,
            b,
            CLASSES,
            p.steps,
            &t(&p.logits),
            &View::whole(&p.acts.labels),
            &p.dt(&p.logits),
            p.metrics,
            p.preds,
        )],
        (6 * b * CLASSES, 4 * (2 * b * CLASSES + b)),
    );
    outputs.push(format!("d_{}", p.logits));
    eval_forward.push(Stage {
        name: loss.name.clone(),
        dispatches: loss.dispatches.clone(),
        flops: loss.flops,
        bytes: loss.bytes,
    });
    forward.push(loss);
    Forward { stages: forward, eval: has_bn.then_some(eval_forward), outputs, saved }
}
