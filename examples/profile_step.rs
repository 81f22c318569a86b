//! Wall-clock time of each dispatch of one training step (quick profile). Batch as the first
//! argument (64 by default); PROFILE_CHANNELS, PROFILE_STEPS and PROFILE_STAGE below.
use gpu_lenet::gpu::{AdapterChoice, Gpu};
use gpu_lenet::kernels::{softmax_cross_entropy::METRICS_WORDS, StepTable, View};
use gpu_lenet::model::{Net, NetKernels, Schedule};
use std::time::Instant;

fn main() {
    let batch: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(64);
    let gpu = Gpu::new(AdapterChoice::from_env().unwrap()).unwrap();
    // PROFILE_CHANNELS=1: the network for one-channel images (Fashion-MNIST); 3 (CIFAR-10) by default.
    let cin: usize = std::env::var("PROFILE_CHANNELS").ok().and_then(|c| c.parse().ok()).unwrap_or(3);
    // PROFILE_MODEL=lenet5-bn: the BatchNorm network; lenet5 by default.
    let model = std::env::var("PROFILE_MODEL").unwrap_or("lenet5".into());
    let network = <gpu_lenet::nn::Model as clap::ValueEnum>::from_str(&model, false).unwrap().network(cin);
    let k = NetKernels::new(&gpu, &network, Default::default());
    let net = Net::new(&gpu, network);
    let table = StepTable::sequential(&gpu, 1, batch, 0.01, 0.9);
    let metrics = gpu.storage("m", METRICS_WORDS);
    let preds = gpu.storage("p", batch);
    let s = Schedule::new(&gpu, &k, &net, batch, &table, &View::whole(&metrics), &View::whole(&preds));
    // Every dispatch of a step, with its stage's name.
    let dispatches: Vec<_> = s
        .forward
        .iter()
        .chain(&s.backward)
        .flat_map(|st| st.dispatches.iter().map(move |d| (st.name.as_str(), d)))
        .collect();
    // PROFILE_STEPS=n: wall and CPU time (all threads) per step over n steps, 16 per submit.
    if let Ok(n) = std::env::var("PROFILE_STEPS") {
        let n: usize = n.parse().unwrap();
        let run = |steps: usize| {
            for chunk in (0..steps).collect::<Vec<_>>().chunks(16) {
                let mut enc = gpu.device.create_command_encoder(&Default::default());
                {
                    let mut pass = enc.begin_compute_pass(&Default::default());
                    for _ in chunk {
                        s.record_train_step(&mut pass, table.offset(0));
                    }
                }
                gpu.queue.submit([enc.finish()]);
            }
            gpu.wait_idle().unwrap();
        };
        run(16);
        let (t, c) = (Instant::now(), cpu());
        run(n);
        let wall = t.elapsed().as_secs_f64() * 1e3 / n as f64;
        let cpu_ms = (cpu() - c) / n as f64;
        println!(
            "{wall:.2} ms per step wall, {cpu_ms:.2} ms CPU per step ({:.0}% of 2 cores busy)",
            100.0 * cpu_ms / (2.0 * wall)
        );
        return;
    }
    // PROFILE_RECORD=n: the CPU cost of recording n steps into one pass and submitting them
    // (what the training loop does while the previous group runs), apart from running them.
    if let Ok(n) = std::env::var("PROFILE_RECORD") {
        let n: usize = n.parse().unwrap();
        for _ in 0..5 {
            let t = Instant::now();
            let mut enc = gpu.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                for _ in 0..n {
                    s.record_train_step(&mut pass, table.offset(0));
                }
            }
            let recorded = t.elapsed().as_secs_f64() * 1e3;
            let cb = enc.finish();
            let finished = t.elapsed().as_secs_f64() * 1e3;
            gpu.queue.submit([cb]);
            let submitted = t.elapsed().as_secs_f64() * 1e3;
            gpu.wait_idle().unwrap();
            let done = t.elapsed().as_secs_f64() * 1e3;
            println!(
                "{n} steps: recorded {recorded:.1} ms, finished {finished:.1} ms, submitted {submitted:.1} ms, \
                ran {done:.1} ms"
            );
        }
        return;
    }
    // PROFILE_STAGE=name PROFILE_SECONDS=n: run that stage's dispatches in a loop (for `perf`).
    if let Ok(stage) = std::env::var("PROFILE_STAGE") {
        let secs: u64 = std::env::var("PROFILE_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
        let st = s.forward.iter().chain(&s.backward).find(|st| st.name == stage).expect("no such stage");
        eprintln!("pid {}", std::process::id());
        let start = Instant::now();
        let end = start + std::time::Duration::from_secs(secs);
        let mut runs = 0;
        while Instant::now() < end {
            gpu_lenet::kernels::run_all(&gpu, &st.dispatches.iter().collect::<Vec<_>>());
            gpu.wait_idle().unwrap();
            runs += 1;
        }
        println!(
            "{stage}: {:.3} ms per run (wall clock, {runs} runs)",
            start.elapsed().as_secs_f64() * 1e3 / runs as f64
        );
        return;
    }
    // PROFILE_COMPILE=1 (with MESA_SHADER_CACHE_DISABLE=true for a cold cache): each dispatch's
    // first run, in step order, minus its second: on lavapipe, the LLVM compile of each pipeline
    // the step uses (at its first dispatch), the cold start's largest part.
    if std::env::var("PROFILE_COMPILE").is_ok() {
        let mut total = 0.0;
        for &(stage, d) in &dispatches {
            let run = || {
                let t = Instant::now();
                d.run(&gpu);
                gpu.wait_idle().unwrap();
                t.elapsed().as_secs_f64() * 1e3
            };
            let (first, second) = (run(), run());
            total += first - second;
            println!("{stage:24} {:40} first run {first:8.1} ms, then {second:6.2} ms", d.name);
        }
        println!("sum of first runs minus second: {total:.0} ms");
        return;
    }
    // PROFILE_BALANCE=1: each dispatch repeated in one pass for ~0.4 s; wall and CPU time (all threads) per
    // dispatch, and how busy the cores were: a dispatch with too few (or uneven) workgroups leaves
    // a core idle, since lavapipe starts the next dispatch only when every thread has finished.
    if std::env::var("PROFILE_BALANCE").is_ok() {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
        let (mut wall_sum, mut cpu_sum) = (0.0, 0.0);
        for &(stage, d) in &dispatches {
            let t = Instant::now();
            gpu_lenet::kernels::run_all(&gpu, &[d; 20]);
            gpu.wait_idle().unwrap();
            // Enough repetitions for ~0.4 s, the CPU clock ticking in 10 ms steps.
            let reps = ((0.4 / (t.elapsed().as_secs_f64() / 20.0)) as usize).clamp(100, 20_000);
            let (t, c) = (Instant::now(), cpu());
            gpu_lenet::kernels::run_all(&gpu, &vec![d; reps]);
            gpu.wait_idle().unwrap();
            let wall = t.elapsed().as_secs_f64() * 1e3 / reps as f64;
            let cpu_ms = (cpu() - c) / reps as f64;
            wall_sum += wall;
            cpu_sum += cpu_ms;
            println!(
                "{stage:24} {:40} {:?} {wall:8.3} ms wall {cpu_ms:8.3} ms CPU {:4.0}% busy",
                d.name,
                d.workgroups,
                100.0 * cpu_ms / (cores * wall)
            );
        }
        println!("sum: {wall_sum:.2} ms wall, {cpu_sum:.2} ms CPU, {:.0}% busy", 100.0 * cpu_sum / (cores * wall_sum));
        return;
    }
    for (stage, d) in dispatches {
        d.run(&gpu);
        gpu.wait_idle().unwrap();
        let reps = 5;
        let t = Instant::now();
        for _ in 0..reps {
            d.run(&gpu);
            gpu.wait_idle().unwrap();
        }
        println!(
            "{stage:24} {:40} {:?} {:8.3} ms",
            d.name,
            d.workgroups,
            t.elapsed().as_secs_f64() * 1e3 / reps as f64
        );
    }
}

/// CPU time of this process so far, all threads, in ms (the kernel's clock ticks 100 times a second).
fn cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) * 10.0
}
