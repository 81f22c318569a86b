//! Keeps the cores of a CPU adapter awake between dispatches.
//!
//! lavapipe hands every dispatch to its worker threads and waits for them; each hand-off is a
//! sleep and a wake-up. On a virtual machine a core with nothing to run halts, and waking it
//! costs tens of microseconds: measured 50-90 us per dispatch with lavapipe's 2 worker threads
//! against 2-15 us when the queue thread runs the work itself (`examples/dispatch_cost.rs`), about
//! 5 ms of a 35 ms training step at ~80 dispatches. One thread that spins at the lowest
//! scheduling class (SCHED_IDLE: it runs only when nothing else on that core wants to) keeps
//! the core from halting, so the hand-offs stay short: a step went from 35-40 ms to 28-32 ms
//! (`SPIN=1 PROFILE_STEPS=64 cargo run --release --example profile_step`, 2026-11-28). OpenMP
//! runtimes spin-wait between parallel regions for the same reason.
//!
//! Only for CPU adapters (the CPU is the device being used), only on Linux (where SCHED_IDLE
//! exists; the thread stops at once if it cannot get that class, so it never competes with real
//! work), and never when `GPU_LENET_KEEP_CORES_AWAKE=0` (N > 1 starts N threads; 2 measured
//! slower than 1 on the 2-core machine: step medians 37.5 vs 32.5 ms over 5 alternating runs).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The spinning threads; they stop when this is dropped.
pub struct KeepAwake {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl KeepAwake {
    /// Starts the threads for a CPU adapter: `GPU_LENET_KEEP_CORES_AWAKE=N` threads (default
    /// 1; 0 turns it off).
    pub fn for_adapter(info: &wgpu::AdapterInfo) -> Option<KeepAwake> {
        let n = std::env::var("GPU_LENET_KEEP_CORES_AWAKE").ok().and_then(|v| v.parse::<usize>().ok()).unwrap_or(1);
        if info.device_type != wgpu::DeviceType::Cpu || n == 0 || !cfg!(target_os = "linux") {
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n.min(64))
            .filter_map(|_| {
                let flag = stop.clone();
                std::thread::Builder::new()
                    .name("gpu-lenet keep-awake".into())
                    .spawn(move || {
                        if !lowest_priority() {
                            return;
                        }
                        while !flag.load(Ordering::Relaxed) {
                            std::hint::spin_loop();
                        }
                    })
                    .ok()
            })
            .collect();
        Some(KeepAwake { stop, threads })
    }
}

impl Drop for KeepAwake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Moves the calling thread to SCHED_IDLE; false if that is not possible.
#[cfg(target_os = "linux")]
fn lowest_priority() -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler on the calling thread (pid 0) with a valid parameter struct.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn lowest_priority() -> bool {
    false
}
