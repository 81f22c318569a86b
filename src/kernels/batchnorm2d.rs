//! batchnorm2d: nn.BatchNorm2d forward (training: batch statistics and the running-statistics
//! update; evaluation: the running statistics), optionally with the ReLU after it, and its
//! training backward (dgamma, dbeta and dx through the batch statistics). One workgroup per
//! channel; fixed-order sums, no atomics. Specialised per layer (channels and plane size).

use super::{Dispatch, Kernel, Slot, View};
use crate::gpu::Gpu;

/// PyTorch's defaults.
pub const EPS: f32 = 1e-5;
pub const MOMENTUM: f32 = 0.1;

/// One BatchNorm2d layer's shape: `channels` planes of `plane` = H*W values per image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BnShape {
    pub channels: usize,
    pub plane: usize,
}

impl BnShape {
    /// PyTorch refuses training statistics over a single value per channel.
    pub fn check_training_batch(&self, batch: usize) -> Result<(), String> {
        if batch * self.plane <= 1 {
            return Err(format!(
                "BatchNorm2d needs more than 1 value per channel when training, got input of size [{batch}, {}, \
                    {} values per plane]: use a batch of at least 2",
                self.channels, self.plane
            ));
        }
        Ok(())
    }
    fn constants(&self) -> Vec<(&'static str, f64)> {
        vec![("CHANNELS", self.channels as f64), ("PLANE", self.plane as f64)]
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ForwardParams {
    batch: u32,
    train: u32,
    momentum: f32,
    eps: f32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct BackwardParams {
    batch: u32,
    _pad: [u32; 3],
}

/// The forward of one layer (with or without the ReLU after it) and its backward.
pub struct BatchNorm2d {
    pub shape: BnShape,
    forward: Kernel,
    backward: Kernel,
    residual: bool,
    mask: bool,
}

/// What a BatchNorm2d kernel pair does around the normalisation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BnFusion {
    /// A ReLU after it, in the forward.
    pub relu: bool,
    /// A residual added before that ReLU (`relu(bn(x) + res)`), in the forward.
    pub residual: bool,
    /// The backward applies the ReLU's mask to dy itself (taken from y), rather than receiving
    /// dy masked.
    pub mask: bool,
}

/// The buffers a layer's forward reads and writes besides x and y.
pub struct BnState<'a> {
    pub gamma: &'a View,
    pub beta: &'a View,
    pub running_mean: &'a View,
    pub running_var: &'a View,
    /// [mean, invstd] per channel, written by the training forward, read by the backward.
    pub saved: &'a View,
}

impl BatchNorm2d {
    pub fn new(gpu: &Gpu, shape: BnShape, relu: bool) -> Self {
        Self::fused(gpu, shape, BnFusion { relu, ..Default::default() })
    }

    pub fn fused(gpu: &Gpu, shape: BnShape, f: BnFusion) -> Self {
        // Planes of a multiple of 4 values are read as vec4s.
        let entry = if shape.plane.is_multiple_of(4) { "main_vec4" } else { "main" };
        let mut fc = shape.constants();
        fc.push(("RELU", f.relu as u8 as f64));
        fc.push(("RESIDUAL", f.residual as u8 as f64));
        let name = match (f.residual, f.relu) {
            (true, true) => "batchnorm2d_add_relu_forward",
            (true, false) => "batchnorm2d_add_forward",
            (false, true) => "batchnorm2d_relu_forward",
            (false, false) => "batchnorm2d_forward",
        };
        let forward = Kernel::with_constants(
            gpu,
            name,
            include_str!("../../shaders/batchnorm2d_forward.wgsl"),
            entry,
            &[
                Slot::Uniform,
                Slot::Read,
                Slot::Read,
                Slot::Read,
                Slot::ReadWrite,
                Slot::ReadWrite,
                Slot::ReadWrite,
                Slot::ReadWrite,
                Slot::Read,
            ],
            &fc,
        );
        let mut bc = shape.constants();
        bc.push(("MASK", f.mask as u8 as f64));
        let backward = Kernel::with_constants(
            gpu,
            if f.mask { "batchnorm2d_relu_backward" } else { "batchnorm2d_backward" },
            include_str!("../../shaders/batchnorm2d_backward.wgsl"),
            entry,
            &[
                Slot::Uniform,
                Slot::Read,
                Slot::Read,
                Slot::Read,
                Slot::Read,
                Slot::ReadWrite,
                Slot::ReadWrite,
                Slot::ReadWrite,
                Slot::Read,
            ],
            &bc,
        );
        BatchNorm2d { shape, forward, backward, residual: f.residual, mask: f.mask }
    }

