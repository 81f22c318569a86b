//! `gpu-lenet bench-kernels`: every kernel of a training step at LeNet's shapes, checked against
//! the CPU reference first (a wrong kernel is reported, never timed), then timed: median of
//! many repetitions, with GPU timestamps where the adapter has them inside passes and wall
//! clock otherwise. Also the adapter's own ceilings (a vec4 copy for bandwidth, register-only
//! multiply-adds for arithmetic, and this project's GEMM at its best size for reference) and the
//! whole training step.

mod ceilings;
mod timer;

pub use ceilings::Ceilings;
use timer::{median, Timer};

use crate::data::synthetic;
use crate::gpu::Gpu;
use crate::kernels::prepare_batch::{self, GpuSplit, PrepareBatch};
use crate::kernels::softmax_cross_entropy::METRICS_WORDS;
use crate::kernels::{sgd_momentum, Dispatch, StepTable, View};
use crate::model::{Net, NetKernels, Schedule, CLASSES};
use crate::nn::{reference, Model, Network, Op};
use crate::train::{check_batch_size, group_size, init_state, init_weights};
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

/// GPU memory of a training step, in bytes.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MemoryRow {
    /// Parameters, grads, momentum, running statistics.
    pub network: u64,
    /// Activations and gradients as allocated (buffers shared where lifetimes allow).
    pub tensors: u64,
    /// The same tensors with one buffer each.
    pub tensors_unshared: u64,
    pub tensor_count: usize,
    pub buffer_count: usize,
    /// The batch, the kernels' scratch.
    pub other: u64,
    pub total: u64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub adapter: String,
    pub batch_size: usize,
    pub timing: String,
    pub ceilings: Ceilings,
    pub kernels: Vec<KernelRow>,
    pub memory: MemoryRow,
    pub train_step: StepRow,
}

/// Worst |got - want| relative to max |want|.
fn rel_error(got: &[f32], want: &[f32]) -> f64 {
    let scale = want.iter().fold(0f64, |m, &v| m.max((v as f64).abs())).max(1e-30);
    got.iter().zip(want).fold(0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs())) / scale
}

