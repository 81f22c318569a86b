//! The GPU side of a run: one data set and batch size resident on the GPU, its training and test
//! walks recorded as fixed dispatch lists, many steps per submit, and the metrics rows read back
//! asynchronously one submit behind the GPU.

use super::interrupted;
use crate::data::augment::Augment;
use crate::data::Dataset;
use crate::gpu::Gpu;
use crate::kernels::prepare_batch::{GpuSplit, PrepareBatch};
use crate::kernels::softmax_cross_entropy::METRICS_WORDS;
use crate::kernels::{StepInfo, StepTable, View};
use crate::model::{Net, NetKernels, Schedule};
use crate::nn::{Model, Network, StepRule};

/// How the engine trains, beside the network and the batch size: the rates every step starts
/// with (a schedule rewrites them per epoch), the loss and optimizer rule, and the training
/// split's augmentation keyed on `seed`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Setup {
    pub lr: f32,
    pub momentum: f32,
    pub rule: StepRule,
    pub augment: Augment,
    pub seed: u64,
}

impl Setup {
    /// The tutorial's plain SGD with momentum at a constant rate, no augmentation.
    pub fn constant(lr: f32, momentum: f32) -> Setup {
        Setup { lr, momentum, ..Default::default() }
    }
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
        k: &NetKernels,
        net: &Net,
        ds: &Dataset,
        split: &crate::data::Split,
        what: &str,
        batch: usize,
        setup: &Setup,
        augment: Augment,
    ) -> Result<Walk, String> {
        let split_gpu = GpuSplit::upload(gpu, ds, split, what)?;
        let prep = PrepareBatch::augmented(gpu, &split_gpu, augment);
        let n = split.len();
        let full_steps = n / batch;
        let tail_len = n % batch;
        let steps = full_steps + (tail_len > 0) as usize;
        let identity: Vec<u32> = (0..n as u32).collect();
        let perm = gpu.storage_from(&format!("{what} permutation"), &identity);
        let table = StepTable::sequential(gpu, steps, batch, setup.lr, setup.momentum);
        let metrics = gpu.storage(&format!("{what} metrics"), steps * METRICS_WORDS);
        let preds = gpu.storage(&format!("{what} predictions"), n);
        let (mv, pv, permv) = (View::whole(&metrics), View::whole(&preds), View::whole(&perm));
        let make = |b: usize| {
            let mut s = Schedule::new(gpu, k, net, b, &table, &mv, &pv);
            s.prepare = Some(prep.bind(
                gpu,
                &split_gpu,
                &permv,
                &table,
                b,
                setup.seed,
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
    pub net: Net,
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
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &'g Gpu,
        dataset: Dataset,
        model: Model,
        batch_size: usize,
        setup: &Setup,
        with_train: bool,
    ) -> Result<Engine<'g>, String> {
        if dataset.test.is_empty() {
            return Err(format!("{}: the test split holds no images", dataset.source));
        }
        if with_train && dataset.train.is_empty() {
            return Err(format!("{}: the training split holds no images", dataset.source));
        }
        let network = model.network(dataset.channels);
        let kernels = NetKernels::new(gpu, &network, setup.rule);
        check_batch_size(gpu, &network, &kernels, batch_size)?;
        if with_train {
            let tail = dataset.train.len() % batch_size;
            for b in [batch_size.min(dataset.train.len()), tail].into_iter().filter(|&b| b > 0) {
                network.check_training_batch(b)?;
            }
        }
        let net = Net::new(gpu, network);
        net.upload_state(gpu, &super::init_state(&net));
        let train = if with_train {
            let (split, b) = (&dataset.train, batch_size);
            Some(Walk::new(gpu, &kernels, &net, &dataset, split, "training set", b, setup, setup.augment)?)
        } else {
            None
        };
        let test =
            Walk::new(gpu, &kernels, &net, &dataset, &dataset.test, "test set", batch_size, setup, Augment::default())?;
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

    /// Sets the lr and momentum of every training step of `epoch` (0-based; the augmentation's
    /// choices are keyed on it): one table write, ordered before the epoch's submits.
    pub fn set_epoch(&self, epoch: usize, rates: &[(f32, f32)]) -> Result<(), String> {
        let walk = self.train.as_ref().ok_or("engine built without a training split")?;
        assert_eq!(rates.len(), walk.steps, "one (lr, momentum) per training step");
        let rows: Vec<StepInfo> = rates
            .iter()
            .enumerate()
            .map(|(s, &(lr, momentum))| StepInfo {
                step: s as u32,
                start: (s * self.batch_size) as u32,
                lr,
                momentum,
                epoch: epoch as u32,
                ..Default::default()
            })
            .collect();
        walk.table.write(self.gpu, &rows);
        Ok(())
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

    /// The logits of the test split's last batch, [images x classes] (`predict` builds an engine
    /// whose test split is one batch of pictures). Call after [`Engine::evaluate`].
    pub fn last_test_logits(&self) -> Result<Vec<f32>, String> {
        let last = self.test.steps - 1;
        let images = self.test.split.len - last * self.batch_size;
        self.gpu.read_words(&self.test.schedule(last).acts.logits, 0, images * crate::model::CLASSES)
    }

    pub fn upload_weights(&self, weights: &[f32], momentum: Option<&[f32]>) {
        self.net.upload(self.gpu, weights, momentum);
    }
}

/// The largest batch this adapter can run: the conv kernels put the batch on the z dimension of
/// the dispatch, and the largest per-image buffer (a layer's output, or the conv weight grads'
/// partial sums, per block of rows on a GPU) must fit one storage binding.
pub fn max_batch_size(gpu: &Gpu, network: &Network, kernels: &NetKernels) -> usize {
    let max_workgroups = gpu.limits.max_compute_workgroups_per_dimension as usize;
    let largest_output = network.layers.iter().map(|l| 4 * l.output.len()).max().unwrap_or(4);
    let per_image_bytes = largest_output.max(kernels.max_scratch_bytes_per_image()).max(1);
    let max_by_binding = gpu.limits.max_storage_buffer_binding_size as usize / per_image_bytes;
    max_workgroups.min(max_by_binding)
}

/// The one batch-size check of every command (`train`, `eval`, `bench-kernels`), before any
/// buffer is made.
pub fn check_batch_size(gpu: &Gpu, network: &Network, kernels: &NetKernels, batch_size: usize) -> Result<(), String> {
    let limit = max_batch_size(gpu, network, kernels);
    if batch_size == 0 {
        return Err("--batch-size: must be at least 1".into());
    }
    if batch_size > limit {
        return Err(format!(
            "--batch-size {batch_size}: this adapter supports at most {limit} (dispatch and binding limits)"
        ));
    }
    Ok(())
}
