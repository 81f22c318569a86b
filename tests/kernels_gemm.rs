//! The linear layers' kernels against their CPU references on the adapter CI has (the GEMM's
//! three products in every variant, the weight grad with its bias grad, bias_grad): LeNet's
//! shapes, batch 1, sizes that are multiples of no tile or workgroup size, several seeds.

mod common;
mod kernel_helpers;
use common::*;
use kernel_helpers::*;

use gpu_lenet::kernels::gemm::{self, Epilogue, Gemm, Product, Variant};
use gpu_lenet::kernels::{bias_grad, bias_grad::BiasGrad, run_all, subgroup_sharing, tolerance, UNIFORM_SLACK_BYTES};

/// (M, N, K) of a linear layer: batch, outputs, inputs.
fn gemm_shapes() -> Vec<(usize, usize, usize)> {
    vec![
        (64, 120, 400), // fc1
        (64, 84, 120),  // fc2
        (64, 10, 84),   // fc3
        (1, 120, 400),  // batch 1
        (13, 84, 120),  // odd batch
        (65, 13, 7),    // nothing a multiple of the 4x4 tile or the 8x8 workgroup
        (3, 1, 1),
    ]
}

#[test]
fn gemm_matches_reference_for_all_three_products_and_both_variants() {
    let g = gpu();
    // The adapter's default, and where it shares A's loads across a subgroup, the plain kernel.
    let mut kernels = vec![(Gemm::new(g), "default")];
    if subgroup_sharing(g, 8) {
        kernels.push((Gemm::with_sharing(g, false), "unshared"));
    }
    // The storage kernel's other row tilings (1 is what GPUs run; 3 leaves partial tiles).
    for (rows, name) in [(1, "1 row a lane"), (3, "3 rows a lane")] {
        kernels.push((Gemm::with_options(g, false, rows), name));
    }
    // Windows over the reduction summed one (or two) a dispatch, the rest added into C in order.
    kernels.push((Gemm::new(g).with_max_windows(1), "1 window a dispatch"));
    kernels.push((Gemm::with_options(g, false, 4).with_max_windows(2), "2 windows a dispatch"));
    let mut shapes = gemm_shapes();
    // A tall batch: the forward's A (x) spans several 64 KiB uniform windows, and the weight
    // grad accumulates over several windows of dy.
    shapes.push((1100, 120, 400));
    for (m, n, kk) in shapes {
        for seed in SEEDS {
            let mut r = Rng(seed * 101 + m as u64);
            let x = r.vec(m * kk, -1.0, 1.0);
            let w = r.vec(n * kk, -0.3, 0.3);
            let b = r.vec(n, -0.3, 0.3);
            let dy = r.vec(m * n, -1.0, 1.0);
            let act_x = r.vec(m * kk, -1.0, 1.0); // a ReLU mask source shaped like x
            let cases = [
                (Product::Forward, Epilogue { bias: true, relu: true, mask: false }),
                (Product::Forward, Epilogue { bias: true, relu: false, mask: false }),
                (Product::Forward, Epilogue::default()),
                (Product::InputGrad, Epilogue { bias: false, relu: false, mask: true }),
                (Product::InputGrad, Epilogue::default()),
                (Product::WeightGrad, Epilogue::default()),
            ];
            for (product, epi) in cases {
                let (a, bm) = match product {
                    Product::Forward => (&x, &w),
                    Product::InputGrad => (&dy, &w),
                    Product::WeightGrad => (&dy, &x),
                };
                let (rows, cols, red) = gemm::dims(product, m, n, kk);
                let want = gemm::reference(product, (m, n, kk), epi, a, bm, &b, &act_x);
                for ((k, kname), variant) in kernels
                    .iter()
                    .flat_map(|k| [Variant::Storage, Variant::UniformA, Variant::UniformAB].map(|v| (k, v)))
                {
                    // A and B with the slack the uniform variants' last windows need.
                    let pad = |v: &Vec<f32>| {
                        let mut p = v.clone();
                        p.resize(v.len() + (UNIFORM_SLACK_BYTES / 4) as usize, 0.0);
                        p
                    };
                    let (ab, bb, biasb, auxb, cb) =
                        (upload(&pad(a)), upload(&pad(bm)), upload(&b), upload(&act_x), out(rows * cols));
                    let ds = k.bind_variant(
                        g,
                        variant,
                        product,
                        (m, n, kk),
                        epi,
                        &v(&ab),
                        &v(&bb),
                        &v(&biasb),
                        &v(&auxb),
                        &v(&cb),
                    );
                    if variant == Variant::UniformA && m == 1100 {
                        assert!(ds.len() > 1, "{product:?}: expected several uniform windows");
                    }
                    if variant == Variant::UniformAB && n * kk * 4 > 65_536 && product != Product::WeightGrad {
                        // fc1's weights do not fit one window: split over columns (forward) or
                        // the reduction (input grad); B's windows share one dispatch per window
                        // of A (x: 40 rows of 400, dy: 136 of 120) where the kernel may, else a
                        // dispatch each.
                        let a_windows = m.div_ceil(if product == Product::Forward { 40 } else { 136 });
                        if *kname == "1 window a dispatch" {
                            assert!(ds.len() > a_windows, "{kname} {product:?}: expected a dispatch per window of B");
                        } else if *kname == "default" {
                            assert_eq!(
                                ds.len(),
                                a_windows,
                                "{kname} {product:?} m={m}: expected B's windows in one dispatch"
                            );
                        }
                    }
                    run_all(g, &ds.iter().collect::<Vec<_>>());
                    let what = format!("gemm {kname} {variant:?} {product:?} {epi:?} m={m} n={n} k={kk} seed={seed}");
                    assert_close(&what, &read(&cb), &want, tolerance(red));
                }
            }
        }
    }
}

