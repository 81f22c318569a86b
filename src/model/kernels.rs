//! The kernels a network needs on this adapter, specialised to each layer's shape, built once
//! and shared by every schedule of the network. Which fused kernels a layer gets is decided
//! here, per adapter (the kernels' own `new` says whether the adapter runs them).

use crate::gpu::Gpu;
use crate::kernels::batchnorm2d::{BatchNorm2d, BnShape};
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
use crate::nn::StepRule;
use crate::nn::{Layer, Network, Op};

/// A conv + ReLU + 2x2 max-pool forward as one kernel writing the masked argmax, and the conv's
/// gradients taken from the pool's output grad and that argmax (the pool's backward fused in),
/// so the conv's output and its grad are never stored. Where the adapter runs the fused kernels.
pub struct PooledConv {
    pub forward: Conv2dReluMaxpoolForward,
    pub backward_weight: Conv2dBackwardWeightPooled,
    /// None for the network's first layer (no input grad is needed there).
    pub backward_input: Option<Conv2dBackwardInputPooled>,
}

/// A convolution's kernels.
pub struct ConvKernels {
    pub forward: Conv2dForward,
    pub backward_weight: Conv2dBackwardWeight,
    pub backward_input: Option<Conv2dBackwardInput>,
    /// This conv, the ReLU and the max-pool after it as fused kernels, where they run.
    pub pooled: Option<PooledConv>,
}

/// One layer's kernels (the ReLU, Flatten and Linear layers have none of their own: the GEMM
/// serves every Linear).
pub enum LayerKernels {
    Conv(Box<ConvKernels>),
    BatchNorm(BatchNorm2d),
    Pool { forward: Maxpool2dForward, backward: Maxpool2dBackward },
    None,
}

/// Every pipeline a network needs (pipelines are created at their first bind).
pub struct NetKernels {
    pub layers: Vec<LayerKernels>,
    pub gemm: Gemm,
    pub bias_grad: BiasGrad,
    pub softmax: SoftmaxCrossEntropy,
    pub sgd: SgdMomentum,
}

/// The op of layer `i`, if there is one.
pub(crate) fn op_at(net: &Network, i: usize) -> Option<&Op> {
    net.layers.get(i).map(|l| &l.op)
}

/// A conv layer's shape for `batch` images.
pub fn conv_shape(l: &Layer, batch: usize) -> ConvShape {
    l.conv_shape(batch)
}

pub fn pool_shape(l: &Layer, batch: usize) -> PoolShape {
    let Op::MaxPool2d { kernel, stride } = l.op else { panic!("{} is not a MaxPool2d", l.name) };
    PoolShape { planes: batch * l.input.c, h: l.input.h, w: l.input.w, k: kernel, stride }
}

pub fn bn_shape(l: &Layer) -> BnShape {
    BnShape { channels: l.input.c, plane: l.input.h * l.input.w }
}

impl NetKernels {
    /// The kernels of `net`'s layers, and the loss and optimizer as `rule` asks.
    pub fn new(gpu: &Gpu, net: &Network, rule: StepRule) -> NetKernels {
        let layers = net
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| match l.op {
                Op::Conv2d { .. } => {
                    let s = conv_shape(l, 0);
                    let first = i == 0;
                    let relu_next = op_at(net, i + 1) == Some(&Op::Relu);
                    let pool_after_relu = matches!(op_at(net, i + 2), Some(Op::MaxPool2d { kernel: 2, stride: 2 }));
                    let pooled = (relu_next && pool_after_relu && s.is_plain())
                        .then(|| {
                            let backward_weight = Conv2dBackwardWeightPooled::new(gpu, s)?;
                            let backward_input =
                                if first { None } else { Some(Conv2dBackwardInputPooled::new(gpu, s)?) };
                            Some(PooledConv {
                                forward: Conv2dReluMaxpoolForward::new(gpu, s),
                                backward_weight,
                                backward_input,
                            })
                        })
                        .flatten();
                    LayerKernels::Conv(Box::new(ConvKernels {
                        forward: Conv2dForward::new(gpu, s, relu_next),
                        backward_weight: Conv2dBackwardWeight::new(gpu, s),
                        backward_input: (!first).then(|| Conv2dBackwardInput::new(gpu, s)),
                        pooled,
                    }))
                }
                Op::BatchNorm2d => {
                    LayerKernels::BatchNorm(BatchNorm2d::new(gpu, bn_shape(l), op_at(net, i + 1) == Some(&Op::Relu)))
                }
                Op::MaxPool2d { .. } => {
                    let s = pool_shape(l, 0);
                    // The ReLU before the pool is applied to the pool's backward (its mask).
                    let relu_before = i > 0 && op_at(net, i - 1) == Some(&Op::Relu);
                    LayerKernels::Pool {
                        forward: Maxpool2dForward::new(gpu, s),
                        backward: Maxpool2dBackward::new(gpu, s, relu_before),
                    }
                }
                Op::Relu | Op::Flatten | Op::Linear { .. } => LayerKernels::None,
            })
            .collect();
        NetKernels {
            layers,
            gemm: Gemm::new(gpu),
            bias_grad: BiasGrad::new(gpu),
            softmax: SoftmaxCrossEntropy::new(gpu, rule.label_smoothing),
            sgd: SgdMomentum::new(gpu, rule.sgd),
        }
    }

    /// The largest per-image scratch of the conv weight gradients (their partial sums).
    pub fn max_scratch_bytes_per_image(&self) -> usize {
        self.layers
            .iter()
            .filter_map(|k| match k {
                LayerKernels::Conv(c) => Some(c.backward_weight.scratch_bytes_per_image()),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }
}
