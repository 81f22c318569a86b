//! LeNet-5: the parameter arena, the GPU schedule of one training step, and the CPU reference
//! model the tests compare it with.

pub mod arena;
pub mod kernels;
pub mod lenet;
pub mod net;
pub mod reference;
pub mod schedule;

pub use arena::{Arena, TensorSpec};
pub use lenet::{Lenet, LenetKernels, Schedule, Stage};

/// Input image side (CIFAR-10 is 32x32; Fashion-MNIST's 28x28 is padded to it).
pub const IMAGE: usize = 32;
/// Number of classes.
pub const CLASSES: usize = 10;

/// The network's parameters, PyTorch `state_dict` names and shapes, in state_dict order.
pub fn param_specs(in_channels: usize) -> Vec<(&'static str, Vec<usize>)> {
    vec![
        ("conv1.weight", vec![6, in_channels, 5, 5]),
        ("conv1.bias", vec![6]),
        ("conv2.weight", vec![16, 6, 5, 5]),
        ("conv2.bias", vec![16]),
        ("fc1.weight", vec![120, 400]),
        ("fc1.bias", vec![120]),
        ("fc2.weight", vec![84, 120]),
        ("fc2.bias", vec![84]),
        ("fc3.weight", vec![10, 84]),
        ("fc3.bias", vec![10]),
    ]
}

/// Fan-in of each parameter tensor's layer (PyTorch's init bound is 1/sqrt(fan_in)).
pub fn fan_in(name: &str, in_channels: usize) -> usize {
    match name.split('.').next().unwrap_or("") {
        "conv1" => in_channels * 25,
        "conv2" => 6 * 25,
        "fc1" => 400,
        "fc2" => 120,
        "fc3" => 84,
        other => panic!("unknown layer {other}"),
    }
}