#[test]
fn gemm_weight_grad_with_its_bias_grad_matches_both_references() {
    let g = gpu();
    let mut kernels = vec![(Gemm::new(g), "default")];
    if subgroup_sharing(g, 8) {
        kernels.push((Gemm::with_sharing(g, false), "unshared"));
    }
    kernels.push((Gemm::new(g).with_max_windows(1), "1 window a dispatch"));
    kernels.push((Gemm::with_options(g, false, 4).with_max_windows(3), "3 windows a dispatch"));
    let mut shapes = gemm_shapes();
    shapes.push((1100, 120, 400)); // dy and x over many windows of the reduction
    for (m, n, kk) in shapes {
        for seed in SEEDS {
            let mut r = Rng(seed * 31 + m as u64);
            let x = r.vec(m * kk, -1.0, 1.0);
            let dy = r.vec(m * n, -1.0, 1.0);
            let want_dw = gemm::reference(Product::WeightGrad, (m, n, kk), Epilogue::default(), &dy, &x, &[], &[]);
            let want_db = bias_grad::reference(m, n, &dy);
            for ((k, kname), variant) in
                kernels.iter().flat_map(|k| [Variant::Storage, Variant::UniformA, Variant::UniformAB].map(|v| (k, v)))
            {
                // db starts non-zero: the kernel must write it, not add to it.
                let (dyb, xb, dwb, dbb) =
                    (upload_with_slack(&dy), upload_with_slack(&x), out(n * kk), upload(&vec![7.0f32; n]));
                let what = format!("gemm {kname} {variant:?} weight grad + bias grad m={m} n={n} k={kk} seed={seed}");
                let Some(ds) =
                    k.bind_weight_grad_and_bias(g, variant, (m, n, kk), &v(&dyb), &v(&xb), &v(&dwb), &v(&dbb))
                else {
                    // Only the storage GEMM has no fused kernel (and adapters without uniform windows).
                    assert!(
                        variant == Variant::Storage || k.default_variant() == Variant::Storage,
                        "{what}: not bound"
                    );
                    continue;
                };
                run_all(g, &ds.iter().collect::<Vec<_>>());
                assert_close(&format!("{what}: dW"), &read(&dwb), &want_dw, tolerance(m));
                assert_close(&format!("{what}: db"), &read(&dbb)[..n], &want_db, tolerance(m));
            }
        }
    }
}

#[test]
fn bias_grad_matches_reference() {
    let g = gpu();
    let k = BiasGrad::new(g);
    for (m, n, _) in gemm_shapes() {
        for seed in SEEDS {
            let dy = Rng(seed + 5 * m as u64).vec(m * n, -1.0, 1.0);
            let (dyb, dbb) = (upload(&dy), out(n));
            k.bind(g, m, n, &v(&dyb), &v(&dbb)).run(g);
            assert_close(
                &format!("bias_grad m={m} n={n}"),
                &read(&dbb),
                &bias_grad::reference(m, n, &dy),
                tolerance(m),
            );
        }
    }
}