    /// y = BN(x) (then ReLU where built with it) for `batch` images; `train` uses and saves the
    /// batch statistics and updates the running ones, else the running statistics are used.
    pub fn bind_forward(&self, gpu: &Gpu, batch: usize, train: bool, x: &View, s: &BnState, y: &View) -> Dispatch {
        assert!(!self.residual, "a residual BatchNorm2d binds its residual: bind_forward_residual");
        self.bind_forward_residual(gpu, batch, train, x, x, s, y)
    }

    /// y = BN(x) + res (then ReLU) where built with a residual (`res` is not read otherwise).
    #[allow(clippy::too_many_arguments)]
    pub fn bind_forward_residual(
        &self,
        gpu: &Gpu,
        batch: usize,
        train: bool,
        x: &View,
        res: &View,
        s: &BnState,
        y: &View,
    ) -> Dispatch {
        let params = gpu.uniform(
            "batchnorm2d_forward params",
            &ForwardParams { batch: batch as u32, train: train as u32, momentum: MOMENTUM, eps: EPS },
        );
        self.forward.bind(
            gpu,
            &[
                params.as_entire_binding(),
                x.resource(),
                s.gamma.resource(),
                s.beta.resource(),
                s.running_mean.resource(),
                s.running_var.resource(),
                s.saved.resource(),
                y.resource(),
                res.resource(),
            ],
            [self.shape.channels as u32, 1, 1],
        )
    }

    /// dgamma, dbeta and dx from dy (already masked by a ReLU after the layer) and the training
    /// forward's saved statistics.
    #[allow(clippy::too_many_arguments)]
    pub fn bind_backward(
        &self,
        gpu: &Gpu,
        batch: usize,
        x: &View,
        dy: &View,
        gamma: &View,
        saved: &View,
        dgamma: &View,
        dbeta: &View,
        dx: &View,
    ) -> Dispatch {
        assert!(!self.mask, "a masking BatchNorm2d backward binds its ReLU's output: bind_backward_masked");
        self.bind_backward_masked(gpu, batch, x, dy, dy, gamma, saved, dgamma, dbeta, dx)
    }

