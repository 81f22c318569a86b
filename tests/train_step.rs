//! One complete LeNet training step (forward, loss, backward, SGD with momentum) on the GPU
//! against the CPU reference from the same weights and batch: every parameter after the step,
//! the momentum, and the loss. Two steps, so the momentum term is exercised too.

mod common;
use common::*;

use gpu_lenet::kernels::softmax_cross_entropy::METRICS_WORDS;
use gpu_lenet::kernels::{tolerance, StepTable, View};
use gpu_lenet::model::{self, reference, Lenet, LenetKernels, Schedule};

fn init(arena: &model::Arena, in_channels: usize, rng: &mut Rng) -> Vec<f32> {
    let mut w = vec![0f32; arena.words];
    for t in &arena.tensors {
        let bound = 1.0 / (model::fan_in(&t.name, in_channels) as f32).sqrt();
        for v in arena.slice_mut(&mut w, &t.name) {
            *v = rng.uniform(-bound, bound);
        }
    }
    w
}

fn run_case(in_channels: usize, batch: usize, seed: u64) {
    let g = gpu();
    let kernels = LenetKernels::new(g, in_channels);
    let net = Lenet::new(g, in_channels);
    let arena = net.arena.clone();
    let mut rng = Rng(seed);
    let mut w = init(&arena, in_channels, &mut rng);
    let mut vel = vec![0f32; arena.words];
    net.upload(g, &w, None);
    let steps = 2;
    let table = StepTable::sequential(g, steps, batch);
    let metrics = g.storage("metrics", steps * METRICS_WORDS);
    let (lr, momentum) = (0.05f32, 0.9f32);
    let preds = g.storage("preds", steps * batch);
    let sched =
        Schedule::new(g, &kernels, &net, batch, &table, &View::whole(&metrics), &View::whole(&preds), lr, momentum);

    for step in 0..steps {
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
        let want = reference::train_step(&arena, in_channels, &mut w, &mut vel, &x, &labels, batch, lr, momentum);
        let what = format!("in_channels={in_channels} batch={batch} seed={seed} step={step}");
        assert_close(&format!("{what}: logits"), &read(&sched.acts.logits), &want.logits, tolerance(400));
        let got_grads = net.download_grads(g).unwrap();
        let got_w = net.download_weights(g).unwrap();
        let got_v = net.download_velocity(g).unwrap();
        for t in &arena.tensors {
            // The longest reduction behind a gradient: conv1's weight grad sums batch*28*28 terms.
            let tol = tolerance(batch * 28 * 28);
            assert_close(
                &format!("{what}: grad {}", t.name),
                arena.slice(&got_grads, &t.name),
                arena.slice(&want.grads, &t.name),
                tol,
            );
            assert_close(
                &format!("{what}: momentum {}", t.name),
                arena.slice(&got_v, &t.name),
                arena.slice(&vel, &t.name),
                tol,
            );
            // Weights after the update, relative to each tensor's largest weight.
            assert_close(
                &format!("{what}: weight {}", t.name),
                arena.slice(&got_w, &t.name),
                arena.slice(&w, &t.name),
                1e-5,
            );
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
    run_case(3, 64, 1);
}

#[test]
fn full_training_step_matches_cpu_reference_partial_and_single_batches() {
    run_case(3, 1, 2);
    run_case(3, 13, 3);
}

#[test]
fn full_training_step_matches_cpu_reference_one_input_channel() {
    run_case(1, 16, 4);
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
