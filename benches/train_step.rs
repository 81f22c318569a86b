//! `cargo bench --bench train_step`: one whole training step (batch preparation, forward, loss,
//! backward, SGD; many steps per submit) after checking every kernel against its reference.

use gpu_lenet::gpu::{AdapterChoice, Gpu};

fn main() {
    let gpu = Gpu::new(AdapterChoice::from_env().expect("GPU_LENET_ADAPTER")).expect("a GPU adapter");
    println!("adapter: {}", gpu.describe());
    for batch in [64, 256] {
        // Time one kernel only (a filter must match one); the step is always timed.
        let r = gpu_lenet::bench::run(&gpu, gpu_lenet::nn::Model::Lenet5, batch, Some("conv1")).expect("benchmark");
        assert!(r.kernels.iter().all(|k| k.correct), "a kernel failed its check");
        let s = r.train_step;
        println!(
            "batch {batch:>4}: {:.3} ms per step, {:.0} images/s, {} dispatches per step",
            s.ms, s.images_per_sec, s.dispatches
        );
    }
}
