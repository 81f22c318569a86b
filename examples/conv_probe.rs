//! Times a conv2d_forward shader variant at conv1's or conv2's shape (kernel tuning on one
//! adapter): `cargo run --release --example conv_probe -- SHADER.wgsl [conv1|conv2] [co] [quads]
//! [groups_x groups_y]`. The shader keeps conv2d_forward.wgsl's bindings; the output is checked
//! against the reference and 41 runs are timed (wall clock: q1, median, min).
//! PROBE_SHARE=1 applies the subgroup weight sharing; PROBE_ALL=1 prints every time;
//! PROBE_SLEEP=N keeps running for N seconds (to attach `perf record -p PID`).
use gpu_lenet::gpu::{AdapterChoice, Gpu};
use gpu_lenet::kernels::conv2d_forward::{reference, ConvShape, Params};
use gpu_lenet::kernels::{
    image_windows, uniform_input, uniform_windows, with_const, Kernel, Slot, View, UNIFORM_SLACK_BYTES,
};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let src = std::fs::read_to_string(&args[1]).expect("shader file");
    let layer = args.get(2).map(String::as_str).unwrap_or("conv1");
    let s = if layer == "conv1" {
        ConvShape { batch: 64, cin: 3, h: 32, w: 32, cout: 6, kh: 5, kw: 5, stride: 1, pad: 0 }
    } else {
        ConvShape { batch: 64, cin: 6, h: 14, w: 14, cout: 16, kh: 5, kw: 5, stride: 1, pad: 0 }
    };
    let co: usize = args.get(3).map(|a| a.parse().unwrap()).unwrap_or(s.cout.min(8));
    let quads: usize = args.get(4).map(|a| a.parse().unwrap()).unwrap_or(1);
    let gpu = Gpu::new(AdapterChoice::from_env().unwrap()).unwrap();
    let src =
        with_const(&with_const(&src, "WEIGHT_VEC4S", s.weight_len().div_ceil(4)), "BIAS_VEC4S", s.cout.div_ceil(4));
    let src =
        if std::env::var_os("PROBE_SHARE").is_some() { gpu_lenet::kernels::share_across_subgroup(&src) } else { src };
    let src =
        if src.contains("var<storage, read> x:") { uniform_input(&src, "x", 1, UNIFORM_SLACK_BYTES) } else { src };
    let constants = s.constants(&[("CO_TILE", co), ("PXQ", quads), ("RELU", 0)]);
    let kernel = Kernel::with_constants(
        &gpu,
        "probe",
        &src,
        "main",
        &[Slot::Uniform, Slot::Uniform, Slot::Uniform, Slot::Uniform, Slot::ReadWrite],
        &constants,
    );
    if let Err(e) = gpu.check() {
        eprintln!("{e}");
        std::process::exit(1);
    }
    let x: Vec<f32> = (0..s.input_len()).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
    let w: Vec<f32> = (0..s.weight_len() + 4).map(|i| ((i * 104729 % 997) as f32 / 997.0) - 0.5).collect();
    let b: Vec<f32> = (0..s.cout + 4).map(|i| i as f32 * 0.1).collect();
    let mut xp = x.clone();
    xp.extend(std::iter::repeat_n(0.0, UNIFORM_SLACK_BYTES as usize / 4));
    let (xb, wb, bb) = (gpu.storage_from("x", &xp), gpu.storage_from("w", &w), gpu.storage_from("b", &b));
    let yb = gpu.storage("y", s.output_len());
    let per = uniform_windows(&gpu, 4 * s.cin * s.h * s.w).unwrap();
    let xv = View::whole(&xb);
    let (wv, bv, yv) = (View::whole(&wb), View::whole(&bb), View::whole(&yb));
    let flat_grid = src.contains("p.images");
    let per_row = s.ow().div_ceil(4).div_ceil(quads);
    let mut groups = (s.oh() * per_row).div_ceil(64) as u32;
    let mut gy = s.cout.div_ceil(co) as u32;
    if let (Some(a), Some(b)) = (args.get(5), args.get(6)) {
        groups = a.parse().unwrap();
        gy = b.parse().unwrap();
    }
    let ds: Vec<_> = image_windows(&xv, s.batch, (4 * s.cin * s.h * s.w) as u64, per)
        .unwrap()
        .into_iter()
        .map(|(b0, n, win)| {
            let p = gpu.uniform("p", &Params { batch: s.batch as u32, b0: b0 as u32, images: n as u32, co_base: 0 });
            kernel.bind(
                &gpu,
                &[p.as_entire_binding(), win, wv.resource(), bv.resource(), yv.resource()],
                if flat_grid { [(n * s.oh() * per_row).div_ceil(64) as u32, gy, 1] } else { [groups, gy, n as u32] },
            )
        })
        .collect();
    let run = || gpu_lenet::kernels::run_all(&gpu, &ds.iter().collect::<Vec<_>>());
    run();
    gpu.wait_idle().unwrap();
    let got = gpu.read_f32(&yb, s.output_len());
    let want = reference(s, false, &x, &w[..s.weight_len()], &b[..s.cout]);
    let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let mut times = vec![];
    for _ in 0..41 {
        let t = Instant::now();
        run();
        gpu.wait_idle().unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    if let Ok(secs) = std::env::var("PROBE_SLEEP") {
        eprintln!("pid {}", std::process::id());
        let end = Instant::now() + std::time::Duration::from_secs(secs.parse().unwrap());
        while Instant::now() < end {
            run();
            gpu.wait_idle().unwrap();
        }
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if std::env::var_os("PROBE_ALL").is_some() {
        eprintln!("{:?}", times.iter().map(|t| (t * 100.0).round() / 100.0).collect::<Vec<_>>());
    }
    println!(
        "{layer} {} co={co} quads={quads}: q1 {:.3} ms, median {:.3} ms, min {:.3} ms, max abs error {err:.2e}",
        args[1], times[10], times[20], times[0]
    );
}
