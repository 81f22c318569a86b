//! The CPU reference the GEMM kernels are tested against (accumulating in f64).

use super::{dims, Epilogue, Product};

/// CPU reference for one product of a linear layer (x [M,K], W [N,K], dy [M,N]).
pub fn reference(
    product: Product,
    (m, n, k): (usize, usize, usize),
    epi: Epilogue,
    a: &[f32],
    b: &[f32],
    bias: &[f32],
    aux: &[f32],
) -> Vec<f32> {
    let (rows, cols, red) = dims(product, m, n, k);
    let a_at = |i: usize, r: usize| match product {
        Product::Forward => a[i * k + r],
        Product::InputGrad => a[i * n + r],
        Product::WeightGrad => a[r * n + i],
    };
    let b_at = |r: usize, j: usize| match product {
        Product::Forward => b[j * k + r],
        Product::InputGrad => b[r * k + j],
        Product::WeightGrad => b[r * k + j],
    };
    let mut c = vec![0f32; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            let mut acc = 0f64;
            for r in 0..red {
                acc += a_at(i, r) as f64 * b_at(r, j) as f64;
            }
            if epi.bias {
                acc += bias[j] as f64;
            }
            if epi.relu && acc < 0.0 {
                acc = 0.0;
            }
            if epi.mask && (aux[i * cols + j] <= 0.0 || aux[i * cols + j].is_nan()) {
                acc = 0.0;
            }
            c[i * cols + j] = acc as f32;
        }
    }
    c
}
