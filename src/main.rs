//! The `gpu-lenet` command line.

use clap::{Args, Parser, Subcommand};
use gpu_lenet::data::augment::Augment;
use gpu_lenet::data::{self, DataOptions, DatasetKind};
use gpu_lenet::gpu::{self, AdapterChoice, Gpu};
use gpu_lenet::nn::Model;
use gpu_lenet::train::{self, LrSchedule, Recipe, Recorded, TrainConfig};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "gpu-lenet", version, about = "LeNet-5 trained with hand-written WGSL compute kernels on wgpu")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct AdapterArgs {
    /// GPU adapter: auto, vulkan, metal, dx12, gl, or lavapipe (a Vulkan adapter of device type CPU).
    #[arg(long, env = "GPU_LENET_ADAPTER", default_value = "auto", value_parser = parse_adapter)]
    adapter: AdapterChoice,
}

#[derive(Args, Clone)]
struct DataArgs {
    /// Data set to use [default: cifar10; with --resume or eval, the one the checkpoint records].
    #[arg(long, value_enum)]
    dataset: Option<DatasetKind>,
    /// Data folder (CIFAR-10: a cifar-10-batches-bin folder, default data/cifar-10-batches-bin;
    /// Fashion-MNIST: its IDX files, default /usr/share/datasets/fashion-mnist).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Never download CIFAR-10 when its folder is missing.
    #[arg(long)]
    no_download: bool,
}

