//! Training and evaluation: everything resident on the GPU, many steps per submit, and the CPU
//! reading back only the metrics rows, a few times per epoch, without stalling the queue.

use crate::checkpoint;
use crate::data::Dataset;
use crate::gpu::Gpu;
use crate::kernels::prepare_batch::{GpuSplit, PrepareBatch};
use crate::kernels::softmax_cross_entropy::METRICS_WORDS;
use crate::kernels::{StepTable, View};
use crate::model::{fan_in, Lenet, LenetKernels, Schedule, CLASSES};
use crate::rng::Rng;
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

/// Hyperparameters and run options.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f32,
    pub momentum: f32,
    pub seed: u64,
    pub shuffle: bool,
    pub metrics: Option<PathBuf>,
    pub save: Option<PathBuf>,
    pub init: Option<PathBuf>,
    /// Show a progress bar (only when stdout is a terminal).
    pub progress: bool,
    /// Write `last.safetensors` (resumable) and `best.safetensors` here after every epoch.
    pub checkpoint_dir: Option<PathBuf>,
    /// Continue from `DIR/last.safetensors` (and keep checkpointing into DIR).
    pub resume: Option<PathBuf>,
    /// Resume even when the checkpoint's hyperparameters differ from the flags.
    pub allow_changed_hyperparameters: bool,
}

impl TrainConfig {
    /// The checks that need no data and no GPU, so a bad flag fails before either starts.
    pub fn validate(&self) -> Result<(), String> {
        if self.epochs == 0 {
            return Err("--epochs: must be at least 1".into());
        }
        if self.batch_size == 0 {
            return Err("--batch-size: must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(format!("--lr {}: expected a positive finite learning rate", self.lr));
        }
        if !(self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum)) {
            return Err(format!("--momentum {}: expected a value in [0, 1)", self.momentum));
        }
        Ok(())
    }
}

/// Refuses a checkpoint whose first convolution does not take the data set's channels.
fn check_channels(path: &std::path::Path, l: &checkpoint::Loaded, ds: &Dataset) -> Result<(), String> {
    if l.in_channels != ds.channels {
        return Err(format!(
            "{}: conv1.weight has {} input channel(s) but the {} data set has {}",
            path.display(),
            l.in_channels,
            ds.name,
            ds.channels
        ));
    }
    Ok(())
}

/// PyTorch's default initialisation for Conv2d and Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
/// for weights and biases, drawn in state_dict order from the seed.
pub fn init_weights(net: &Lenet, seed: u64) -> Vec<f32> {
    let mut r = Rng::for_purpose(seed, "init");
    let mut w = vec![0f32; net.arena.words];
    for t in &net.arena.tensors {
        let bound = 1.0 / (fan_in(&t.name, net.in_channels) as f32).sqrt();
        for v in net.arena.slice_mut(&mut w, &t.name) {
            *v = r.uniform(-bound, bound);
        }
    }
    w
}

/// One split, resident, with the schedules that walk it in batches.
struct Walk {
    split: GpuSplit,
    perm: wgpu::Buffer,
    table: StepTable,
    metrics: wgpu::Buffer,
    preds: wgpu::Buffer,
    full: Schedule,
    tail: Option<Schedule>,
    steps: usize,
    full_steps: usize,
}

