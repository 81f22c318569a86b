//! LeNet-5 on the GPU: the parameter buffers and the fixed list of dispatches of one training
//! step, built once per batch size. Reads like the network diagram:
//!
//! x ─conv1+ReLU─ a1 ─pool─ p1 ─conv2+ReLU─ a2 ─pool─ p2 (=400)
//!   ─fc1+ReLU─ a3 ─fc2+ReLU─ a4 ─fc3─ logits ─softmax-CE
//!
//! and back again, every ReLU's backward fused into the kernel that produces the grad below it.
//!
//! This module holds the pipelines and the layer shapes; buffers.rs the parameter and activation
//! buffers, schedule.rs the construction of a step's dispatches.

mod buffers;
mod schedule;

pub use buffers::{Activations, Lenet};
pub use schedule::{Schedule, Stage};

use super::{CLASSES, IMAGE};
use crate::gpu::Gpu;
use crate::kernels::bias_grad::BiasGrad;
use crate::kernels::conv2d_backward_input::{Conv2dBackwardInput, Conv2dBackwardInputPooled};
use crate::kernels::conv2d_backward_weight::{Conv2dBackwardWeight, Conv2dBackwardWeightPooled};
use crate::kernels::conv2d_forward::{Conv2dForward, ConvShape};
use crate::kernels::conv2d_relu_maxpool_forward::Conv2dReluMaxpoolForward;
use crate::kernels::gemm::Gemm;
use crate::kernels::maxpool2d_backward::Maxpool2dBackward;
use crate::kernels::maxpool2d_forward::{Maxpool2dForward, PoolShape};
use crate::kernels::sgd_momentum::SgdMomentum;
use crate::kernels::softmax_cross_entropy::SoftmaxCrossEntropy;

/// Every pipeline LeNet needs, compiled once and shared by all schedules (the convolutions are
/// specialised to their layer's shape).
pub struct LenetKernels {
    pub conv1_forward: Conv2dForward,
    pub conv2_forward: Conv2dForward,
    pub conv2_backward_input: Conv2dBackwardInput,
    pub conv1_backward_weight: Conv2dBackwardWeight,
    pub conv2_backward_weight: Conv2dBackwardWeight,
    /// conv1 with pool1 fused in, where the adapter runs that (conv1's input grad is not needed).
    pub conv1_pooled: Option<PooledConv>,
    /// conv2 with pool2 fused in, and its input grad from pool2's output grad too.
    pub conv2_pooled: Option<(PooledConv, Conv2dBackwardInputPooled)>,
    pub pool1_forward: Maxpool2dForward,
    pub pool2_forward: Maxpool2dForward,
    pub pool1_backward: Maxpool2dBackward,
    pub pool2_backward: Maxpool2dBackward,
    pub gemm: Gemm,
    pub bias_grad: BiasGrad,
    pub softmax: SoftmaxCrossEntropy,
    pub sgd: SgdMomentum,
}

impl LenetKernels {
    pub fn new(gpu: &Gpu, in_channels: usize) -> Self {
        let (c1, c2) = (conv1_shape(0, in_channels), conv2_shape(0));
        LenetKernels {
            conv1_forward: Conv2dForward::new(gpu, c1, true),
            conv2_forward: Conv2dForward::new(gpu, c2, true),
            conv2_backward_input: Conv2dBackwardInput::new(gpu, c2),
            conv1_backward_weight: Conv2dBackwardWeight::new(gpu, c1),
            pool1_forward: Maxpool2dForward::new(gpu, pool1_shape(0)),
            conv2_backward_weight: Conv2dBackwardWeight::new(gpu, c2),
            conv1_pooled: PooledConv::new(gpu, c1),
            conv2_pooled: PooledConv::new(gpu, c2).zip(Conv2dBackwardInputPooled::new(gpu, c2)),
            pool2_forward: Maxpool2dForward::new(gpu, pool2_shape(0)),
            pool1_backward: Maxpool2dBackward::new(gpu, pool1_shape(0), true),
            pool2_backward: Maxpool2dBackward::new(gpu, pool2_shape(0), true),
            gemm: Gemm::new(gpu),
            bias_grad: BiasGrad::new(gpu),
            softmax: SoftmaxCrossEntropy::new(gpu),
            sgd: SgdMomentum::new(gpu),
        }
    }
}

/// A conv + ReLU + 2x2 max-pool forward as one kernel writing the masked argmax, and the conv's
/// weight grad taken from the pool's output grad and that argmax (the pool's backward fused in),
/// so the conv's output and its grad are never stored. Where the adapter runs the fused kernels.
pub struct PooledConv {
    pub forward: Conv2dReluMaxpoolForward,
    pub backward_weight: Conv2dBackwardWeightPooled,
}

impl PooledConv {
    fn new(gpu: &Gpu, s: ConvShape) -> Option<PooledConv> {
        let backward_weight = Conv2dBackwardWeightPooled::new(gpu, s)?;
        Some(PooledConv { forward: Conv2dReluMaxpoolForward::new(gpu, s), backward_weight })
    }
}

/// The layer shapes for a batch.
pub fn conv1_shape(batch: usize, cin: usize) -> ConvShape {
    ConvShape { batch, cin, h: IMAGE, w: IMAGE, cout: 6, kh: 5, kw: 5 }
}
pub fn pool1_shape(batch: usize) -> PoolShape {
    PoolShape { planes: batch * 6, h: 28, w: 28, k: 2, stride: 2 }
}
pub fn conv2_shape(batch: usize) -> ConvShape {
    ConvShape { batch, cin: 6, h: 14, w: 14, cout: 16, kh: 5, kw: 5 }
}
pub fn pool2_shape(batch: usize) -> PoolShape {
    PoolShape { planes: batch * 16, h: 10, w: 10, k: 2, stride: 2 }
}
/// (in, out) of the three linear layers.
pub const FC: [(usize, usize); 3] = [(400, 120), (120, 84), (84, CLASSES)];
