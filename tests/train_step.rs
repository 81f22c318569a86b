//! One complete training step (forward, loss, backward, SGD with momentum) of LeNet-5, of
//! LeNet-5-BN and of ResNet-20 on the GPU against the CPU reference (the interpreter of the network's
//! description) from the same weights and batch: every parameter after the step, the momentum,
//! the running statistics and the loss. Two steps, so the momentum term is exercised too; each
//! step at its own lr and momentum from the step table, and with the recipe's weight decay,
//! Nesterov and label smoothing.

mod common;
use common::*;

use gpu_lenet::kernels::sgd_momentum::SgdOptions;
use gpu_lenet::kernels::softmax_cross_entropy::METRICS_WORDS;
use gpu_lenet::kernels::{tolerance, StepTable, View};
use gpu_lenet::model::{Net, NetKernels, Schedule};
use gpu_lenet::nn::{reference, Model, StepRule};
use gpu_lenet::train::{init_state, init_weights};

fn run_case(model: Model, in_channels: usize, batch: usize, seed: u64) {
    run_with(model, in_channels, batch, seed, StepRule::default());
}

fn run_with(model: Model, in_channels: usize, batch: usize, seed: u64, rule: StepRule) {
    let g = gpu();
    let network = model.network(in_channels);
    let kernels = NetKernels::new(g, &network, rule);
    let net = Net::new(g, network.clone());
    let arena = net.arena.clone();
    let mut rng = Rng(seed);
    let mut w = init_weights(&net, seed);
    let mut vel = vec![0f32; arena.words];
    let mut state = reference::State::new(&network);
    assert_eq!(state.arena.tensors.len(), net.state_arena.tensors.len());
    net.upload(g, &w, None);
    net.upload_state(g, &init_state(&net));
    let steps = 2;
    // A different lr and momentum per step, as a schedule writes them.
    let rates = [(0.05f32, 0.9f32), (0.03, 0.8)];
    let mut rows = StepTable::sequential_rows(steps, batch, 0.0, 0.0);
    for (r, &(lr, m)) in rows.iter_mut().zip(&rates) {
        (r.lr, r.momentum) = (lr, m);
    }
    let table = StepTable::new(g, &rows);
    let metrics = g.storage("metrics", steps * METRICS_WORDS);
    let preds = g.storage("preds", steps * batch);
    let sched = Schedule::new(g, &kernels, &net, batch, &table, &View::whole(&metrics), &View::whole(&preds));

    for step in 0..steps {
        let (lr, momentum) = rates[step];
        let x = rng.vec(batch * in_channels * 32 * 32, -1.0, 1.0);
        let labels: Vec<u32> = (0..batch).map(|_| rng.below(10)).collect();
        g.queue.write_buffer(&sched.acts.x, 0, bytemuck::cast_slice(&x));
        g.queue.write_buffer(&sched.acts.labels, 0, bytemuck::cast_slice(&labels));
        let mut enc = g.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            sched.record_train_step(&mut pass, table.offset(step));
        }
        g.queue.submit([enc.finish()]);

        // The CPU step starts from the GPU's weights before this step (they agree to 1e-5).
        let want = reference::train_step(
            &network, &arena, &mut w, &mut vel, &mut state, &x, &labels, batch, lr, momentum, rule,
        );
        let what = format!("{model:?} in_channels={in_channels} batch={batch} seed={seed} step={step} {rule:?}");
        assert_close(&format!("{what}: logits"), &read(&sched.acts.logits), &want.logits, tolerance(400));
        let got_grads = net.download_grads(g).unwrap();
        let got_w = net.download_weights(g).unwrap();
        let got_v = net.download_velocity(g).unwrap();
        for t in &arena.tensors {
            // The longest reduction behind a gradient: a weight grad over batch*32*32 pixels.
            let tol = tolerance(batch * 32 * 32);
            let layer = t.name.rsplit_once('.').unwrap().0;
            let before_bn = network.batch_norms().iter().any(|bn| {
                let i = network.layers.iter().position(|l| l.name == bn.name).unwrap();
                network.layers[i - 1].name == layer
            });
            // BatchNorm's mean removes a conv bias: its grad (and so its momentum) is zero up to
            // rounding, judged against the scale of the conv weight's.
            let floor = |host: &[f32]| {
                let w = arena.slice(host, &format!("{layer}.weight"));
                if before_bn && t.name.ends_with(".bias") {
                    w.iter().fold(0f32, |m, v| m.max(v.abs()))
                } else {
                    0.0
                }
            };
            for (kind, got, want_all) in [("grad", &got_grads, &want.grads), ("momentum", &got_v, &vel)] {
                let (g, w) = (arena.slice(got, &t.name), arena.slice(want_all, &t.name));
                let scale = w.iter().fold(floor(want_all), |m, v| m.max(v.abs())) as f64;
                let err = g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) as f64;
                assert!(
                    err <= tol * scale,
                    "{what}: {kind} {}: max error {err:e} of scale {scale:e} > {tol:e}",
                    t.name
                );
            }
            // Weights after the update, relative to each tensor's largest weight.
            assert_close(
                &format!("{what}: weight {}", t.name),
                arena.slice(&got_w, &t.name),
                arena.slice(&w, &t.name),
                1e-5,
            );
        }
        // BatchNorm's running statistics after the step (by name: the arenas' alignments differ).
        let got_state = net.download_state(g).unwrap();
        for t in &net.state_arena.tensors {
            let want_stat = state.arena.slice(&state.values, &t.name);
            assert_close(&format!("{what}: {}", t.name), net.state_arena.slice(&got_state, &t.name), want_stat, 1e-5);
        }
        let m = read(&metrics);
        let row = &m[step * METRICS_WORDS..(step + 1) * METRICS_WORDS];
        assert_close(&format!("{what}: loss"), &row[..1], &[want.loss_sum as f32], tolerance(batch * 10));
        assert_eq!(row[1], want.correct as f32, "{what}: correct count");
        assert_eq!(row[2], batch as f32, "{what}: batch size in metrics");
        assert_eq!(row[3], 0.0, "{what}: non-finite flag");
        // Continue from the GPU's state so both sides start the next step identically.
        w = got_w;
        vel = got_v;
    }
}