impl Walk {
    #[allow(clippy::too_many_arguments)]
    fn new(
        gpu: &Gpu,
        k: &LenetKernels,
        net: &Lenet,
        ds: &Dataset,
        split: &crate::data::Split,
        what: &str,
        batch: usize,
        lr: f32,
        momentum: f32,
    ) -> Result<Walk, String> {
        let split_gpu = GpuSplit::upload(gpu, ds, split, what)?;
        let prep = PrepareBatch::new(gpu, &split_gpu);
        let n = split.len();
        let full_steps = n / batch;
        let tail_len = n % batch;
        let steps = full_steps + (tail_len > 0) as usize;
        let identity: Vec<u32> = (0..n as u32).collect();
        let perm = gpu.storage_from(&format!("{what} permutation"), &identity);
        let table = StepTable::sequential(gpu, steps, batch);
        let metrics = gpu.storage(&format!("{what} metrics"), steps * METRICS_WORDS);
        let preds = gpu.storage(&format!("{what} predictions"), n);
        let (mv, pv, permv) = (View::whole(&metrics), View::whole(&preds), View::whole(&perm));
        let make = |b: usize| {
            let mut s = Schedule::new(gpu, k, net, b, &table, &mv, &pv, lr, momentum);
            s.prepare = Some(prep.bind(
                gpu,
                &split_gpu,
                &permv,
                &table,
                b,
                &View::whole(&s.acts.x),
                &View::whole(&s.acts.labels),
            ));
            s
        };
        let full = make(batch);
        let tail = (tail_len > 0).then(|| make(tail_len));
        Ok(Walk { split: split_gpu, perm, table, metrics, preds, full, tail, steps, full_steps })
    }

    fn schedule(&self, step: usize) -> &Schedule {
        if step < self.full_steps {
            &self.full
        } else {
            self.tail.as_ref().expect("tail schedule")
        }
    }
}

/// Set by the first Ctrl-C or SIGTERM (see `main`): training stops submitting steps, finishes
/// what the GPU has, writes a checkpoint and exits.
pub static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Sums of metrics rows.
#[derive(Clone, Copy, Debug, Default)]
pub struct Totals {
    /// Steps whose rows were added (fewer than asked when interrupted).
    pub steps: usize,
    pub loss_sum: f64,
    pub correct: f64,
    pub count: f64,
    /// First step whose loss or logits were not finite.
    pub first_non_finite: Option<usize>,
}

impl Totals {
    fn add_rows(&mut self, first_step: usize, rows: &[f32]) {
        for (i, r) in rows.chunks_exact(METRICS_WORDS).enumerate() {
            self.steps += 1;
            self.loss_sum += r[0] as f64;
            self.correct += r[1] as f64;
            self.count += r[2] as f64;
            if (r[3] != 0.0 || !r[0].is_finite()) && self.first_non_finite.is_none() {
                self.first_non_finite = Some(first_step + i);
            }
        }
    }
    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.count.max(1.0)
    }
    pub fn accuracy(&self) -> f64 {
        self.correct / self.count.max(1.0)
    }
}

/// A readback in flight: the metrics rows of a group of steps, copied after them in the same
/// submit and mapped asynchronously.
struct Pending {
    slot: usize,
    first_step: usize,
    rows: usize,
    submission: wgpu::SubmissionIndex,
    rx: futures_intrusive::channel::shared::OneshotReceiver<Result<(), wgpu::BufferAsyncError>>,
}

/// Everything resident on the GPU for one data set and batch size.
pub struct Engine<'g> {
    pub gpu: &'g Gpu,
    pub net: Lenet,
    train: Option<Walk>,
    test: Walk,
    staging: [wgpu::Buffer; 2],
    pub batch_size: usize,
    pub dataset: Dataset,
}

/// Steps per submit: a few readbacks per epoch for the progress bar, many steps each.
pub fn group_size(steps: usize) -> usize {
    steps.div_ceil(16).clamp(1, 256)
}

