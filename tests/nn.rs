//! Networks as data: the descriptions' `state_dict` against PyTorch's modules (names, shapes,
//! kinds, init), and the CPU interpreter of a description for LeNet-5-BN and a small residual
//! network (both kinds of shortcut, a stride-2 convolution, global average pooling) against
//! directional derivatives of its loss and PyTorch's running-statistics rule.

mod common;
use common::Rng;

use gpu_lenet::model::Arena;
use gpu_lenet::nn::{self, reference as interp, Init, Model, ParamKind};

#[test]
fn lenet5s_description_gives_the_parameter_layout_and_init_of_the_schedule() {
    for cin in [1, 3] {
        let net = nn::lenet5(cin);
        // The tutorial's Net().state_dict(): every entry is trained.
        let want: Vec<(String, Vec<usize>)> = [
            ("conv1.weight", vec![6, cin, 5, 5]),
            ("conv1.bias", vec![6]),
            ("conv2.weight", vec![16, 6, 5, 5]),
            ("conv2.bias", vec![16]),
            ("fc1.weight", vec![120, 400]),
            ("fc1.bias", vec![120]),
            ("fc2.weight", vec![84, 120]),
            ("fc2.bias", vec![84]),
            ("fc3.weight", vec![10, 84]),
            ("fc3.bias", vec![10]),
        ]
        .into_iter()
        .map(|(n, s)| (n.to_string(), s))
        .collect();
        assert!(net.params().iter().all(|p| p.kind == ParamKind::Trainable));
        assert_eq!(net.specs(ParamKind::Trainable), want);
        // PyTorch's fan-in: in_channels x kernel area for a conv, in_features for a linear.
        for (p, fan_in) in net.params().iter().zip([cin * 25, cin * 25, 150, 150, 400, 400, 120, 120, 84, 84]) {
            assert_eq!(p.init, Init::Uniform { fan_in }, "{}", p.name);
        }
        assert_eq!(net.output().len(), 10);
    }
}

#[test]
fn lenet5_bn_has_pytorchs_state_dict() {
    // NetBN().state_dict() in PyTorch: names, shapes, and which are buffers.
    let net = Model::Lenet5Bn.network(3);
    let got: Vec<(String, Vec<usize>, ParamKind)> =
        net.params().into_iter().map(|p| (p.name, p.shape, p.kind)).collect();
    let t = ParamKind::Trainable;
    let want: Vec<(&str, Vec<usize>, ParamKind)> = vec![
        ("conv1.weight", vec![6, 3, 5, 5], t),
        ("conv1.bias", vec![6], t),
        ("bn1.weight", vec![6], t),
        ("bn1.bias", vec![6], t),
        ("bn1.running_mean", vec![6], ParamKind::RunningStat),
        ("bn1.running_var", vec![6], ParamKind::RunningStat),
        ("bn1.num_batches_tracked", vec![], ParamKind::Counter),
        ("conv2.weight", vec![16, 6, 5, 5], t),
        ("conv2.bias", vec![16], t),
        ("bn2.weight", vec![16], t),
        ("bn2.bias", vec![16], t),
        ("bn2.running_mean", vec![16], ParamKind::RunningStat),
        ("bn2.running_var", vec![16], ParamKind::RunningStat),
        ("bn2.num_batches_tracked", vec![], ParamKind::Counter),
        ("fc1.weight", vec![120, 400], t),
        ("fc1.bias", vec![120], t),
        ("fc2.weight", vec![84, 120], t),
        ("fc2.bias", vec![84], t),
        ("fc3.weight", vec![10, 84], t),
        ("fc3.bias", vec![10], t),
    ];
    let want: Vec<(String, Vec<usize>, ParamKind)> = want.into_iter().map(|(n, s, k)| (n.to_string(), s, k)).collect();
    assert_eq!(got, want);
    let trainable: usize = net.specs(t).iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    assert_eq!(trainable, 62_006 + 2 * (6 + 16), "LeNet-5's 62,006 parameters plus gamma and beta");
}

