//! `gpu-lenet bench-kernels`: every kernel of a training step at LeNet's shapes, checked against
//! the CPU reference first (a wrong kernel is reported, never timed), then timed: median of
//! many repetitions, with GPU timestamps where the adapter has them inside passes and wall
//! clock otherwise. Also the adapter's own ceilings (a vec4 copy for bandwidth, register-only
//! multiply-adds for arithmetic, and this project's GEMM at its best size for reference) and the
//! whole training step.

mod ceilings;
mod timer;

use ceilings::cost;
pub use ceilings::Ceilings;
use timer::{median, Timer};

use crate::data::synthetic;
use crate::gpu::Gpu;
use crate::kernels::prepare_batch::{self, GpuSplit, PrepareBatch};
use crate::kernels::softmax_cross_entropy::METRICS_WORDS;
use crate::kernels::{sgd_momentum, Dispatch, StepTable, View};
use crate::model::{reference, Lenet, LenetKernels, Schedule};
use crate::train::{check_batch_size, group_size, init_weights};
use std::time::Instant;

#[derive(Clone, Debug, serde::Serialize)]
pub struct KernelRow {
    pub name: String,
    /// Median milliseconds; None when the kernel failed its check.
    pub ms: Option<f64>,
    pub gflops: Option<f64>,
    pub gbps: Option<f64>,
    /// Fraction of the summed kernel time of a step.
    pub share: Option<f64>,
    /// Fraction of the ceiling that bounds it (the larger of GFLOP/s over the FMA peak and GB/s
    /// over the copy ceiling).
    pub of_ceiling: Option<f64>,
    pub correct: bool,
    /// The check's worst relative error, or why it failed.
    pub check: String,
    /// The pipelines this stage dispatches on this adapter, each with its dispatch count
    /// (e.g. "gemm_uniform_ab x8"): which per-adapter variant ran.
    pub pipelines: String,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct StepRow {
    pub ms: f64,
    pub images_per_sec: f64,
    pub dispatches: usize,
    pub submits_per_epoch: usize,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub adapter: String,
    pub batch_size: usize,
    pub timing: String,
    pub ceilings: Ceilings,
    pub kernels: Vec<KernelRow>,
    pub train_step: StepRow,
}

/// Worst |got - want| relative to max |want|.
fn rel_error(got: &[f32], want: &[f32]) -> f64 {
    let scale = want.iter().fold(0f64, |m, &v| m.max((v as f64).abs())).max(1e-30);
    got.iter().zip(want).fold(0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs())) / scale
}