impl<'g> Engine<'g> {
    /// Builds pipelines, uploads the data set and builds every bind group, once.
    pub fn new(
        gpu: &'g Gpu,
        dataset: Dataset,
        batch_size: usize,
        lr: f32,
        momentum: f32,
        with_train: bool,
    ) -> Result<Engine<'g>, String> {
        if batch_size == 0 {
            return Err("--batch-size: must be at least 1".into());
        }
        if dataset.test.is_empty() {
            return Err(format!("{}: the test split holds no images", dataset.source));
        }
        if with_train && dataset.train.is_empty() {
            return Err(format!("{}: the training split holds no images", dataset.source));
        }
        let kernels = LenetKernels::new(gpu, dataset.channels);
        // The conv kernels put the batch on the z dimension of the dispatch; the largest
        // per-image buffer is conv1's output, or the conv weight grads' partial sums (per block of
        // rows on a GPU).
        let max_batch = gpu.limits.max_compute_workgroups_per_dimension as usize;
        let per_image_bytes = [
            4 * 6 * 28 * 28,
            kernels.conv1_backward_weight.scratch_bytes_per_image(),
            kernels.conv2_backward_weight.scratch_bytes_per_image(),
        ]
        .into_iter()
        .max()
        .unwrap_or(1);
        let max_by_binding = gpu.limits.max_storage_buffer_binding_size as usize / per_image_bytes;
        let limit = max_batch.min(max_by_binding);
        if batch_size > limit {
            return Err(format!(
                "--batch-size {batch_size}: this adapter supports at most {limit} (dispatch and binding limits)"
            ));
        }
        let net = Lenet::new(gpu, dataset.channels);
        let train = if with_train {
            Some(Walk::new(gpu, &kernels, &net, &dataset, &dataset.train, "training set", batch_size, lr, momentum)?)
        } else {
            None
        };
        let test = Walk::new(gpu, &kernels, &net, &dataset, &dataset.test, "test set", batch_size, lr, momentum)?;
        gpu.check()?;
        let max_rows =
            [train.as_ref().map(|w| w.steps).unwrap_or(0), test.steps].into_iter().map(group_size).max().unwrap_or(1);
        let staging = [0, 1].map(|i| {
            gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(if i == 0 { "metrics staging 0" } else { "metrics staging 1" }),
                size: (max_rows * METRICS_WORDS * 4) as u64,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        Ok(Engine { gpu, net, train, test, staging, batch_size, dataset })
    }

    pub fn dispatches_per_step(&self) -> usize {
        self.test.full.dispatches_per_step()
    }

    pub fn train_steps_per_epoch(&self) -> usize {
        self.train.as_ref().map(|w| w.steps).unwrap_or(0)
    }

    /// Submits of one epoch's training.
    pub fn submits_per_epoch(&self) -> usize {
        let s = self.train_steps_per_epoch();
        s.div_ceil(group_size(s))
    }

    fn wait(&self, p: Pending) -> Result<Vec<f32>, String> {
        self.gpu.device.poll(wgpu::PollType::Wait { submission_index: Some(p.submission), timeout: None }).map_err(
            |e| self.gpu.check().err().unwrap_or(format!("the GPU stopped executing work (device lost?): {e}")),
        )?;
        match pollster::block_on(p.rx.receive()) {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(format!("GPU error reading metrics: {e}")),
            None => return Err("GPU device lost while reading metrics".into()),
        }
        self.gpu.check()?;
        let buf = &self.staging[p.slot];
        let bytes = (p.rows * METRICS_WORDS * 4) as u64;
        let rows = {
            let view = buf.slice(..bytes).get_mapped_range().map_err(|e| format!("GPU readback failed: {e:?}"))?;
            bytemuck::cast_slice::<u8, f32>(&view).to_vec()
        };
        buf.unmap();
        Ok(rows)
    }

    /// Runs every step of a walk, `group_size` steps per submit, reading metrics back one group
    /// behind the GPU. `on_group` sees the running totals and steps done.
    fn run_walk(
        &self,
        walk: &Walk,
        train: bool,
        steps: std::ops::Range<usize>,
        on_group: &mut dyn FnMut(&Totals, usize),
    ) -> Result<Totals, String> {
        let g = group_size(walk.steps);
        let mut totals = Totals::default();
        let mut pending: Option<Pending> = None;
        let mut slot = 0;
        let mut step = steps.start;
        let last = steps.end.min(walk.steps);
        while step < last {
            if train && interrupted() {
                break;
            }
            let end = (step + g).min(last);
            let mut enc = self.gpu.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                for s in step..end {
                    let sched = walk.schedule(s);
                    if train {
                        sched.record_train_step(&mut pass, walk.table.offset(s));
                    } else {
                        sched.record_eval_step(&mut pass, walk.table.offset(s));
                    }
                }
            }
            let rows = end - step;
            let bytes = (rows * METRICS_WORDS * 4) as u64;
            enc.copy_buffer_to_buffer(&walk.metrics, (step * METRICS_WORDS * 4) as u64, &self.staging[slot], 0, bytes);
            let submission = self.gpu.queue.submit([enc.finish()]);
            let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
            self.staging[slot].slice(..bytes).map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
            let current = Pending { slot, first_step: step, rows, submission, rx };
            // Read the previous group while this one runs.
            if let Some(prev) = pending.replace(current) {
                let first = prev.first_step;
                let data = self.wait(prev)?;
                totals.add_rows(first, &data);
                on_group(&totals, first + data.len() / METRICS_WORDS);
            }
            slot ^= 1;
            step = end;
        }
        if let Some(prev) = pending.take() {
            let first = prev.first_step;
            let data = self.wait(prev)?;
            totals.add_rows(first, &data);
            on_group(&totals, first + data.len() / METRICS_WORDS);
        }
        Ok(totals)
    }

