//! The backward stages of a step, groups in reverse, then the optimizer: each group's
//! parameter grads and the grad at its input, with the ReLUs before a pool or a Linear applied
//! as masks by the pool's backward or the Linear's input grad.

use super::{conv_flops, gemm_cost, Group, Plan, Stage};
use crate::kernels::gemm::{Epilogue, Product};
use crate::kernels::View;
use crate::model::kernels::{conv_shape, pool_shape, LayerKernels};
use crate::nn::Op;

/// The backward stages and the optimizer; `saved` holds BatchNorm's statistics by layer index.
/// Returns the stages and the scratch buffers their bind groups use.
pub(super) fn stages(p: &Plan, saved: &[(usize, wgpu::Buffer)]) -> (Vec<Stage>, Vec<wgpu::Buffer>) {
    let (gpu, k, net, b, layers) = (p.gpu, p.k, p.net, p.batch, p.layers());
    let (t, dt, names, unused) = (|n: &str| p.t(n), |n: &str| p.dt(n), &p.inputs, &p.unused);
    let none = Epilogue::default();
    let masked = Epilogue { bias: false, relu: false, mask: true };
    let slack_msg = "pooled grads, argmax and inputs are allocated with uniform-window slack";
    let mut scratch = Vec::new();
    let mut backward = Vec::new();
    for (gi, g) in p.groups.iter().enumerate().rev() {
        p.uses.at(p.backward_at(gi));
        let input = names[gi].clone();
        // No grad is needed at the image.
        let first = input == "x";
        let out_name = if let Group::Flatten { .. } = g { continue } else { layers[p.last_layer(g)].name.clone() };
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
                backward.push(weight_grad_stage(c, b, wd, &mut scratch));
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
                // The weight-grad kernel sums the bias grad too: without a bias, into scratch.
                let db = if matches!(c.op, Op::Conv2d { bias: true, .. }) {
                    net.g(&format!("{}.bias", c.name))
                } else {
                    let discard = gpu.storage(&format!("{} bias grad (no bias)", c.name), s.cout);
                    scratch.push(discard.clone());
                    View::whole(&discard)
                };
                let wd = backward_weight.bind(
                    gpu,
                    b,
                    &dt(&out_name),
                    &t(&input),
                    &net.g(&format!("{}.weight", c.name)),
                    &db,
                );
                backward.push(weight_grad_stage(c, b, wd, &mut scratch));
                if let (false, Some(bi)) = (first, backward_input) {
                    let d = bi.bind(gpu, b, &dt(&out_name), &net.w(&format!("{}.weight", c.name)), &dt(&input));
                    let icost = (conv_flops(c, b), 4 * (s.output_len() + s.weight_len() + s.input_len()));
                    backward.push(Stage::new(format!("{}_backward_input", c.name), d, icost));
                }
            }
            Group::BatchNorm { bn } | Group::BatchNormAdd { bn, .. } => {
                let l = &layers[bn];
                let LayerKernels::BatchNorm(kernel, fusion) = &k.layers[bn] else { unreachable!() };
                let sv = &saved.iter().find(|(i, _)| *i == bn).expect("saved statistics").1;
                let n = b * l.input.len();
                // A residual join: the ReLU's backward writes the masked grad, which is the grad
                // of both branches (the residual's, and bn's output's).
                let dy = match &p.residuals[gi] {
                    Some(res) => {
                        let (dy, y, dr) = (dt(&out_name).slice(0, n), t(&out_name).slice(0, n), dt(res).slice(0, n));
                        let relu = k.relu.bind_backward(gpu, &dy, &y, &dr);
                        backward.push(Stage::new(format!("{}_relu_backward", l.name), vec![relu], (n, 12 * n)));
                        dt(res)
                    }
                    None => dt(&out_name),
                };
                // With `fusion.mask` the kernel masks dy by the ReLU's output itself.
                let y = if fusion.mask { t(&out_name) } else { dy.clone() };
                let d = kernel.bind_backward_masked(
                    gpu,
                    b,
                    &t(&input),
                    &dy,
                    &y,
                    &net.w(&format!("{}.weight", l.name)),
                    &View::whole(sv),
                    &net.g(&format!("{}.weight", l.name)),
                    &net.g(&format!("{}.bias", l.name)),
                    &dt(&input),
                );
                backward.push(Stage::new(format!("{}_backward", l.name), vec![d], (9 * n, 20 * n)));
            }
            Group::Shortcut { layer } => {
                let l = &layers[layer];
                let LayerKernels::Shortcut(kernel) = &k.layers[layer] else { unreachable!() };
                let d = kernel.bind_backward(gpu, b, &dt(&out_name), &dt(&input));
                let n = b * l.input.len();
                backward.push(Stage::new(format!("{}_backward", l.name), vec![d], (0, 8 * n)));
            }
            Group::GlobalAvgPool { layer } => {
                let l = &layers[layer];
                let LayerKernels::GlobalAvgPool(kernel) = &k.layers[layer] else { unreachable!() };
                let d = kernel.bind_backward(gpu, b * l.input.c, &dt(&out_name), &dt(&input));
                let n = b * l.input.len();
                backward.push(Stage::new(format!("{}_backward", l.name), vec![d], (n, 4 * (n + b * l.input.c))));
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
            Group::Flatten { .. } => unreachable!(),
            Group::Linear { fc, .. } => {
                let l = &layers[fc];
                let Op::Linear { out, .. } = l.op else { unreachable!() };
                let dims = (b, out, l.input.len());
                let (w, bias) = (net.g(&format!("{}.weight", l.name)), net.g(&format!("{}.bias", l.name)));
                let (dy, x_in) = (dt(&out_name), t(&input));
                match k.gemm.bind_weight_grad_and_bias(gpu, k.gemm.default_variant(), dims, &dy, &x_in, &w, &bias) {
                    Some(d) => backward.push(Stage::new(format!("{}_weight_grad", l.name), d, gemm_cost(dims))),
                    None => {
                        let d = k.gemm.bind(gpu, Product::WeightGrad, dims, none, &dy, &x_in, unused, unused, &w);
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
                        unused,
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
            p.steps,
            &View::whole(&net.grads),
            &arena_view(&net.weights),
            &View::whole(&net.velocity),
        )],
        (4 * words, 20 * words),
    ));
    (backward, scratch)
}

/// A conv's weight-grad stage (its partial sums, then any reduction); keeps its scratch alive.
fn weight_grad_stage(
    c: &crate::nn::Layer,
    b: usize,
    wd: crate::kernels::conv2d_backward_weight::BackwardWeightDispatch,
    scratch: &mut Vec<wgpu::Buffer>,
) -> Stage {
    let s = conv_shape(c, b);
    let cost = (conv_flops(c, b) + s.output_len(), 4 * (s.output_len() + s.input_len() + s.weight_len()));
    scratch.extend(wd.scratch);
    Stage::new(format!("{}_backward_weight", c.name), wd.partials.into_iter().chain(wd.reduce).collect(), cost)
}