    /// As [`BatchNorm2d::bind_backward`], dy masked by `y > 0` where built with the mask.
    #[allow(clippy::too_many_arguments)]
    pub fn bind_backward_masked(
        &self,
        gpu: &Gpu,
        batch: usize,
        x: &View,
        dy: &View,
        y: &View,
        gamma: &View,
        saved: &View,
        dgamma: &View,
        dbeta: &View,
        dx: &View,
    ) -> Dispatch {
        let params = gpu.uniform("batchnorm2d_backward params", &BackwardParams { batch: batch as u32, _pad: [0; 3] });
        self.backward.bind(
            gpu,
            &[
                params.as_entire_binding(),
                x.resource(),
                dy.resource(),
                gamma.resource(),
                saved.resource(),
                dgamma.resource(),
                dbeta.resource(),
                dx.resource(),
                y.resource(),
            ],
            [self.shape.channels as u32, 1, 1],
        )
    }
}

/// The values of channel `c` of x [N, C, plane], in the kernels' order.
fn channel(s: BnShape, batch: usize, c: usize) -> impl Iterator<Item = usize> {
    (0..batch).flat_map(move |n| (0..s.plane).map(move |q| (n * s.channels + c) * s.plane + q))
}

/// The training forward's outputs, as the CPU reference computes them (f64 sums).
pub struct ForwardRef {
    pub y: Vec<f32>,
    /// Batch mean and biased variance per channel.
    pub mean: Vec<f64>,
    pub var: Vec<f64>,
    /// The running statistics after the update.
    pub running_mean: Vec<f32>,
    pub running_var: Vec<f32>,
}

/// CPU reference of the training forward (then ReLU where `relu`), with the running update.
#[allow(clippy::too_many_arguments)]
pub fn reference_forward_train(
    s: BnShape,
    batch: usize,
    relu: bool,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
) -> ForwardRef {
    let n = (batch * s.plane) as f64;
    let mut r = ForwardRef {
        y: vec![0f32; x.len()],
        mean: vec![0.0; s.channels],
        var: vec![0.0; s.channels],
        running_mean: running_mean.to_vec(),
        running_var: running_var.to_vec(),
    };
    for c in 0..s.channels {
        let mean = channel(s, batch, c).map(|i| x[i] as f64).sum::<f64>() / n;
        let var = channel(s, batch, c).map(|i| (x[i] as f64 - mean).powi(2)).sum::<f64>() / n;
        let invstd = 1.0 / (var + EPS as f64).sqrt();
        for i in channel(s, batch, c) {
            let v = (x[i] as f64 - mean) * invstd * gamma[c] as f64 + beta[c] as f64;
            r.y[i] = if relu { v.max(0.0) } else { v } as f32;
        }
        let m = MOMENTUM as f64;
        r.running_mean[c] = ((1.0 - m) * running_mean[c] as f64 + m * mean) as f32;
        r.running_var[c] = ((1.0 - m) * running_var[c] as f64 + m * var * n / (n - 1.0)) as f32;
        r.mean[c] = mean;
        r.var[c] = var;
    }
    r
}

/// CPU reference of the evaluation forward: the running statistics (then ReLU where `relu`).
#[allow(clippy::too_many_arguments)]
pub fn reference_forward_eval(
    s: BnShape,
    batch: usize,
    relu: bool,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    for c in 0..s.channels {
        let invstd = 1.0 / (running_var[c] as f64 + EPS as f64).sqrt();
        for i in channel(s, batch, c) {
            let v = (x[i] as f64 - running_mean[c] as f64) * invstd * gamma[c] as f64 + beta[c] as f64;
            y[i] = if relu { v.max(0.0) } else { v } as f32;
        }
    }
    y
}

/// CPU reference of the training backward: (dx, dgamma, dbeta) for dy at the layer's output
/// (before any ReLU's mask: apply it to dy first). Computes the batch statistics from x itself.
pub fn reference_backward(
    s: BnShape,
    batch: usize,
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let n = (batch * s.plane) as f64;
    let (mut dx, mut dgamma, mut dbeta) = (vec![0f32; x.len()], vec![0f32; s.channels], vec![0f32; s.channels]);
    for c in 0..s.channels {
        let mean = channel(s, batch, c).map(|i| x[i] as f64).sum::<f64>() / n;
        let var = channel(s, batch, c).map(|i| (x[i] as f64 - mean).powi(2)).sum::<f64>() / n;
        let invstd = 1.0 / (var + EPS as f64).sqrt();
        let x_hat = |i: usize| (x[i] as f64 - mean) * invstd;
        let db: f64 = channel(s, batch, c).map(|i| dy[i] as f64).sum();
        let dg: f64 = channel(s, batch, c).map(|i| dy[i] as f64 * x_hat(i)).sum();
        let k = gamma[c] as f64 * invstd;
        for i in channel(s, batch, c) {
            dx[i] = (k * (dy[i] as f64 - db / n - x_hat(i) * dg / n)) as f32;
        }
        dgamma[c] = dg as f32;
        dbeta[c] = db as f32;
    }
    (dx, dgamma, dbeta)
}