    /// Trains one epoch with the given sample order.
    pub fn train_epoch(&self, order: &[u32], on_group: &mut dyn FnMut(&Totals, usize)) -> Result<Totals, String> {
        let steps = self.train_steps_per_epoch();
        self.train_steps(order, 0..steps, on_group)
    }

    /// Trains the given steps of an epoch with the given sample order (tests inspect single
    /// steps this way; `train_epoch` runs them all).
    pub fn train_steps(
        &self,
        order: &[u32],
        steps: std::ops::Range<usize>,
        on_group: &mut dyn FnMut(&Totals, usize),
    ) -> Result<Totals, String> {
        let walk = self.train.as_ref().ok_or("engine built without a training split")?;
        assert_eq!(order.len(), walk.split.len);
        self.gpu.queue.write_buffer(&walk.perm, 0, bytemuck::cast_slice(order));
        self.run_walk(walk, true, steps, on_group)
    }

    /// The full-batch training schedule (its activations, for inspection by tests).
    pub fn train_schedule(&self) -> Option<&Schedule> {
        self.train.as_ref().map(|w| &w.full)
    }

    /// Every metrics row of the last training epoch: [summed loss, correct, count, non-finite].
    pub fn train_metrics_rows(&self) -> Result<Vec<f32>, String> {
        let walk = self.train.as_ref().ok_or("engine built without a training split")?;
        self.gpu.read_words(&walk.metrics, 0, walk.steps * METRICS_WORDS)
    }

    /// Evaluates the test split: totals, and with `predictions` the predicted class of every
    /// test image (one more readback, for the per-class table at the end of a run).
    pub fn evaluate(&self, predictions: bool) -> Result<(Totals, Vec<u32>), String> {
        let totals = self.run_walk(&self.test, false, 0..self.test.steps, &mut |_, _| {})?;
        let preds =
            if predictions { self.gpu.read_words(&self.test.preds, 0, self.test.split.len)? } else { Vec::new() };
        Ok((totals, preds))
    }

    pub fn upload_weights(&self, weights: &[f32], momentum: Option<&[f32]>) {
        self.net.upload(self.gpu, weights, momentum);
    }
}

/// Per-class accuracy from predictions and labels.
pub fn per_class(preds: &[u32], labels: &[u8]) -> Vec<(usize, usize)> {
    let mut c = vec![(0usize, 0usize); CLASSES];
    for (&p, &l) in preds.iter().zip(labels) {
        c[l as usize].1 += 1;
        if p == l as u32 {
            c[l as usize].0 += 1;
        }
    }
    c
}

pub fn print_per_class(ds: &Dataset, preds: &[u32]) {
    for (i, (hit, total)) in per_class(preds, &ds.test.labels).iter().enumerate() {
        let name = ds.class_names.get(i).map(String::as_str).unwrap_or("?");
        if *total == 0 {
            println!("Accuracy for class: {name:<11} has no test images");
        } else {
            println!("Accuracy for class: {name:<11} is {:.1} %", 100.0 * *hit as f64 / *total as f64);
        }
    }
}

