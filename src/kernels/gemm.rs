//! gemm: the three products of a linear layer (forward with fused bias/ReLU, input grad with the
//! fused ReLU-backward mask, weight grad) as one strided, register-tiled kernel.

use super::{Dispatch, Kernel, Slot, View};
use crate::gpu::Gpu;

/// Which product of a linear layer y = x·Wᵀ + b (x [M,K], W [N,K], y [M,N]) to compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Product {
    /// y = x·Wᵀ (+ b) (ReLU): A = x, B = W; output [M, N].
    Forward,
    /// dx = dy·W (masked): A = dy [M,N], B = W [N,K]; output [M, K].
    InputGrad,
    /// dW = dyᵀ·x: A = dy [M,N], B = x [M,K]; output [N, K].
    WeightGrad,
}

/// Epilogue applied to each output element.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Epilogue {
    pub bias: bool,
    pub relu: bool,
    /// Zero the element where `aux` (same shape as the output) is not positive.
    pub mask: bool,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub ldc: u32,
    pub a_rs: u32,
    pub a_cs: u32,
    pub b_rs: u32,
    pub b_cs: u32,
    pub has_bias: u32,
    pub relu: u32,
    pub mask: u32,
    pub _pad: u32,
}

/// The output shape (rows, cols) and reduction length of a product, given the layer's M, N, K.
pub fn dims(product: Product, m: usize, n: usize, k: usize) -> (usize, usize, usize) {
    match product {
        Product::Forward => (m, n, k),
        Product::InputGrad => (m, k, n),
        Product::WeightGrad => (n, k, m),
    }
}

pub struct Gemm {
    kernel: Kernel,
}

impl Gemm {
    pub fn new(gpu: &Gpu) -> Self {
        let kernel = Kernel::new(
            gpu,
            "gemm",
            include_str!("../../shaders/gemm.wgsl"),
            "main",
            &[Slot::Uniform, Slot::Read, Slot::Read, Slot::Read, Slot::Read, Slot::ReadWrite],
        );
        Gemm { kernel }
    }

    /// Binds one product for a layer with batch `m`, `n` outputs and `k` inputs. `bias` and
    /// `aux` are only read when the epilogue asks for them (pass any buffer otherwise).
    #[allow(clippy::too_many_arguments)]
    pub fn bind(
        &self,
        gpu: &Gpu,
        product: Product,
        (m, n, k): (usize, usize, usize),
        epi: Epilogue,
        a: &View,
        b: &View,
        bias: &View,
        aux: &View,
        c: &View,
    ) -> Dispatch {
        let (rows, cols, red) = dims(product, m, n, k);
        let (a_rs, a_cs, b_rs, b_cs) = match product {
            Product::Forward => (k, 1, 1, k),
            Product::InputGrad => (n, 1, k, 1),
            Product::WeightGrad => (1, n, k, 1),
        };
        let p = Params {
            m: rows as u32,
            n: cols as u32,
            k: red as u32,
            ldc: cols as u32,
            a_rs: a_rs as u32,
            a_cs: a_cs as u32,
            b_rs: b_rs as u32,
            b_cs: b_cs as u32,
            has_bias: epi.bias as u32,
            relu: epi.relu as u32,
            mask: epi.mask as u32,
            _pad: 0,
        };
        let params = gpu.uniform("gemm params", &p);
        self.kernel.bind(
            gpu,
            &[params.as_entire_binding(), a.resource(), b.resource(), bias.resource(), aux.resource(), c.resource()],
            [cols.div_ceil(4).div_ceil(8) as u32, rows.div_ceil(4).div_ceil(8) as u32, 1],
        )
    }
}

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
            if epi.mask && !(aux[i * cols + j] > 0.0) {
                acc = 0.0;
            }
            c[i * cols + j] = acc as f32;
        }
    }
    c
}
