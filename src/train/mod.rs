//! Training: the epoch loop of the `train` command. Everything stays resident on the GPU (see
//! `engine`), checkpoints and resume live in `resume`, evaluation and what is printed in `report`.

mod confusion;
mod engine;
pub mod lr_schedule;
mod report;
mod resume;

pub use confusion::Confusion;
pub use engine::{check_batch_size, group_size, max_batch_size, Engine, Setup, Totals};
pub use lr_schedule::LrSchedule;
pub use report::{evaluate_checkpoint, per_class, print_per_class, EpochReport, Evaluation};
pub use resume::{progress_from_metadata, recorded_for_eval, recorded_for_resume, shell_word, Progress, Recorded};

use crate::checkpoint;
use crate::data::augment::Augment;
use crate::data::Dataset;
use crate::gpu::Gpu;
use crate::kernels::sgd_momentum::SgdOptions;
use crate::model::{Net, CLASSES};
use crate::nn::{Init, Model, ParamKind, StepRule};
use crate::rng::Rng;
use resume::{check_channels, check_model, checkpoint_metadata, load_resumable, save_checkpoint, write_resumable};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

/// Hyperparameters and run options.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// The network trained.
    pub model: Model,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub momentum: f64,
    pub seed: u64,
    pub shuffle: bool,
    /// The `--data` folder, if one was given: recorded in checkpoints so that `--resume` and
    /// `eval` find the same data without the flag.
    pub data: Option<PathBuf>,
    pub metrics: Option<PathBuf>,
    /// Redraw the training curves into this PNG after every epoch.
    pub plot: Option<PathBuf>,
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
    /// Weight decay, Nesterov, label smoothing, the lr schedule and the augmentation.
    pub recipe: Recipe,
}

/// The training recipe beyond the tutorial's: each field means what PyTorch's namesake does.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recipe {
    pub weight_decay: f32,
    pub nesterov: bool,
    pub label_smoothing: f32,
    pub lr_schedule: LrSchedule,
    pub augment: Augment,
}

impl Recipe {
    pub fn rule(&self) -> StepRule {
        StepRule {
            label_smoothing: self.label_smoothing,
            sgd: SgdOptions { weight_decay: self.weight_decay, nesterov: self.nesterov },
        }
    }

    /// The recipe's options as (metadata key, flag, value): recorded in checkpoints and metrics,
    /// and kept by a resume.
    pub fn fields(&self) -> Vec<(&'static str, &'static str, String)> {
        vec![
            ("weight_decay", "--weight-decay", self.weight_decay.to_string()),
            ("nesterov", "--nesterov", self.nesterov.to_string()),
            ("label_smoothing", "--label-smoothing", self.label_smoothing.to_string()),
            ("lr_schedule", "--lr-schedule", self.lr_schedule.to_string()),
            ("augment", "--augment", self.augment.to_string()),
        ]
    }
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
        let r = &self.recipe;
        if !(r.weight_decay.is_finite() && r.weight_decay >= 0.0) {
            return Err(format!("--weight-decay {}: expected a finite value of at least 0", r.weight_decay));
        }
        if !(r.label_smoothing.is_finite() && (0.0..=1.0).contains(&r.label_smoothing)) {
            return Err(format!("--label-smoothing {}: expected a value in [0, 1]", r.label_smoothing));
        }
        if r.nesterov && self.momentum == 0.0 && !r.lr_schedule.cycles_momentum() {
            return Err("--nesterov: needs a momentum above 0 (as torch.optim.SGD requires)".into());
        }
        if let LrSchedule::MultiStep { milestones, .. } = &r.lr_schedule {
            if milestones.iter().any(|&m| m == 0 || m >= self.epochs) {
                return Err(format!(
                    "--lr-schedule {}: milestones must lie in 1..{} (epochs after which the rate drops)",
                    r.lr_schedule, self.epochs
                ));
            }
        }
        if let Some(p) = &self.plot {
            crate::picture::check_output(p, "--plot")?;
        }
        Ok(())
    }
}

