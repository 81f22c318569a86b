//! gemm: the three products of a linear layer (forward with fused bias/ReLU, input grad with the
//! fused ReLU-backward mask, weight grad) as one strided, register-tiled kernel.
//!
//! This module holds the products, their epilogues, the storage kernel (gemm.wgsl) and the choice
//! of variant; uniform.rs binds the uniform-window variants (gemm_uniform_a.wgsl),
//! uniform_source.rs writes their sources, reference.rs is the CPU reference.

mod reference;
mod uniform;
mod uniform_source;

pub use reference::reference;
pub use uniform::{WindowParams, MAX_WINDOWS};
pub use uniform_source::{more_windows, vec4_output};

use super::{Dispatch, Kernel, Slot, View, UNIFORM_SLACK_BYTES};
use crate::gpu::Gpu;
use uniform::WindowEpilogue;

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

/// Which GEMM kernel to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// Both operands from storage buffers (gemm.wgsl): any adapter, any size.
    Storage,
    /// A through uniform-buffer windows (gemm_uniform_a.wgsl).
    UniformA,
    /// A and B through uniform windows, where B fits (falls back to `UniformA`).
    UniformAB,
}

pub struct Gemm {
    storage: Kernel,
    /// The uniform-window kernel's sources: A a uniform window, B from storage; both windows.
    uniform_src: Option<[String; 2]>,
    /// Its pipelines, by (B a window, windows over the reduction, epilogue), each built when a
    /// bind first needs it.
    uniform_kernels: std::sync::Mutex<std::collections::HashMap<(bool, usize, WindowEpilogue), Kernel>>,
    window_bytes: u64,
    /// Windows over the reduction one dispatch may sum: MAX_WINDOWS where the adapter allows
    /// that many uniform bindings (`GPU_LENET_GEMM_WINDOWS`, 1-4, sets it, for measuring).
    max_windows: usize,
    /// Bound as the bias grad where a kernel does not write one (binding 6 is in every layout).
    no_bias_grad: wgpu::Buffer,
    default_variant: Variant,
    /// Rows of C per invocation of the storage kernel (TILE_M in gemm.wgsl).
    tile_rows: usize,
}

impl Gemm {
    pub fn new(gpu: &Gpu) -> Self {
        Self::with_sharing(gpu, super::subgroup_sharing(gpu, 8))
    }

    /// With the choice whether the 8 lanes of a uniform-A workgroup share their loads of A
    /// through subgroup shuffles (tests run both; it needs [`super::subgroup_sharing`]).
    pub fn with_sharing(gpu: &Gpu, share_a: bool) -> Self {
        Self::with_options(gpu, share_a, Self::tile_rows_for(gpu))
    }

    /// Rows of C per invocation of the storage kernel on this adapter: 4 on a CPU adapter (each
    /// B load feeds 4 rows), 1 on a GPU (4 times the lanes; LeNet's products are too small to
    /// fill a GPU otherwise). `GPU_LENET_GEMM_ROWS` (1-4) overrides it, for measuring.
    fn tile_rows_for(gpu: &Gpu) -> usize {
        super::per_adapter(gpu, "GPU_LENET_GEMM_ROWS", |r| (1..=4).contains(&r), 4, 1)
    }

    /// With the sharing choice and `tile_rows` (1-4) rows per invocation of the storage kernel.
    pub fn with_options(gpu: &Gpu, share_a: bool, tile_rows: usize) -> Self {
        assert!(!share_a || super::subgroup_sharing(gpu, 8), "this adapter cannot share loads across subgroups");
        assert!((1..=4).contains(&tile_rows), "the GEMM tile has 1 to 4 rows");
        let storage = Kernel::with_constants(
            gpu,
            "gemm",
            include_str!("../../../shaders/gemm.wgsl"),
            "main",
            &[Slot::Uniform, Slot::Read, Slot::Read, Slot::Read, Slot::Read, Slot::ReadWrite],
            &[("TILE_M", tile_rows as f64)],
        );
        let window_bytes = gpu.limits.max_uniform_buffer_binding_size.min(UNIFORM_SLACK_BYTES) / 16 * 16;
        let src = super::with_const(
            include_str!("../../../shaders/gemm_uniform_a.wgsl"),
            "A_VEC4S",
            (window_bytes / 16) as usize,
        );
        let src = if share_a { super::share_across_subgroup(&src) } else { src };
        let uniform_src = (window_bytes >= 4096).then(|| {
            let ab = super::uniform_input(&src, "b", 2, window_bytes);
            [src, ab]
        });
        let forced = std::env::var("GPU_LENET_GEMM").ok();
        if let Some(v) = forced.as_deref().filter(|v| !["storage", "uniform-a", "uniform-ab"].contains(v)) {
            eprintln!("warning: GPU_LENET_GEMM={v:?} ignored: expected storage, uniform-a or uniform-ab");
        }
        let default_variant = match (forced.as_deref(), &uniform_src) {
            (Some("storage"), _) | (_, None) => Variant::Storage,
            (Some("uniform-a"), _) => Variant::UniformA,
            (Some("uniform-ab"), _) => Variant::UniformAB,
            _ if !super::uniform_inputs_pay(gpu) => Variant::Storage,
            _ => Variant::UniformAB,
        };
        let uniform_kernels = Default::default();
        // params, A and B, then A and B again for each further window
        let bindable = (gpu.limits.max_uniform_buffers_per_shader_stage as usize).saturating_sub(3) / 2 + 1;
        let max_windows = super::env_knob("GPU_LENET_GEMM_WINDOWS", |w| (1..=MAX_WINDOWS).contains(&w))
            .unwrap_or(MAX_WINDOWS)
            .min(bindable)
            .max(1);
        let no_bias_grad = gpu.storage("gemm: no bias grad", 4);
        Gemm {
            storage,
            uniform_src,
            uniform_kernels,
            window_bytes,
            max_windows,
            no_bias_grad,
            default_variant,
            tile_rows,
        }
    }