/// One epoch's numbers, as printed and as written to `--metrics`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub train_loss: f64,
    pub test_loss: f64,
    pub test_accuracy: f64,
    pub images_per_sec: f64,
    pub seconds: f64,
}

fn checkpoint_metadata(cfg: &TrainConfig, ds: &Dataset, epoch: usize) -> HashMap<String, String> {
    HashMap::from([
        ("format".to_string(), "gpu-lenet".to_string()),
        ("epoch".to_string(), epoch.to_string()),
        ("dataset".to_string(), ds.name.clone()),
        ("lr".to_string(), cfg.lr.to_string()),
        ("momentum".to_string(), cfg.momentum.to_string()),
        ("batch_size".to_string(), cfg.batch_size.to_string()),
        ("seed".to_string(), cfg.seed.to_string()),
        ("shuffle".to_string(), cfg.shuffle.to_string()),
    ])
}

/// Where training stands, as `last.safetensors` records it.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// Whole epochs done.
    pub epochs_done: usize,
    /// Steps done of epoch `epochs_done + 1` (an interrupt mid-epoch), else 0.
    pub step: usize,
    /// The shuffle generator's state before drawing epoch `epochs_done + 1`'s order.
    pub shuffle_rng: u64,
    pub best_test_accuracy: f64,
}

/// The hyperparameters a resume must keep, as (metadata key, flag, value).
fn hyperparameters(cfg: &TrainConfig, ds: &Dataset) -> Vec<(&'static str, &'static str, String)> {
    vec![
        ("lr", "--lr", cfg.lr.to_string()),
        ("momentum", "--momentum", cfg.momentum.to_string()),
        ("batch_size", "--batch-size", cfg.batch_size.to_string()),
        ("seed", "--seed", cfg.seed.to_string()),
        ("shuffle", "--no-shuffle", cfg.shuffle.to_string()),
        ("dataset", "--dataset", ds.name.clone()),
    ]
}

fn write_resumable(dir: &std::path::Path, engine: &Engine, cfg: &TrainConfig, p: &Progress) -> Result<(), String> {
    let ds = &engine.dataset;
    let mut meta = checkpoint_metadata(cfg, ds, p.epochs_done);
    meta.insert("step".into(), p.step.to_string());
    meta.insert("shuffle_rng".into(), p.shuffle_rng.to_string());
    meta.insert("best_test_accuracy".into(), p.best_test_accuracy.to_string());
    let w = engine.net.download_weights(engine.gpu)?;
    let v = engine.net.download_velocity(engine.gpu)?;
    checkpoint::save(&dir.join("last.safetensors"), &engine.net.arena, &w, Some(&v), meta)
}

/// Parses a resumable checkpoint's metadata (`name` is the file, for errors): the progress
/// fields, and the presence of every hyperparameter a resume compares.
pub fn progress_from_metadata(name: &str, meta: &HashMap<String, String>) -> Result<Progress, String> {
    let get = |k: &str| {
        meta.get(k)
            .ok_or_else(|| format!("{name}: metadata field {k} is missing; not a resumable gpu-lenet checkpoint"))
    };
    let num = |k: &str| -> Result<u64, String> {
        get(k)?.trim().parse::<u64>().map_err(|_| format!("{name}: metadata field {k} is not a whole number"))
    };
    for k in ["lr", "momentum", "batch_size", "seed", "shuffle", "dataset"] {
        get(k)?;
    }
    let best = get("best_test_accuracy")?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("{name}: metadata field best_test_accuracy is not a number"))?;
    let epochs_done =
        usize::try_from(num("epoch")?).map_err(|_| format!("{name}: metadata field epoch is too large"))?;
    let step = usize::try_from(num("step")?).map_err(|_| format!("{name}: metadata field step is too large"))?;
    Ok(Progress { epochs_done, step, shuffle_rng: num("shuffle_rng")?, best_test_accuracy: best })
}