#[test]
fn scoped_names_nest_as_module_paths() {
    let net = nn::Builder::new("t", nn::Shape { c: 3, h: 8, w: 8 })
        .pp("layer1")
        .pp("0")
        .conv2d("conv1", 4, 3, 1, 0, false)
        .batch_norm2d("bn1")
        .up()
        .up()
        .flatten("flatten")
        .linear("fc", 10, true)
        .build();
    let names: Vec<String> = net.params().into_iter().map(|p| p.name).collect();
    assert_eq!(names[0], "layer1.0.conv1.weight");
    assert_eq!(names[1], "layer1.0.bn1.weight");
    assert_eq!(names.last().unwrap(), "fc.bias");
    assert_eq!(net.layers[0].output, nn::Shape { c: 4, h: 6, w: 6 });
}

fn layout(net: &nn::Network) -> Arena {
    let specs = net.specs(ParamKind::Trainable);
    let refs: Vec<(&str, Vec<usize>)> = specs.iter().map(|(n, s)| (n.as_str(), s.clone())).collect();
    Arena::new(&refs, 256)
}

/// Weights as PyTorch initialises them (BatchNorm's gamma 1, beta 0), from a seed.
fn init(net: &nn::Network, arena: &Arena, seed: u64) -> Vec<f32> {
    let mut r = Rng(seed);
    let mut w = vec![0f32; arena.words];
    for p in net.params().into_iter().filter(|p| p.kind == ParamKind::Trainable) {
        let v = arena.slice_mut(&mut w, &p.name);
        match p.init {
            Init::Uniform { fan_in } => {
                let b = 1.0 / (fan_in as f32).sqrt();
                v.iter_mut().for_each(|x| *x = r.uniform(-b, b));
            }
            // Same variance as N(0, 2 / fan_in).
            Init::KaimingNormal { fan_in } => {
                let b = (6.0 / fan_in as f32).sqrt();
                v.iter_mut().for_each(|x| *x = r.uniform(-b, b));
            }
            Init::Constant(c) => v.fill(c),
        }
    }
    w
}

/// Along a unit direction following the gradient's sign, the central difference of the mean
/// loss must equal <grad, d>, for every tensor `check` names (as in gradcheck.rs).
fn check_directional_derivatives(
    net: &nn::Network,
    arena: &Arena,
    w: &[f32],
    x: &[f32],
    labels: &[u32],
    check: impl Fn(&str) -> bool,
    r: &mut Rng,
) {
    let batch = labels.len();
    let fresh = interp::State::new(net);
    let loss =
        |w: &[f32]| interp::step(net, arena, w, &mut fresh.clone(), x, labels, batch, true).loss_sum / batch as f64;
    let g = interp::step(net, arena, w, &mut fresh.clone(), x, labels, batch, true).grads;
    for t in arena.tensors.iter().filter(|t| check(&t.name)) {
        let grad = arena.slice(&g, &t.name);
        let mut d: Vec<f32> = grad.iter().map(|&v| v.signum() * r.uniform(0.5, 1.0)).collect();
        let norm = d.iter().map(|&e| (e as f64).powi(2)).sum::<f64>().sqrt() as f32;
        d.iter_mut().for_each(|e| *e /= norm);
        let analytic: f64 = grad.iter().zip(&d).map(|(&a, &b)| a as f64 * b as f64).sum();
        let eps = 5e-5f32;
        let shifted = |sign: f32| {
            let mut v = w.to_vec();
            for (x, &e) in arena.slice_mut(&mut v, &t.name).iter_mut().zip(&d) {
                *x += sign * eps * e;
            }
            loss(&v)
        };
        let numeric = (shifted(1.0) - shifted(-1.0)) / (2.0 * eps as f64);
        let err = (numeric - analytic).abs() / analytic.abs();
        assert!(err < 2e-2, "{}: directional derivative numeric {numeric} vs analytic {analytic} ({err:e})", t.name);
    }
}