/// PyTorch's default initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for Conv2d and Linear
/// weights and biases (N(0, 2/fan_in) for the weights of a network that asks for Kaiming's),
/// drawn in state_dict order from the seed; BatchNorm's gamma 1, beta 0.
pub fn init_weights(net: &Net, seed: u64) -> Vec<f32> {
    let mut r = Rng::for_purpose(seed, "init");
    let mut w = vec![0f32; net.arena.words];
    for p in net.network.params().into_iter().filter(|p| p.kind == ParamKind::Trainable) {
        let v = net.arena.slice_mut(&mut w, &p.name);
        match p.init {
            Init::Uniform { fan_in } => {
                let bound = 1.0 / (fan_in as f32).sqrt();
                v.iter_mut().for_each(|x| *x = r.uniform(-bound, bound));
            }
            Init::KaimingNormal { fan_in } => {
                let std = (2.0 / fan_in as f64).sqrt();
                v.iter_mut().for_each(|x| *x = (std * r.normal()) as f32);
            }
            Init::Constant(c) => v.fill(c),
        }
    }
    w
}

/// BatchNorm's initial running statistics (mean 0, variance 1), in the state arena's layout.
pub fn init_state(net: &Net) -> Vec<f32> {
    let mut s = vec![0f32; net.state_arena.words];
    for p in net.network.params().into_iter().filter(|p| p.kind == ParamKind::RunningStat) {
        if let Init::Constant(c) = p.init {
            net.state_arena.slice_mut(&mut s, &p.name).fill(c);
        }
    }
    s
}

/// Set by the first Ctrl-C or SIGTERM (see `main`): training stops submitting steps, finishes
/// what the GPU has, writes a checkpoint and exits.
pub static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
}

/// When the process started (the first call: `main` makes it first thing), for
/// `GPU_LENET_LOG_STARTUP`'s time from launch to the first training steps.
pub fn launched() -> Instant {
    static LAUNCHED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *LAUNCHED.get_or_init(Instant::now)
}

/// The whole `train` command. Returns the per-epoch reports.
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
            check_model(p, &l, cfg.model)?;
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
    let setup = Setup {
        lr: cfg.lr as f32,
        momentum: cfg.momentum as f32,
        rule: cfg.recipe.rule(),
        augment: cfg.recipe.augment,
        seed: cfg.seed,
    };
    let engine = Engine::new(gpu, ds, cfg.model, cfg.batch_size, &setup, true)?;
    let ds = &engine.dataset;
    let mut progress = Progress {
        epochs_done: 0,
        step: 0,
        shuffle_rng: shuffle_generator(cfg.seed).state,
        best_test_accuracy: -1.0,
        batches_tracked: 0,
    };
    match (&resumed, &init) {
        (Some((l, p)), _) => {
            engine.upload_weights(&l.weights, l.momentum.as_deref());
            engine.net.upload_state(gpu, &l.state);
            progress = Progress { batches_tracked: l.batches_tracked, ..p.clone() };
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
        (None, Some(l)) => {
            engine.upload_weights(&l.weights, None);
            engine.net.upload_state(gpu, &l.state);
            progress.batches_tracked = l.batches_tracked;
        }
        (None, None) => engine.upload_weights(&init_weights(&engine.net, cfg.seed), None),
    }
    let recipe: String = cfg
        .recipe
        .fields()
        .into_iter()
        .zip(Recipe::default().fields())
        .filter(|(f, default)| f.2 != default.2)
        .map(|(f, _)| format!(", {} {}", f.1.trim_start_matches("--"), f.2))
        .collect();
    println!(
        "Training {} on {} ({} training / {} test images, {}) on {}: {} epochs, batch {}, lr {}, momentum {}{recipe}, \
            {} dispatches per step, {} submits per epoch",
        cfg.model.title(),
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
        let order = draw_order(&mut shuffle_rng, cfg.shuffle, n);
        let first_step = std::mem::take(&mut progress.step);
        let rates = cfg.recipe.lr_schedule.epoch_rates(cfg.lr, cfg.momentum, cfg.epochs, steps, epoch - 1);
        engine.set_epoch(epoch - 1, &rates)?;
        let bar = report::epoch_bar(show, epoch, steps);
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
                    hold_for_an_interrupt();
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
        progress.batches_tracked += totals.steps as u64;
        if done < steps {
            // Interrupted: the GPU work submitted so far has finished.
            progress.step = done;
            let saved = save_at_interrupt(&engine, cfg, checkpoint_dir.as_deref(), &progress)?;
            return Err(format!("interrupted at epoch {epoch}, step {done} of {steps}; {saved}"));
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
            lr: rates.last().map(|r| report::decimal(r.0)).unwrap_or(cfg.lr),
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
            report::append_metrics(p, &report, cfg)?;
        }
        if let Some(p) = &cfg.save {
            save_checkpoint(p, &engine, false, progress.batches_tracked, checkpoint_metadata(cfg, ds, epoch))?;
        }
        if let Some(d) = &checkpoint_dir {
            if report.test_accuracy > progress.best_test_accuracy {
                progress.best_test_accuracy = report.test_accuracy;
                let mut meta = checkpoint_metadata(cfg, ds, epoch);
                meta.insert("test_accuracy".into(), report.test_accuracy.to_string());
                save_checkpoint(&d.join("best.safetensors"), &engine, false, progress.batches_tracked, meta)?;
            }
            write_resumable(d, &engine, cfg, &progress)?;
        }
        reports.push(report);
        if let Some(p) = &cfg.plot {
            plot_run(p, cfg, &ds.name, &reports)?;
        }
        if epoch == cfg.epochs {
            println!("Finished training in {:.1} s", started.elapsed().as_secs_f64());
            print_per_class(ds, &preds);
            print!("{}", Confusion::new(CLASSES, &preds, &ds.test.labels).render(&ds.class_names));
            if let Some(p) = &cfg.save {
                println!("Saved weights to {}", p.display());
            }
        }
    }
    Ok(reports)
}