#[test]
fn full_training_step_matches_cpu_reference_batch_64() {
    run_case(Model::Lenet5, 3, 64, 1);
}

#[test]
fn full_lenet5_bn_step_matches_cpu_reference() {
    run_case(Model::Lenet5Bn, 3, 64, 5);
    run_case(Model::Lenet5Bn, 3, 13, 6);
    run_case(Model::Lenet5Bn, 1, 1, 7);
}

#[test]
fn full_resnet20_step_matches_cpu_reference() {
    // The residual blocks, both shortcuts, the stride-2 convolutions and the grads that two
    // branches add up; batch 2 (the smallest BatchNorm trains on at 8x8) and one channel.
    run_case(Model::Resnet20, 3, 2, 11);
    run_case(Model::Resnet20, 1, 3, 12);
}

#[test]
fn full_training_step_matches_cpu_reference_partial_and_single_batches() {
    run_case(Model::Lenet5, 3, 1, 2);
    run_case(Model::Lenet5, 3, 13, 3);
}

#[test]
fn weight_decay_nesterov_and_label_smoothing_match_the_cpu_reference() {
    let rule = StepRule { label_smoothing: 0.1, sgd: SgdOptions { weight_decay: 5e-3, nesterov: true } };
    run_with(Model::Lenet5, 3, 13, 8, rule);
    run_with(Model::Lenet5Bn, 1, 7, 9, rule);
    let decay_only = StepRule { label_smoothing: 0.0, sgd: SgdOptions { weight_decay: 1e-2, nesterov: false } };
    run_with(Model::Lenet5, 3, 5, 10, decay_only);
}

#[test]
fn full_training_step_matches_cpu_reference_one_input_channel() {
    run_case(Model::Lenet5, 1, 16, 4);
}

/// The keep-awake thread (src/gpu/keep_awake.rs) is for CPU adapters only: a real GPU never gets
/// a spinning thread. Dropping it stops and joins the thread.
#[test]
fn keep_awake_only_for_cpu_adapters() {
    use gpu_lenet::gpu::keep_awake::KeepAwake;
    let mut info = gpu().info.clone();
    for (ty, wanted) in [
        (
            wgpu::DeviceType::Cpu,
            std::env::var("GPU_LENET_KEEP_CORES_AWAKE").as_deref() != Ok("0") && cfg!(target_os = "linux"),
        ),
        (wgpu::DeviceType::DiscreteGpu, false),
        (wgpu::DeviceType::IntegratedGpu, false),
        (wgpu::DeviceType::VirtualGpu, false),
    ] {
        info.device_type = ty;
        let k = KeepAwake::for_adapter(&info);
        assert_eq!(k.is_some(), wanted, "{ty:?}");
        drop(k);
    }
}
