//! A network on the GPU: the parameter arena, the kernels each layer gets on this adapter, the
//! resident buffers, and the schedule of one training step planned from the network's
//! description (`nn`).

pub mod arena;
pub mod kernels;
pub mod net;
pub mod schedule;

pub use arena::{Arena, TensorSpec};
pub use kernels::NetKernels;
pub use net::Net;
pub use schedule::{Activations, Schedule, Stage};

/// Input image side (CIFAR-10 is 32x32; Fashion-MNIST's 28x28 is padded to it).
pub const IMAGE: usize = 32;
/// Number of classes.
pub const CLASSES: usize = 10;

/// LeNet-5's trainable parameters, PyTorch `state_dict` names and shapes, in state_dict order
/// (the layout of a LeNet-5 checkpoint).
pub fn param_specs(in_channels: usize) -> Vec<(String, Vec<usize>)> {
    crate::nn::lenet5(in_channels).specs(crate::nn::ParamKind::Trainable)
}