/// Runs the benchmark. `only` restricts the per-kernel rows to names containing it.
pub fn run(gpu: &Gpu, batch: usize, only: Option<&str>) -> Result<Report, String> {
    let cin = 3;
    let kernels = LenetKernels::new(gpu, cin);
    check_batch_size(gpu, &kernels, batch)?;
    let timestamps =
        gpu.features.contains(wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES);
    let timer = Timer { gpu, timestamps, reps: 21, best: false };
    let net = Lenet::new(gpu, cin);
    let weights = init_weights(&net, 0);
    net.upload(gpu, &weights, None);
    // Enough synthetic images for a few distinct steps.
    let steps = 4;
    let ds = synthetic::generate(1, steps * batch, 1);
    let split = GpuSplit::upload(gpu, &ds, &ds.train, "bench data")?;
    let prep = PrepareBatch::new(gpu, &split);
    let perm: Vec<u32> = (0..(steps * batch) as u32).collect();
    let perm_buf = gpu.storage_from("bench permutation", &perm);
    let table = StepTable::sequential(gpu, steps, batch);
    let metrics = gpu.storage("bench metrics", steps * METRICS_WORDS);
    let preds = gpu.storage("bench predictions", steps * batch);
    let (lr, momentum) = (0.001, 0.9);
    let mut sched =
        Schedule::new(gpu, &kernels, &net, batch, &table, &View::whole(&metrics), &View::whole(&preds), lr, momentum);
    let prepare = prep.bind(
        gpu,
        &split,
        &View::whole(&perm_buf),
        &table,
        batch,
        &View::whole(&sched.acts.x),
        &View::whole(&sched.acts.labels),
    );
    if let Some(o) = only {
        let names: Vec<&str> = std::iter::once("prepare_batch")
            .chain(sched.forward.iter().chain(&sched.backward).map(|st| st.name))
            .collect();
        if !names.iter().any(|n| n.contains(o)) {
            return Err(format!(
                "--kernel {o}: no kernel's name contains it; on this adapter the kernels are: {}",
                names.join(", ")
            ));
        }
    }

    // Correctness: one step, everything but the optimizer, against the CPU reference.
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        prepare.record(&mut pass, 0);
        for st in sched.forward.iter().chain(&sched.backward[..sched.backward.len() - 1]) {
            st.record(&mut pass, 0);
        }
    }
    gpu.queue.submit([enc.finish()]);
    let read = |buf: &wgpu::Buffer, n: usize| gpu.read_words::<f32>(buf, 0, n);
    let (x_ref, labels_ref) = prepare_batch::reference(&ds, &ds.train, &perm, 0, batch);
    let want = reference::forward_backward(&net.arena, cin, &weights, &x_ref, &labels_ref, batch);
    let grads = net.download_grads(gpu)?;
    let a = &sched.acts;
    let act_check = |buf: &wgpu::Buffer, name: &str| -> Result<f64, String> {
        let r = want.act(name);
        Ok(rel_error(&read(buf, r.len())?, r))
    };
    let grad_check = |layer: &str, bias_only: bool, weight_only: bool| -> f64 {
        let mut e = 0f64;
        for (suffix, skip) in [("weight", bias_only), ("bias", weight_only)] {
            if !skip {
                let n = format!("{layer}.{suffix}");
                e = e.max(rel_error(net.arena.slice(&grads, &n), net.arena.slice(&want.grads, &n)));
            }
        }
        e
    };
    let mut errors: Vec<(String, f64)> = vec![("prepare_batch".into(), rel_error(&read(&a.x, x_ref.len())?, &x_ref))];
    for (stage, buf, name) in [
        ("conv1_forward", &a.a1, "a1"),
        ("pool1_forward", &a.p1, "p1"),
        ("conv1_pool1_forward", &a.p1, "p1"),
        ("conv2_forward", &a.a2, "a2"),
        ("pool2_forward", &a.p2, "p2"),
        ("conv2_pool2_forward", &a.p2, "p2"),
        ("fc1_forward", &a.a3, "a3"),
        ("fc2_forward", &a.a4, "a4"),
        ("fc3_forward", &a.logits, "logits"),
        ("softmax_cross_entropy", &a.d_logits, "d_logits"),
        ("fc3_input_grad", &a.d_a4, "d_a4"),
        ("fc2_input_grad", &a.d_a3, "d_a3"),
        ("fc1_input_grad", &a.d_p2, "d_p2"),
        ("pool2_backward", &a.d_a2, "d_a2"),
        ("conv2_backward_input", &a.d_p1, "d_p1"),
        ("pool1_backward", &a.d_a1, "d_a1"),
    ] {
        // pool1's backward is fused into conv1's weight grad where that kernel runs, and then
        // conv1, its ReLU and pool1 are one kernel (the same for conv2 and pool2).
        if sched.backward.iter().chain(&sched.forward).any(|st| st.name == stage) {
            errors.push((stage.into(), act_check(buf, name)?));
        }
    }
    for l in ["fc1", "fc2", "fc3"] {
        // The weight grad's stage writes the bias grad too where no bias_grad stage follows it.
        let separate_bias = sched.backward.iter().any(|st| st.name == format!("{l}_bias_grad"));
        errors.push((format!("{l}_weight_grad"), grad_check(l, false, separate_bias)));
        errors.push((format!("{l}_bias_grad"), grad_check(l, true, false)));
    }
    errors.push(("conv2_backward_weight".into(), grad_check("conv2", false, false)));
    errors.push(("conv1_backward_weight".into(), grad_check("conv1", false, false)));
    // The optimizer on top of the checked gradients.
    let sgd = sched.backward.last().expect("sgd stage");
    crate::kernels::run_all(gpu, &sgd.dispatches.iter().collect::<Vec<_>>());
    let (mut w_ref, mut v_ref) = (weights.clone(), vec![0f32; weights.len()]);
    sgd_momentum::reference(lr, momentum, &grads, &mut w_ref, &mut v_ref);
    errors.push(("sgd_momentum".into(), rel_error(&net.download_weights(gpu)?, &w_ref)));

    let ceilings = ceilings::measure(gpu, &kernels, &timer)?;
    let (copy_gbps, fma_gflops) = (ceilings.copy_gbps, ceilings.fma_gflops);

    // Per-kernel times.
    let tol = 1e-4;
    let mut stages: Vec<(&str, Vec<&Dispatch>)> = vec![("prepare_batch", vec![&prepare])];
    for st in sched.forward.iter().chain(&sched.backward) {
        stages.push((st.name, st.dispatches.iter().collect()));
    }
    let mut rows = Vec::new();
    for (name, ds) in &stages {
        let err = errors.iter().find(|(n, _)| n == name).map(|e| e.1).unwrap_or(f64::NAN);
        // NaN (no check found) counts as wrong.
        let correct = err <= tol;
        let check = if correct {
            format!("ok (max rel. error {err:.1e})")
        } else {
            format!("WRONG: max rel. error {err:.1e} > {tol:.0e}")
        };
        let selected = only.map(|o| name.contains(o)).unwrap_or(true);
        let ms = if correct && selected { Some(timer.time_ms(ds)?) } else { None };
        let (flops, bytes) = cost(name, batch, cin, net.arena.words);
        let gflops = ms.map(|t| flops / t / 1e6);
        let gbps = ms.map(|t| bytes / t / 1e6);
        let of_ceiling = match (gflops, gbps) {
            (Some(f), Some(b)) => Some((f / fma_gflops).max(b / copy_gbps)),
            _ => None,
        };
        if selected || !correct {
            let pipelines = pipeline_counts(ds);
            rows.push(KernelRow {
                name: name.to_string(),
                ms,
                gflops,
                gbps,
                share: None,
                of_ceiling,
                correct,
                check,
                pipelines,
            });
        }
    }
    let total: f64 = rows.iter().filter_map(|r| r.ms).sum();
    if only.is_none() {
        for r in &mut rows {
            r.share = r.ms.map(|t| t / total);
        }
    }

    // The whole step: many steps in one pass and one submit, wall clock.
    sched.prepare = Some(prepare);
    let step_ms = {
        let mut v = Vec::new();
        let per_submit = 16;
        for _ in 0..3 {
            let t = Instant::now();
            let mut enc = gpu.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                for s in 0..per_submit {
                    sched.record_train_step(&mut pass, table.offset(s % steps));
                }
            }
            gpu.queue.submit([enc.finish()]);
            gpu.wait_idle()?;
            v.push(t.elapsed().as_secs_f64() * 1e3 / per_submit as f64);
        }
        median(&mut v)
    };
    let cifar_steps = 50_000usize.div_ceil(batch);
    Ok(Report {
        adapter: gpu.describe(),
        batch_size: batch,
        timing: if timestamps { "gpu-timestamps" } else { "wall-clock" }.into(),
        ceilings,
        kernels: rows,
        train_step: StepRow {
            ms: step_ms,
            images_per_sec: batch as f64 * 1e3 / step_ms,
            dispatches: sched.dispatches_per_step(),
            submits_per_epoch: cifar_steps.div_ceil(group_size(cifar_steps)),
        },
    })
}