/// Loads `DIR/last.safetensors` for `--resume`, checking it against the flags.
fn load_resumable(
    dir: &std::path::Path,
    cfg: &TrainConfig,
    ds: &Dataset,
    align: u64,
) -> Result<(checkpoint::Loaded, Progress), String> {
    let path = dir.join("last.safetensors");
    if !path.exists() {
        return Err(format!(
            "--resume {}: no last.safetensors there (written by --checkpoint-dir after each epoch)",
            dir.display()
        ));
    }
    let l = checkpoint::load(&path, align)?;
    let name = path.display().to_string();
    if l.momentum.is_none() {
        return Err(format!(
            "{name}: holds no momentum.* tensors; not a resumable checkpoint (use --init to start from its weights)"
        ));
    }
    let progress = progress_from_metadata(&name, &l.metadata)?;
    let mut differ = Vec::new();
    for (key, flag, now) in hyperparameters(cfg, ds) {
        let then = &l.metadata[key]; // present: checked by progress_from_metadata
        if *then != now {
            differ.push(format!("{flag}: checkpoint {key}={then}, now {now}"));
        }
    }
    if !differ.is_empty() && !cfg.allow_changed_hyperparameters {
        return Err(format!(
            "--resume {}: hyperparameters differ from the checkpoint's ({}); pass the same flags, or \
                --allow-changed-hyperparameters to continue with the new ones",
            dir.display(),
            differ.join("; ")
        ));
    }
    check_channels(&path, &l, ds)?;
    Ok((l, progress))
}

/// The whole `train` command. Returns the per-epoch reports.
/// When the process started (the first call: `main` makes it first thing), for
/// `GPU_LENET_LOG_STARTUP`'s time from launch to the first training steps.
pub fn launched() -> Instant {
    static LAUNCHED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *LAUNCHED.get_or_init(Instant::now)
}