/// Runs the benchmark for `model`. `only` restricts the per-kernel rows to names containing it.
pub fn run(gpu: &Gpu, model: Model, batch: usize, only: Option<&str>) -> Result<Report, String> {
    let cin = 3;
    let network = model.network(cin);
    let kernels = NetKernels::new(gpu, &network, Default::default());
    check_batch_size(gpu, &network, &kernels, batch)?;
    network.check_training_batch(batch)?;
    let timestamps =
        gpu.features.contains(wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES);
    let timer = Timer { gpu, timestamps, reps: 21, best: false };
    let net = Net::new(gpu, network.clone());
    let weights = init_weights(&net, 0);
    net.upload(gpu, &weights, None);
    net.upload_state(gpu, &init_state(&net));
    // Enough synthetic images for a few distinct steps.
    let steps = 4;
    let ds = synthetic::generate(1, steps * batch, 1);
    let split = GpuSplit::upload(gpu, &ds, &ds.train, "bench data")?;
    let prep = PrepareBatch::new(gpu, &split);
    let perm: Vec<u32> = (0..(steps * batch) as u32).collect();
    let perm_buf = gpu.storage_from("bench permutation", &perm);
    let (lr, momentum) = (0.001, 0.9);
    let table = StepTable::sequential(gpu, steps, batch, lr, momentum);
    let metrics = gpu.storage("bench metrics", steps * METRICS_WORDS);
    let preds = gpu.storage("bench predictions", steps * batch);
    let mut sched = Schedule::new(gpu, &kernels, &net, batch, &table, &View::whole(&metrics), &View::whole(&preds));
    let prepare = prep.bind(
        gpu,
        &split,
        &View::whole(&perm_buf),
        &table,
        batch,
        0,
        &View::whole(&sched.acts.x),
        &View::whole(&sched.acts.labels),
    );
    if let Some(o) = only {
        let names: Vec<&str> = std::iter::once("prepare_batch")
            .chain(sched.forward.iter().chain(&sched.backward).map(|st| st.name.as_str()))
            .collect();
        if !names.iter().any(|n| n.contains(o)) {
            return Err(format!(
                "--kernel {o}: no kernel's name contains it; on this adapter the kernels are: {}",
                names.join(", ")
            ));
        }
    }

    // Correctness: one step, everything but the optimizer, against the CPU reference, each
    // stage's tensor read as soon as the stage has run (a later stage may reuse its buffer).
    // The reference forward takes the GPU's output at every tensor the step stores (each kernel
    // is checked on the inputs it had, and ReLU masks are the GPU's: a value within rounding of
    // 0 may fall either side, and one such element would otherwise show as a wrong gradient).
    let run = |dispatches: &[Dispatch]| crate::kernels::run_all(gpu, &dispatches.iter().collect::<Vec<_>>());
    run(std::slice::from_ref(&prepare));
    let (x_ref, labels_ref) = prepare_batch::reference(&ds, &ds.train, &perm, 0, batch);
    let mut errors: Vec<(String, f64)> =
        vec![("prepare_batch".into(), rel_error(&gpu.read_words::<f32>(&sched.acts.x, 0, x_ref.len())?, &x_ref))];
    let layer_of = |t: &str| network.layers.iter().position(|l| l.name == t);
    let mut forward_values: Vec<(usize, Vec<f32>)> = Vec::new();
    for (st, out) in sched.forward.iter().zip(&sched.outputs) {
        run(&st.dispatches);
        if let Some(i) = layer_of(out) {
            let len = batch * network.layers[i].output.len();
            forward_values.push((i, gpu.read_words::<f32>(&sched.acts.get(out).buffer, 0, len)?));
        }
    }
    let anchor = |i: usize| forward_values.iter().find(|(j, _)| *j == i).map(|(_, v)| v.clone());
    let mut state = reference::State::new(&network);
    let want = reference::step_anchored(
        &network,
        &net.arena,
        &weights,
        &mut state,
        &x_ref,
        &labels_ref,
        batch,
        true,
        0.0,
        &anchor,
    );
    let checks = Checks { network: &network, want: &want, labels: &labels_ref, batch };
    let tensor_error = |t: &str| -> Result<f64, String> {
        let r = checks.tensor(t);
        Ok(rel_error(&gpu.read_words::<f32>(&sched.acts.get(t).buffer, 0, r.len())?, &r))
    };
    for (st, out) in sched.forward.iter().zip(&sched.outputs) {
        let e = match layer_of(out) {
            Some(i) => rel_error(&anchor(i).expect("read above"), &want.outputs[i]),
            // The loss's grad at the logits, still in place after the forward.
            None => tensor_error(out)?,
        };
        errors.push((st.name.clone(), e));
    }
    let has_stage = |n: &str| sched.backward.iter().any(|st| st.name == n);
    let mut param_checks = Vec::new();
    for st in &sched.backward[..sched.backward.len() - 1] {
        run(&st.dispatches);
        let n = st.name.as_str();
        let (params, tensor) = checks.backward_writes(n, &has_stage);
        let e = match tensor {
            Some(t) => tensor_error(&t)?,
            None => 0.0,
        };
        param_checks.push((n.to_string(), params, e));
    }
    // A stage's parameter grads together, relative to their largest value: a conv bias before
    // BatchNorm has a grad of (numerically) zero, which only its weight's scale can judge.
    let grads = net.download_grads(gpu)?;
    let grad_error = |params: &[String]| {
        let got: Vec<f32> = params.iter().flat_map(|n| net.arena.slice(&grads, n).to_vec()).collect();
        let want: Vec<f32> = params.iter().flat_map(|n| net.arena.slice(&want.grads, n).to_vec()).collect();
        if params.is_empty() {
            0.0
        } else {
            rel_error(&got, &want)
        }
    };
    for (n, params, e) in param_checks {
        errors.push((n, e.max(grad_error(&params))));
    }
    // The optimizer on top of the checked gradients.
    let sgd = sched.backward.last().expect("sgd stage");
    crate::kernels::run_all(gpu, &sgd.dispatches.iter().collect::<Vec<_>>());
    let (mut w_ref, mut v_ref) = (weights.clone(), vec![0f32; weights.len()]);
    sgd_momentum::reference(lr, momentum, Default::default(), &grads, &mut w_ref, &mut v_ref);
    errors.push(("sgd_momentum".into(), rel_error(&net.download_weights(gpu)?, &w_ref)));

    let ceilings = ceilings::measure(gpu, &kernels, &timer)?;
    let (copy_gbps, fma_gflops) = (ceilings.copy_gbps, ceilings.fma_gflops);

    // Per-kernel times.
    let tol = 1e-4;
    let prep_cost = (3 * batch * cin * 1024, batch * cin * 1024 + 4 * batch * cin * 1024 + 8 * batch);
    let mut stages: Vec<(&str, Vec<&Dispatch>, (f64, f64))> =
        vec![("prepare_batch", vec![&prepare], (prep_cost.0 as f64, prep_cost.1 as f64))];
    for st in sched.forward.iter().chain(&sched.backward) {
        stages.push((st.name.as_str(), st.dispatches.iter().collect(), (st.flops, st.bytes)));
    }
    let mut rows = Vec::new();
    for (name, ds, (flops, bytes)) in &stages {
        let (flops, bytes) = (*flops, *bytes);
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
        memory: MemoryRow {
            network: net.bytes(),
            tensors: sched.memory.shared_bytes,
            tensors_unshared: sched.memory.unshared_bytes,
            tensor_count: sched.memory.tensors,
            buffer_count: sched.memory.buffers,
            other: sched.bytes() - sched.memory.shared_bytes,
            total: net.bytes() + sched.bytes(),
        },
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
    let m = &r.memory;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "step memory: {:.2} MiB = network {:.2} MiB (parameters, grads, momentum, statistics) + {} activations and \
            grads in {} buffers {:.2} MiB (one buffer each: {:.2} MiB) + batch and scratch {:.2} MiB",
        mib(m.total),
        mib(m.network),
        m.tensor_count,
        m.buffer_count,
        mib(m.tensors),
        mib(m.tensors_unshared),
        mib(m.other)
    );
    let s = &r.train_step;
    println!(
        "train step: {:.3} ms per step, {:.0} images/s, {} dispatches per step, {} submits per CIFAR-10 epoch",
        s.ms, s.images_per_sec, s.dispatches, s.submits_per_epoch
    );
}