/// The order `train --seed seed` walks the training set in epoch `epoch` (0-based): the shuffle
/// generator draws one permutation per epoch.
pub fn epoch_order(seed: u64, shuffle: bool, n: usize, epoch: usize) -> Vec<u32> {
    let mut rng = shuffle_generator(seed);
    let mut order = draw_order(&mut rng, shuffle, n);
    for _ in 0..epoch {
        order = draw_order(&mut rng, shuffle, n);
    }
    order
}

/// The shuffle generator of a run with `seed`, before its first epoch.
fn shuffle_generator(seed: u64) -> Rng {
    Rng::for_purpose(seed, "shuffle")
}

/// One epoch's order: a permutation drawn from `rng` (which advances), or file order.
fn draw_order(rng: &mut Rng, shuffle: bool, n: usize) -> Vec<u32> {
    if shuffle {
        rng.permutation(n)
    } else {
        (0..n as u32).collect()
    }
}

/// `--plot`: the curves of the whole run, from `--metrics` when it is written (a resumed run's
/// earlier epochs included), else from this run's epochs.
fn plot_run(path: &std::path::Path, cfg: &TrainConfig, dataset: &str, reports: &[EpochReport]) -> Result<(), String> {
    use crate::picture::{curves, write_png};
    let points = match &cfg.metrics {
        Some(m) => curves::read_metrics(m)?,
        None => reports.iter().map(curves::Point::from).collect(),
    };
    let (w, h, rgb) = curves::render(&points, &format!("{} on {dataset}", cfg.model.title()))?;
    write_png(path, "--plot", w, h, rgb)
}

/// What an interrupt writes: `last.safetensors` with `--checkpoint-dir` (or `--resume`), the
/// weights to `--save`; returns the sentence that says what went where.
fn save_at_interrupt(
    engine: &Engine,
    cfg: &TrainConfig,
    checkpoint_dir: Option<&std::path::Path>,
    progress: &Progress,
) -> Result<String, String> {
    let mut wrote = Vec::new();
    if let Some(d) = checkpoint_dir {
        write_resumable(d, engine, cfg, progress)?;
        wrote.push(format!(
            "wrote {} (weights, momentum and progress; continue with: {})",
            d.join("last.safetensors").display(),
            resume::resume_command(d, cfg)
        ));
    }
    if let Some(p) = &cfg.save {
        let mut meta = checkpoint_metadata(cfg, &engine.dataset, progress.epochs_done);
        meta.insert("step".into(), progress.step.to_string());
        save_checkpoint(p, engine, false, progress.batches_tracked, meta)?;
        wrote.push(format!(
            "wrote the weights after step {} of epoch {} to {}",
            progress.step,
            progress.epochs_done + 1,
            p.display()
        ));
    }
    if wrote.is_empty() {
        return Ok("nothing was saved (neither --checkpoint-dir nor --save was given)".into());
    }
    Ok(wrote.join("; "))
}

/// Test hook for the interrupt path: with `GPU_LENET_TEST_HOLD_FOR_INTERRUPT` set, training
/// says so on stderr once its first steps are done and waits there for Ctrl-C, so a test can
/// interrupt it mid-epoch however fast the adapter is.
fn hold_for_an_interrupt() {
    if std::env::var_os("GPU_LENET_TEST_HOLD_FOR_INTERRUPT").is_none() {
        return;
    }
    eprintln!("holding for an interrupt");
    while !interrupted() {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
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