    /// This GEMM with at most `windows` (1 to MAX_WINDOWS) windows of B in one dispatch (tests
    /// check that the shared dispatches and the dispatch-per-window ones agree).
    pub fn with_max_windows(mut self, windows: usize) -> Self {
        assert!((1..=MAX_WINDOWS).contains(&windows), "1 to {MAX_WINDOWS} windows a dispatch");
        self.max_windows = windows.min(self.max_windows);
        self
    }

    /// Binds one product for a layer with batch `m`, `n` outputs and `k` inputs, with the
    /// variant this adapter prefers. `bias` and `aux` are only read when the epilogue asks for
    /// them (pass any buffer otherwise). May take several dispatches, run in order.
    #[allow(clippy::too_many_arguments)]
    pub fn bind(
        &self,
        gpu: &Gpu,
        product: Product,
        mnk: (usize, usize, usize),
        epi: Epilogue,
        a: &View,
        b: &View,
        bias: &View,
        aux: &View,
        c: &View,
    ) -> Vec<Dispatch> {
        self.bind_variant(gpu, self.default_variant, product, mnk, epi, a, b, bias, aux, c)
    }

    /// [`Gemm::bind`] with an explicit variant (tests check both). The uniform-A variant
    /// falls back to the storage one when no window of A can be aligned for binding.
    #[allow(clippy::too_many_arguments)]
    pub fn bind_variant(
        &self,
        gpu: &Gpu,
        variant: Variant,
        product: Product,
        (m, n, k): (usize, usize, usize),
        epi: Epilogue,
        a: &View,
        b: &View,
        bias: &View,
        aux: &View,
        c: &View,
    ) -> Vec<Dispatch> {
        let (rows, cols, red) = dims(product, m, n, k);
        let (a_rs, a_cs, b_rs, b_cs) = match product {
            Product::Forward => (k, 1, 1, k),
            Product::InputGrad => (n, 1, k, 1),
            Product::WeightGrad => (1, n, k, 1),
        };
        if variant != Variant::Storage {
            let dims = (rows, cols, red);
            let strides = (a_rs, a_cs, b_rs, b_cs);
            if variant == Variant::UniformAB {
                if let Some(d) = self.bind_windows(gpu, true, product, dims, strides, epi, a, b, bias, aux, c, None) {
                    return d;
                }
            }
            if let Some(d) = self.bind_windows(gpu, false, product, dims, strides, epi, a, b, bias, aux, c, None) {
                return d;
            }
        }
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
        vec![self.storage.bind(
            gpu,
            &[params.as_entire_binding(), a.resource(), b.resource(), bias.resource(), aux.resource(), c.resource()],
            [cols.div_ceil(4).div_ceil(8) as u32, rows.div_ceil(self.tile_rows).div_ceil(8) as u32, 1],
        )]
    }

    /// The adapter's default variant.
    pub fn default_variant(&self) -> Variant {
        self.default_variant
    }

    /// The weight grad dW = dyᵀ·x of a layer with batch `m`, `n` outputs and `k` inputs (`a` = dy,
    /// `b` = x, `c` = dW) that also writes its bias grad `db` (sums of dy's columns) in the same
    /// dispatches. None where `variant` has no such kernel (the storage GEMM) or cannot bind these
    /// buffers: then bind the weight grad and a `bias_grad` dispatch instead.
    #[allow(clippy::too_many_arguments)]
    pub fn bind_weight_grad_and_bias(
        &self,
        gpu: &Gpu,
        variant: Variant,
        (m, n, k): (usize, usize, usize),
        a: &View,
        b: &View,
        c: &View,
        db: &View,
    ) -> Option<Vec<Dispatch>> {
        let dims = dims(Product::WeightGrad, m, n, k);
        let strides = (1, n, k, 1);
        let none = Epilogue::default();
        let uniform_b = match variant {
            Variant::Storage => return None,
            Variant::UniformA => false,
            Variant::UniformAB => true,
        };
        // The variant's own fallback order: B a window where it can be, else from storage.
        if uniform_b {
            if let Some(d) =
                self.bind_windows(gpu, true, Product::WeightGrad, dims, strides, none, a, b, a, a, c, Some(db))
            {
                return Some(d);
            }
        }
        self.bind_windows(gpu, false, Product::WeightGrad, dims, strides, none, a, b, a, a, c, Some(db))
    }
}