/// "name xN" for each pipeline of a stage's dispatches, in order of first use.
fn pipeline_counts(ds: &[&Dispatch]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for d in ds {
        match counts.iter_mut().find(|(n, _)| *n == d.name) {
            Some((_, c)) => *c += 1,
            None => counts.push((d.name, 1)),
        }
    }
    counts.iter().map(|(n, c)| if *c > 1 { format!("{n} x{c}") } else { n.to_string() }).collect::<Vec<_>>().join(", ")
}

/// The human-readable table.
pub fn print(r: &Report) {
    println!("adapter: {}   batch: {}   timing: {}", r.adapter, r.batch_size, r.timing);
    println!(
        "ceilings: copy kernel (vec4) {:.2} GB/s, FMA peak (registers only) {:.2} GFLOP/s; this project's GEMM at \
            128^3: {:.2} GFLOP/s",
        r.ceilings.copy_gbps, r.ceilings.fma_gflops, r.ceilings.gemm_gflops
    );
    println!(
        "{:<24} {:>9} {:>9} {:>8} {:>7} {:>10}  {:<28} pipelines",
        "kernel", "ms", "GFLOP/s", "GB/s", "share", "of ceiling", "check"
    );
    let opt =
        |v: Option<f64>, w: usize, p: usize| v.map(|x| format!("{x:>w$.p$}")).unwrap_or_else(|| format!("{:>w$}", "-"));
    for k in &r.kernels {
        println!(
            "{:<24} {} {} {} {} {}  {:<28} {}",
            k.name,
            opt(k.ms, 9, 3),
            opt(k.gflops, 9, 2),
            opt(k.gbps, 8, 2),
            opt(k.share.map(|s| 100.0 * s), 6, 1) + "%",
            opt(k.of_ceiling.map(|s| 100.0 * s), 9, 1) + "%",
            k.check,
            k.pipelines
        );
    }
    let s = &r.train_step;
    println!(
        "train step: {:.3} ms per step, {:.0} images/s, {} dispatches per step, {} submits per CIFAR-10 epoch",
        s.ms, s.images_per_sec, s.dispatches, s.submits_per_epoch
    );
}
