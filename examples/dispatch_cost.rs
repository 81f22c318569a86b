//! What one dispatch costs on this adapter when nothing else is in its way: N trivial dispatches
//! (1 or 64 workgroups each) in one pass and one submit, wall clock per dispatch.
use gpu_lenet::gpu::{AdapterChoice, Gpu};
use gpu_lenet::kernels::{run_all, Kernel, Slot, View};
use std::time::Instant;

const SRC: &str = "@group(0) @binding(0) var<storage, read_write> o: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) { if (g.x == 0u) { o[0] += 1.0; } }
@group(0) @binding(1) var<storage, read> r: array<f32>;
@compute @workgroup_size(64) fn read_only(@builtin(global_invocation_id) g: vec3<u32>) {
    if (r[g.x] == 12345.0) { o[g.x] = 1.0; }
}";

fn main() {
    let gpu = Gpu::new(AdapterChoice::from_env().unwrap()).unwrap();
    let o = gpu.storage("o", 64);
    let r = gpu.storage("r", 64 * 64);
    let k = Kernel::new(&gpu, "trivial", SRC, "main", &[Slot::ReadWrite, Slot::Read]);
    // Each dispatch writing the same buffer (a barrier between dispatches) or, with "read_only",
    // writing nothing (no hazard, so no barrier).
    let ro = Kernel::new(&gpu, "read_only", SRC, "read_only", &[Slot::ReadWrite, Slot::Read]);
    for (kernel, groups) in [(&k, 1u32), (&k, 64), (&ro, 1), (&ro, 64)] {
        let d = kernel.bind(&gpu, &[View::whole(&o).resource(), View::whole(&r).resource()], [groups, 1, 1]);
        for n in [10usize, 100, 400] {
            let ds: Vec<_> = (0..n).map(|_| &d).collect();
            run_all(&gpu, &ds);
            gpu.wait_idle().unwrap();
            let mut best = f64::MAX;
            for _ in 0..7 {
                let t = Instant::now();
                run_all(&gpu, &ds);
                gpu.wait_idle().unwrap();
                best = best.min(t.elapsed().as_secs_f64() * 1e6);
            }
            println!(
                "{:10} {groups:3} workgroups x {n:4} dispatches: {:8.0} us in all, {:6.1} us per dispatch (best of 7)",
                kernel.name,
                best,
                best / n as f64
            );
        }
    }
    // The same without a barrier or a pipeline change between dispatches: one pipeline set, then
    // only dispatches (what lavapipe does per dispatch by itself).
    let d = ro.bind(&gpu, &[View::whole(&o).resource(), View::whole(&r).resource()], [1, 1, 1]);
    for n in [10usize, 100, 400] {
        let mut best = f64::MAX;
        for _ in 0..7 {
            let t = Instant::now();
            let mut enc = gpu.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                d.record(&mut pass, 0);
                for _ in 1..n {
                    pass.dispatch_workgroups(1, 1, 1);
                }
            }
            gpu.queue.submit([enc.finish()]);
            gpu.wait_idle().unwrap();
            best = best.min(t.elapsed().as_secs_f64() * 1e6);
        }
        println!(
            "bare dispatches x {n:4}: {:8.0} us in all, {:6.1} us per dispatch (best of 7)",
            best,
            best / n as f64
        );
    }
}