/// Which reference value each stage of a step is checked against.
struct Checks<'a> {
    network: &'a Network,
    want: &'a reference::StepResult,
    labels: &'a [u32],
    batch: usize,
}

impl Checks<'_> {
    fn index(&self, layer: &str) -> usize {
        self.network.layers.iter().position(|l| l.name == layer).unwrap_or_else(|| panic!("no layer {layer}"))
    }

    /// The reference value of a schedule tensor: a layer's output, or `d_<name>`, the grad at it
    /// (for a ReLU whose reader applies its mask, masked by it: the grad at the ReLU's input).
    fn tensor(&self, t: &str) -> Vec<f32> {
        let Some(d) = t.strip_prefix("d_") else { return self.want.outputs[self.index(t)].clone() };
        let j = self.index(d);
        if j + 1 == self.network.layers.len() {
            return crate::kernels::softmax_cross_entropy::reference(
                self.batch,
                CLASSES,
                &self.want.logits,
                self.labels,
            )
            .0;
        }
        let l = &self.network.layers[j];
        match (l.op == Op::Relu && self.network.relu_masked_by_reader(j), l.inputs[0]) {
            (true, crate::nn::Source::Layer(i)) => self.want.output_grads[i].clone(),
            _ => self.want.output_grads[j].clone(),
        }
    }

    /// The tensor input `k` of layer `l` reads (a Flatten is a view of its input), if a layer's.
    fn input_of(&self, l: usize, k: usize) -> Option<usize> {
        match self.network.layers[l].inputs[k] {
            crate::nn::Source::Image => None,
            crate::nn::Source::Layer(j) if self.network.layers[j].op == Op::Flatten => self.input_of(j, 0),
            crate::nn::Source::Layer(j) => Some(j),
        }
    }

    /// The grad a stage of layer `l` writes at its input `k`, where it is complete after the
    /// stage: no earlier layer reads the same tensor (its grad would be added later).
    fn complete_grad(&self, l: usize, k: usize) -> Option<String> {
        let j = self.input_of(l, k)?;
        let readers = self.network.consumers(j);
        readers.iter().all(|&r| r >= l).then(|| format!("d_{}", self.network.layers[j].name))
    }

    /// What a backward stage writes: parameter grads, and the grad of a tensor (None where a
    /// later stage adds to it).
    fn backward_writes(&self, stage: &str, has_stage: &dyn Fn(&str) -> bool) -> (Vec<String>, Option<String>) {
        let both = |l: &str| vec![format!("{l}.weight"), format!("{l}.bias")];
        let input_grad = |l: &str| self.complete_grad(self.index(l), 0);
        if let Some(bn) = stage.strip_suffix("_relu_backward") {
            // A residual join's ReLU: the masked grad, the residual's (the Add's second input).
            return (vec![], self.complete_grad(self.index(bn) + 1, 1));
        }
        if let Some(l) = stage.strip_suffix("_weight_grad") {
            let separate_bias = has_stage(&format!("{l}_bias_grad"));
            return (if separate_bias { vec![format!("{l}.weight")] } else { both(l) }, None);
        }
        if let Some(l) = stage.strip_suffix("_bias_grad") {
            return (vec![format!("{l}.bias")], None);
        }
        if let Some(l) = stage.strip_suffix("_backward_weight") {
            let has_bias = matches!(self.network.layers[self.index(l)].op, Op::Conv2d { bias: true, .. });
            return (if has_bias { both(l) } else { vec![format!("{l}.weight")] }, None);
        }
        if let Some(l) = stage.strip_suffix("_input_grad").or_else(|| stage.strip_suffix("_backward_input")) {
            return (vec![], input_grad(l));
        }
        let l = stage.strip_suffix("_backward").unwrap_or_else(|| panic!("no check for stage {stage}"));
        let params = if self.network.layers[self.index(l)].op == Op::BatchNorm2d { both(l) } else { vec![] };
        (params, input_grad(l))
    }
}