// Parsed once per run: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Train LeNet-5 (PyTorch's CIFAR-10 tutorial network and recipe), or LeNet-5-BN, on the GPU.
    Train {
        #[command(flatten)]
        adapter: AdapterArgs,
        #[command(flatten)]
        data: DataArgs,
        /// The network [default: lenet5; with --resume or --init, the one the file holds].
        #[arg(long, value_enum)]
        model: Option<Model>,
        /// Passes over the training set [default: 10].
        #[arg(long)]
        epochs: Option<usize>,
        /// Images per step; the last partial batch is trained too [default: 64].
        #[arg(long)]
        batch_size: Option<usize>,
        /// SGD learning rate [default: 0.001].
        #[arg(long, allow_negative_numbers = true)]
        lr: Option<f64>,
        /// SGD momentum (PyTorch's rule: v = momentum*v + g; w -= lr*v) [default: 0.9].
        #[arg(long, allow_negative_numbers = true)]
        momentum: Option<f64>,
        /// Seed for initialisation, shuffling and the synthetic data set [default: 0].
        #[arg(long)]
        seed: Option<u64>,
        /// Train in file order instead of a seeded shuffle.
        #[arg(long)]
        no_shuffle: bool,
        /// Append one JSON object per epoch to this file.
        #[arg(long)]
        metrics: Option<PathBuf>,
        /// Draw the training curves (losses, test accuracy, learning rate) into this PNG after
        /// every epoch (the whole history from --metrics when given).
        #[arg(long, value_name = "FILE.png")]
        plot: Option<PathBuf>,
        /// Save the weights (safetensors, PyTorch state_dict names) after every epoch.
        #[arg(long)]
        save: Option<PathBuf>,
        /// Start from these weights (safetensors) instead of the random initialisation.
        #[arg(long)]
        init: Option<PathBuf>,
        /// After every epoch write DIR/last.safetensors (weights, momentum, progress; resumable)
        /// and DIR/best.safetensors (the best test accuracy so far), atomically.
        #[arg(long, value_name = "DIR")]
        checkpoint_dir: Option<PathBuf>,
        /// Continue from DIR/last.safetensors (written by --checkpoint-dir) up to --epochs; flags
        /// left out (data set, hyperparameters, epochs) are taken from the checkpoint.
        #[arg(long, value_name = "DIR", conflicts_with = "init")]
        resume: Option<PathBuf>,
        /// With --resume: continue even if the flags' hyperparameters differ from the checkpoint's.
        #[arg(long, requires = "resume")]
        allow_changed_hyperparameters: bool,
        /// Weight decay, as torch.optim.SGD's (g += wd * w on every parameter) [default: 0].
        #[arg(long, allow_negative_numbers = true)]
        weight_decay: Option<f32>,
        /// Nesterov momentum, as torch.optim.SGD's (w -= lr * (g + momentum * v)).
        #[arg(long)]
        nesterov: bool,
        /// Label smoothing of the cross-entropy, as nn.CrossEntropyLoss(label_smoothing=E) [default: 0].
        #[arg(long, value_name = "E", allow_negative_numbers = true)]
        label_smoothing: Option<f32>,
        /// Learning-rate schedule, each PyTorch's namesake: constant, step:S:G (StepLR), multistep:M1,M2,...:G
        /// (MultiStepLR), cosine (CosineAnnealingLR, T_max = epochs), onecycle (OneCycleLR, max_lr = --lr, per
        /// batch, cycling the momentum 0.95-0.85) [default: constant].
        #[arg(long, value_parser = LrSchedule::parse)]
        lr_schedule: Option<LrSchedule>,
        /// Training-set augmentation on the GPU: none, crop:P (RandomCrop(32, padding=P)), flip
        /// (RandomHorizontalFlip), or both: crop:4,flip [default: none].
        #[arg(long, value_parser = Augment::parse)]
        augment: Option<Augment>,
    },
    /// Classify pictures (PNG or JPEG, any size) with a checkpoint: the top classes of each.
    Predict {
        #[command(flatten)]
        adapter: AdapterArgs,
        /// The weights (safetensors); its data set decides the classes and the input.
        #[arg(long)]
        checkpoint: PathBuf,
        /// How many classes to print for each picture.
        #[arg(long, default_value_t = 3)]
        top: usize,
        /// Print the answers as JSON.
        #[arg(long)]
        json: bool,
        /// The pictures.
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<PathBuf>,
    },
    /// Write a grid of training images as the network receives them (augmented, de-normalised).
    ShowBatch {
        #[command(flatten)]
        adapter: AdapterArgs,
        #[command(flatten)]
        data: DataArgs,
        /// Training-set augmentation, as train's --augment [default: none].
        #[arg(long, value_parser = Augment::parse)]
        augment: Option<Augment>,
        /// The run's seed (shuffle, augmentation, synthetic data), as train's --seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Which epoch's first batch (1-based): the augmentation and the shuffle change per epoch.
        #[arg(long, default_value_t = 1)]
        epoch: u32,
        /// In file order instead of the seeded shuffle, as train's --no-shuffle.
        #[arg(long)]
        no_shuffle: bool,
        /// How many images.
        #[arg(long, default_value_t = 32)]
        count: usize,
        /// The PNG to write.
        #[arg(short = 'o', long = "output", value_name = "FILE.png")]
        output: PathBuf,
    },
    /// Draw the training curves of a --metrics file (its last run) into a PNG.
    Plot {
        /// The JSON lines train --metrics wrote.
        metrics: PathBuf,
        /// The PNG to write.
        #[arg(short = 'o', long = "output", value_name = "FILE.png")]
        output: PathBuf,
    },
    /// Evaluate a checkpoint on the test split: loss, accuracy, per-class accuracy.
    Eval {
        #[command(flatten)]
        adapter: AdapterArgs,
        #[command(flatten)]
        data: DataArgs,
        /// The weights (safetensors with PyTorch state_dict names).
        #[arg(long)]
        checkpoint: PathBuf,
        /// The network [default: the one the checkpoint holds].
        #[arg(long, value_enum)]
        model: Option<Model>,
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
        /// Seed of the synthetic data set [default: the checkpoint's, else 0].
        #[arg(long)]
        seed: Option<u64>,
        /// Print the results (loss, accuracy, per-class accuracy, confusion matrix) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List every GPU adapter wgpu finds.
    Adapters,
    /// Check every kernel against its CPU reference, then time it at LeNet's shapes; also the
    /// adapter's copy and GEMM ceilings and the whole training step.
    BenchKernels {
        #[command(flatten)]
        adapter: AdapterArgs,
        /// The network whose step is measured.
        #[arg(long, value_enum, default_value = "lenet5")]
        model: Model,
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
        /// Time only the kernels whose name contains this (all are still checked).
        #[arg(long)]
        kernel: Option<String>,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
}

fn parse_adapter(s: &str) -> Result<AdapterChoice, String> {
    s.parse()
}

fn open_gpu(choice: AdapterChoice) -> Result<Gpu, String> {
    Gpu::new(choice)
}

/// The data set the flags name, else the one `recorded` names, else CIFAR-10; its folder likewise.
fn data_options(d: &DataArgs, recorded: &Recorded, seed: u64) -> DataOptions {
    let kind = d.dataset.or(recorded.dataset).unwrap_or(DatasetKind::Cifar10);
    let dir = d.data.clone().or_else(|| recorded.data_for(kind));
    DataOptions { kind, dir, download: !d.no_download, seed }
}

/// First Ctrl-C or SIGTERM: let the submitted GPU work finish, checkpoint, exit with a line
/// saying how to resume. A second one exits at once.
fn install_interrupt_handler() {
    use std::sync::atomic::Ordering;
    let _ = ctrlc::set_handler(|| {
        if train::INTERRUPTED.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: exiting now");
            std::process::exit(130);
        }
        eprintln!(
            "\ninterrupt: finishing the submitted steps and writing a checkpoint (press Ctrl-C again to exit at once)"
        );
    });
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Adapters => {
            let all = gpu::enumerate_adapters();
            if all.is_empty() {
                return Err("no GPU adapter found (is a Vulkan driver installed? on Debian: apt-get install \
                    mesa-vulkan-drivers libvulkan1)"
                    .into());
            }
            for a in &all {
                println!("{}", gpu::describe_adapter(a));
            }
            Ok(())
        }
        Command::Train {
            adapter,
            data,
            model,
            epochs,
            batch_size,
            lr,
            momentum,
            seed,
            no_shuffle,
            metrics,
            plot,
            save,
            init,
            checkpoint_dir,
            resume,
            allow_changed_hyperparameters,
            weight_decay,
            nesterov,
            label_smoothing,
            lr_schedule,
            augment,
        } => {
            // With --resume, what the flags leave out comes from the checkpoint.
            let recorded = match &resume {
                Some(dir) => train::recorded_for_resume(dir)?,
                None => Recorded::default(),
            };
            let seed = seed.or(recorded.seed).unwrap_or(0);
            let data_options = data_options(&data, &recorded, seed);
            // The network: the flag, else the one the resumed or --init file holds.
            let from_file = match (&recorded.model, &init) {
                (Some(m), _) => Some(*m),
                (None, Some(p)) => Some(gpu_lenet::checkpoint::load(p, 4)?.model),
                (None, None) => None,
            };
            let cfg = TrainConfig {
                model: model.or(from_file).unwrap_or(Model::Lenet5),
                epochs: epochs.or(recorded.epochs).unwrap_or(10),
                batch_size: batch_size.or(recorded.batch_size).unwrap_or(64),
                lr: lr.or(recorded.lr).unwrap_or(0.001),
                momentum: momentum.or(recorded.momentum).unwrap_or(0.9),
                seed,
                shuffle: !no_shuffle && recorded.shuffle.unwrap_or(true),
                data: data_options.dir.clone(),
                metrics,
                plot,
                save,
                init,
                progress: true,
                checkpoint_dir,
                resume,
                allow_changed_hyperparameters,
                recipe: {
                    let r = recorded.recipe();
                    Recipe {
                        weight_decay: weight_decay.unwrap_or(r.weight_decay),
                        nesterov: nesterov || r.nesterov,
                        label_smoothing: label_smoothing.unwrap_or(r.label_smoothing),
                        lr_schedule: lr_schedule.unwrap_or(r.lr_schedule),
                        augment: augment.unwrap_or(r.augment),
                    }
                },
            };
            install_interrupt_handler();
            // Cheap checks first: no data loading or GPU start-up for a bad flag.
            cfg.validate()?;
            let gpu = open_gpu(adapter.adapter)?;
            let ds = data::load(&data_options)?;
            train::run(&gpu, ds, &cfg).map(|_| ())
        }
        Command::Eval { adapter, data, checkpoint, model, batch_size, seed, json } => {
            if batch_size == 0 {
                return Err("--batch-size: must be at least 1".into());
            }
            // Flags left out come from what the checkpoint records (before any data or GPU work).
            let recorded = train::recorded_for_eval(&checkpoint)?;
            let gpu = open_gpu(adapter.adapter)?;
            let ds = data::load(&data_options(&data, &recorded, seed.or(recorded.seed).unwrap_or(0)))?;
            let model = model.or(recorded.model).unwrap_or(Model::Lenet5);
            let label_smoothing = recorded.label_smoothing.unwrap_or(0.0);
            train::evaluate_checkpoint(&gpu, ds, model, &checkpoint, batch_size, label_smoothing, json).map(|_| ())
        }
        Command::Predict { adapter, checkpoint, top, json, images } => {
            if top == 0 {
                return Err("--top: must be at least 1".into());
            }
            let gpu = open_gpu(adapter.adapter)?;
            let answers = gpu_lenet::predict::predict(&gpu, &checkpoint, &images, top.min(10))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answers).map_err(|e| e.to_string())?);
            } else {
                for a in &answers {
                    let top: Vec<String> =
                        a.top.iter().map(|c| format!("{} {:.1}%", c.class, 100.0 * c.probability)).collect();
                    println!("{}: {}", a.file, top.join(", "));
                }
            }
            Ok(())
        }
        Command::ShowBatch { adapter, data, augment, seed, epoch, no_shuffle, count, output } => {
            use gpu_lenet::picture::{batch_grid, check_output, write_png};
            check_output(&output, "-o")?;
            if count == 0 {
                return Err("--count: must be at least 1".into());
            }
            if epoch == 0 {
                return Err("--epoch: epochs count from 1".into());
            }
            let gpu = open_gpu(adapter.adapter)?;
            let ds = data::load(&data_options(&data, &Recorded::default(), seed))?;
            let n = ds.train.len();
            if n == 0 {
                return Err(format!("{}: the training split holds no images", ds.source));
            }
            // The order train --seed gives epoch `epoch`: one permutation drawn per epoch.
            let order = train::epoch_order(seed, !no_shuffle, n, epoch as usize - 1);
            let count = count.min(n);
            let augment = augment.unwrap_or_default();
            let (x, labels) = batch_grid::prepare_on_gpu(&gpu, &ds, augment, seed, epoch - 1, &order, count)?;
            let (w, h, rgb) = batch_grid::render(&x, &labels, ds.channels, &ds.class_names, 8)?;
            write_png(&output, "-o", w, h, rgb)?;
            println!(
                "Wrote {count} training images of {} (epoch {epoch}, seed {seed}, augment {augment}) to {}",
                ds.name,
                output.display()
            );
            Ok(())
        }
        Command::Plot { metrics, output } => {
            use gpu_lenet::picture::{check_output, curves, write_png};
            check_output(&output, "-o")?;
            let points = curves::read_metrics(&metrics)?;
            let title = format!("{} ({} epochs)", metrics.display(), points.len());
            let (w, h, rgb) = curves::render(&points, &title)?;
            write_png(&output, "-o", w, h, rgb)?;
            println!("Wrote the curves of {} epoch(s) to {}", points.len(), output.display());
            Ok(())
        }
        Command::BenchKernels { adapter, model, batch_size, kernel, json } => {
            let gpu = open_gpu(adapter.adapter)?;
            let report = gpu_lenet::bench::run(&gpu, model, batch_size, kernel.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
            } else {
                gpu_lenet::bench::print(&report);
            }
            if report.kernels.iter().any(|k| !k.correct) {
                return Err("some kernels failed their check against the CPU reference (see above)".into());
            }
            Ok(())
        }
    }
}