#[test]
fn a_residual_networks_reference_gradients_match_directional_derivatives() {
    // ResNet-20's pieces at a size the f64 interpreter takes in a moment: a stem, an identity
    // block (the input's grad from both branches), a block with stride 2 and the option-A
    // shortcut to 6 channels, global average pooling, fc.
    let b = nn::Builder::new("small-resnet", nn::Shape { c: 3, h: 7, w: 7 })
        .kaiming()
        .conv2d("conv1", 4, 3, 1, 1, false)
        .batch_norm2d("bn1")
        .relu("relu");
    let b = nn::basic_block(b.pp("layer1"), 4, 1).up();
    let b = nn::basic_block(b.pp("layer2"), 6, 2).up();
    let net = b.global_avg_pool("avgpool").flatten("flatten").linear("fc", 10, true).build();
    assert_eq!(net.layers.iter().filter(|l| l.op == nn::Op::Add).count(), 2);
    let arena = layout(&net);
    let mut w = init(&net, &arena, 21);
    let mut r = Rng(22);
    for t in arena.tensors.iter().filter(|t| t.name.contains("bn")) {
        arena.slice_mut(&mut w, &t.name).iter_mut().for_each(|v| *v += r.uniform(-0.3, 0.3));
    }
    let batch = 3;
    let x = r.vec(batch * 3 * 7 * 7, -1.0, 1.0);
    let labels: Vec<u32> = (0..batch).map(|_| r.below(10)).collect();
    check_directional_derivatives(&net, &arena, &w, &x, &labels, |_| true, &mut r);
}

#[test]
fn lenet5_bn_reference_gradients_match_directional_derivatives() {
    let net = Model::Lenet5Bn.network(3);
    let arena = layout(&net);
    let batch = 4;
    let mut w = init(&net, &arena, 5);
    // Gamma and beta away from 1 and 0, so their gradients are exercised in general position.
    let mut r = Rng(6);
    for n in ["bn1.weight", "bn2.weight", "bn1.bias", "bn2.bias"] {
        arena.slice_mut(&mut w, n).iter_mut().for_each(|v| *v += r.uniform(-0.3, 0.3));
    }
    let x = r.vec(batch * 3 * 32 * 32, -1.0, 1.0);
    let labels: Vec<u32> = (0..batch).map(|_| r.below(10)).collect();
    // The conv biases are left out: BatchNorm's mean removes them, so their gradient is
    // (numerically) zero (checked below).
    let check = |n: &str| !n.starts_with("conv") || n.ends_with("weight");
    check_directional_derivatives(&net, &arena, &w, &x, &labels, check, &mut r);
    let fresh = interp::State::new(&net);
    let g = interp::step(&net, &arena, &w, &mut fresh.clone(), &x, &labels, batch, true).grads;
    // The conv biases before BatchNorm get (almost) no gradient: the batch mean removes them.
    let conv_bias = arena.slice(&g, "conv1.bias").iter().fold(0f32, |m, v| m.max(v.abs()));
    let conv_weight = arena.slice(&g, "conv1.weight").iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(conv_bias < 1e-4 * conv_weight.max(1e-3), "conv1.bias grad {conv_bias} vs weight grad {conv_weight}");
}

#[test]
fn lenet5_bn_reference_updates_running_statistics_only_when_training() {
    let net = Model::Lenet5Bn.network(1);
    let arena = layout(&net);
    let w = init(&net, &arena, 8);
    let mut r = Rng(9);
    let batch = 3;
    let x = r.vec(batch * 32 * 32, -1.0, 1.0);
    let labels: Vec<u32> = (0..batch).map(|_| r.below(10)).collect();
    let mut state = interp::State::new(&net);
    let before = state.values.clone();
    interp::step(&net, &arena, &w, &mut state, &x, &labels, batch, false);
    assert_eq!(state.values, before);
    assert_eq!(state.batches_tracked, 0);
    interp::step(&net, &arena, &w, &mut state, &x, &labels, batch, true);
    assert_ne!(state.values, before);
    assert_eq!(state.batches_tracked, 1);
    // running_var moved from 1 towards the batch's unbiased variance by 0.1 of the way.
    let rv = state.arena.slice(&state.values, "bn1.running_var");
    assert!(rv.iter().all(|&v| v > 0.0 && v != 1.0), "{rv:?}");
}