pub fn run(gpu: &Gpu, ds: Dataset, cfg: &TrainConfig) -> Result<Vec<EpochReport>, String> {
    cfg.validate()?;
    // Fail on an unwritable output before spending minutes training.
    for (flag, path) in [("--save", &cfg.save), ("--metrics", &cfg.metrics)] {
        if let Some(p) = path {
            check_writable(flag, p)?;
        }
    }
    let init = match &cfg.init {
        Some(p) => {
            let l = checkpoint::load(p, gpu.storage_alignment())?;
            check_channels(p, &l, &ds)?;
            Some(l)
        }
        None => None,
    };
    let checkpoint_dir = cfg.checkpoint_dir.clone().or_else(|| cfg.resume.clone());
    if let Some(d) = &checkpoint_dir {
        std::fs::create_dir_all(d).map_err(|e| format!("--checkpoint-dir {}: cannot create: {e}", d.display()))?;
        check_writable("--checkpoint-dir", &d.join("last.safetensors"))?;
    }
    let resumed = match &cfg.resume {
        Some(dir) => Some(load_resumable(dir, cfg, &ds, gpu.storage_alignment())?),
        None => None,
    };
    let started = Instant::now();
    let engine = Engine::new(gpu, ds, cfg.batch_size, cfg.lr, cfg.momentum, true)?;
    let ds = &engine.dataset;
    let mut progress = Progress {
        epochs_done: 0,
        step: 0,
        shuffle_rng: Rng::for_purpose(cfg.seed, "shuffle").state,
        best_test_accuracy: -1.0,
    };
    match (&resumed, &init) {
        (Some((l, p)), _) => {
            engine.upload_weights(&l.weights, l.momentum.as_deref());
            progress = p.clone();
            if progress.epochs_done >= cfg.epochs {
                return Err(format!(
                    "--resume: the checkpoint has already trained {} epoch(s); pass --epochs larger than that to \
                        train more",
                    progress.epochs_done
                ));
            }
            println!(
                "Resuming from {} after epoch {}{}",
                cfg.resume.as_ref().map(|d| d.join("last.safetensors").display().to_string()).unwrap_or_default(),
                progress.epochs_done,
                if progress.step > 0 {
                    format!(" and {} step(s) of epoch {}", progress.step, progress.epochs_done + 1)
                } else {
                    String::new()
                }
            );
        }
        (None, Some(l)) => engine.upload_weights(&l.weights, None),
        (None, None) => engine.upload_weights(&init_weights(&engine.net, cfg.seed), None),
    }
    println!(
        "Training LeNet-5 on {} ({} training / {} test images, {}) on {}: {} epochs, batch {}, lr {}, momentum {}, \
            {} dispatches per step, {} submits per epoch",
        ds.name,
        ds.train.len(),
        ds.test.len(),
        ds.source,
        gpu.describe(),
        cfg.epochs,
        cfg.batch_size,
        cfg.lr,
        cfg.momentum,
        engine.dispatches_per_step(),
        engine.submits_per_epoch()
    );
    let n = ds.train.len();
    let steps = engine.train_steps_per_epoch();
    let show = cfg.progress && std::io::stdout().is_terminal();
    let mut reports = Vec::new();
    let mut first_step_logged = false;
    // Test hook for the GPU-fault path: destroy the device after this many epochs.
    let destroy_after: Option<usize> =
        std::env::var("GPU_LENET_TEST_LOSE_DEVICE_AFTER_EPOCH").ok().and_then(|v| v.parse().ok());
    for epoch in progress.epochs_done + 1..=cfg.epochs {
        if destroy_after.is_some_and(|n| epoch == n + 1) {
            gpu.device.destroy();
        }
        // The order of this epoch comes from the generator's state before it, which is what a
        // checkpoint records, so a resumed run draws the same order.
        let mut shuffle_rng = Rng { state: progress.shuffle_rng };
        let order: Vec<u32> = if cfg.shuffle { shuffle_rng.permutation(n) } else { (0..n as u32).collect() };
        let first_step = std::mem::take(&mut progress.step);
        let bar = if show {
            let b = indicatif::ProgressBar::new(steps as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template("Epoch {prefix} [{bar:30}] {pos}/{len} steps {msg} eta {eta}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            b.set_prefix(epoch.to_string());
            b
        } else {
            indicatif::ProgressBar::hidden()
        };
        let t0 = Instant::now();
        // A GPU fault (device lost, out of memory) ends the run; completed epochs' checkpoints
        // were written atomically before, so they are intact.
        let saved_epochs = progress.epochs_done;
        let intact = |e: String| match &checkpoint_dir {
            Some(d) if saved_epochs > 0 => {
                format!(
                    "{e}; the checkpoint of epoch {saved_epochs} ({}) is intact",
                    d.join("last.safetensors").display()
                )
            }
            _ => e,
        };
        let totals = engine
            .train_steps(&order, first_step..steps, &mut |t, done| {
                if !first_step_logged {
                    first_step_logged = true;
                    if std::env::var_os("GPU_LENET_LOG_STARTUP").is_some() {
                        eprintln!("first steps done {:.2} s after launch", launched().elapsed().as_secs_f64());
                    }
                }
                bar.set_position(done as u64);
                bar.set_message(format!("loss {:.4}", t.mean_loss()));
            })
            .map_err(intact)?;
        let train_secs = t0.elapsed().as_secs_f64();
        bar.finish_and_clear();
        if let Some(s) = totals.first_non_finite {
            let kept = match (&cfg.save, &checkpoint_dir) {
                (None, None) => "",
                _ => "; the last checkpoint written (if any) was kept",
            };
            return Err(format!(
                "training diverged: the loss became non-finite at epoch {epoch}, step {} of {steps}; try a lower \
                    --lr (now {}){kept}",
                s + 1,
                cfg.lr
            ));
        }
        let done = first_step + totals.steps;
        if done < steps {
            // Interrupted: the GPU work submitted so far has finished.
            progress.step = done;
            let hint = match &checkpoint_dir {
                Some(d) => {
                    write_resumable(d, &engine, cfg, &progress)?;
                    format!(
                        "checkpoint written; continue with: gpu-lenet train --resume {} (and the same flags)",
                        d.display()
                    )
                }
                None => "no --checkpoint-dir was given, so nothing was saved".to_string(),
            };
            return Err(format!("interrupted at epoch {epoch}, step {done} of {steps}; {hint}"));
        }
        progress.shuffle_rng = shuffle_rng.state;
        progress.epochs_done = epoch;
        let (test, preds) = engine.evaluate(epoch == cfg.epochs).map_err(intact)?;
        let report = EpochReport {
            epoch,
            train_loss: totals.mean_loss(),
            test_loss: test.mean_loss(),
            test_accuracy: test.accuracy(),
            images_per_sec: (totals.steps * cfg.batch_size).min(n) as f64 / train_secs,
            seconds: t0.elapsed().as_secs_f64(),
        };
        println!(
            "Epoch {}, Loss: {:.4}, Test loss: {:.4}, Test accuracy: {:.2}%, {:.0} images/s, {:.1} s",
            epoch,
            report.train_loss,
            report.test_loss,
            100.0 * report.test_accuracy,
            report.images_per_sec,
            report.seconds
        );
        if let Some(p) = &cfg.metrics {
            let line = serde_json::to_string(&report).map_err(|e| e.to_string())?;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| format!("--metrics {}: cannot open for appending: {e}", p.display()))?;
            writeln!(f, "{line}").map_err(|e| format!("--metrics {}: cannot write: {e}", p.display()))?;
        }
        if let Some(p) = &cfg.save {
            let w = engine.net.download_weights(gpu)?;
            checkpoint::save(p, &engine.net.arena, &w, None, checkpoint_metadata(cfg, ds, epoch))?;
        }
        if let Some(d) = &checkpoint_dir {
            if report.test_accuracy > progress.best_test_accuracy {
                progress.best_test_accuracy = report.test_accuracy;
                let w = engine.net.download_weights(gpu)?;
                let mut meta = checkpoint_metadata(cfg, ds, epoch);
                meta.insert("test_accuracy".into(), report.test_accuracy.to_string());
                checkpoint::save(&d.join("best.safetensors"), &engine.net.arena, &w, None, meta)?;
            }
            write_resumable(d, &engine, cfg, &progress)?;
        }
        reports.push(report);
        if epoch == cfg.epochs {
            println!("Finished training in {:.1} s", started.elapsed().as_secs_f64());
            print_per_class(ds, &preds);
            if let Some(p) = &cfg.save {
                println!("Saved weights to {}", p.display());
            }
        }
    }
    Ok(reports)
}

/// Checks that `path` can be created or appended to, without touching an existing file.
pub fn check_writable(flag: &str, path: &std::path::Path) -> Result<(), String> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    if path.is_dir() {
        return Err(format!("{flag} {}: is a folder, expected a file path", path.display()));
    }
    if !dir.is_dir() {
        return Err(format!("{flag} {}: folder {} does not exist", path.display(), dir.display()));
    }
    let probe = dir.join(format!(".gpu-lenet-write-test-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(format!("{flag} {}: cannot write in {}: {e}", path.display(), dir.display())),
    }
}

/// The whole `eval` command.
pub fn evaluate_checkpoint(
    gpu: &Gpu,
    ds: Dataset,
    checkpoint_path: &std::path::Path,
    batch_size: usize,
) -> Result<Totals, String> {
    let l = checkpoint::load(checkpoint_path, gpu.storage_alignment())?;
    check_channels(checkpoint_path, &l, &ds)?;
    let engine = Engine::new(gpu, ds, batch_size, 0.0, 0.0, false)?;
    engine.upload_weights(&l.weights, None);
    let (t, preds) = engine.evaluate(true)?;
    println!(
        "Test loss: {:.4}, Test accuracy: {:.2}% ({} of {} images) on {}",
        t.mean_loss(),
        100.0 * t.accuracy(),
        t.correct as u64,
        t.count as u64,
        gpu.describe()
    );
    print_per_class(&engine.dataset, &preds);
    Ok(t)
}