/// Mesa's Vulkan drivers print "XDG_RUNTIME_DIR is invalid or not set" on headless machines
/// (their Wayland support looks for it). Point it at a private folder when nothing set it.
fn quiet_headless_wsi() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none() {
        let dir = std::env::temp_dir().join(format!("gpu-lenet-runtime-{}", std::process::id()));
        if std::fs::create_dir_all(&dir).is_ok() {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
            }
            std::env::set_var("XDG_RUNTIME_DIR", &dir);
            RUNTIME_DIR.with(|d| *d.borrow_mut() = Some(dir));
        }
    }
}

thread_local! {
    static RUNTIME_DIR: std::cell::RefCell<Option<PathBuf>> = const { std::cell::RefCell::new(None) };
}

/// A closed stdout (`gpu-lenet train | head -1`) ends the program quietly, as it does other
/// command-line tools: Rust ignores SIGPIPE, so every later `println!` would panic instead.
/// Files are only ever replaced by a rename, so nothing is left half-written.
fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: restoring a signal's default disposition at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    gpu_lenet::train::launched();
    default_sigpipe();
    let cli = Cli::parse();
    quiet_headless_wsi();
    let code = real_main(cli);
    RUNTIME_DIR.with(|d| {
        if let Some(dir) = d.borrow_mut().take() {
            let _ = std::fs::remove_dir(dir);
        }
    });
    code
}

fn real_main(cli: Cli) -> ExitCode {
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            if train::INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
