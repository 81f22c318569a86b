//! A network's resident state on the GPU: its trainable parameters, their gradients and momentum
//! (one arena each, the layout its `state_dict` order gives), and BatchNorm's running statistics
//! (a state arena the optimizer never touches).

use super::Arena;
use crate::gpu::Gpu;
use crate::kernels::View;
use crate::nn::{Network, ParamKind};

pub struct Net {
    pub network: Network,
    pub in_channels: usize,
    pub arena: Arena,
    pub weights: wgpu::Buffer,
    pub grads: wgpu::Buffer,
    pub velocity: wgpu::Buffer,
    /// Running means and variances; empty (one padding word) without BatchNorm.
    pub state_arena: Arena,
    pub state: wgpu::Buffer,
}

fn layout(net: &Network, kind: ParamKind, align: u64) -> Arena {
    let specs = net.specs(kind);
    let refs: Vec<(&str, Vec<usize>)> = specs.iter().map(|(n, s)| (n.as_str(), s.clone())).collect();
    Arena::new(&refs, align)
}

impl Net {
    pub fn new(gpu: &Gpu, network: Network) -> Net {
        let align = gpu.storage_alignment();
        let arena = layout(&network, ParamKind::Trainable, align);
        let state_arena = layout(&network, ParamKind::RunningStat, align);
        Net {
            in_channels: network.input.c,
            // Room after the arena so small weight tensors (fc2, fc3) can be bound as a full
            // 64 KiB uniform window (the GEMM's uniform B operand).
            weights: gpu.storage("weights", arena.words + (crate::kernels::UNIFORM_SLACK_BYTES / 4) as usize),
            grads: gpu.storage("grads", arena.words),
            velocity: gpu.storage("momentum", arena.words),
            state: gpu.storage("running statistics", state_arena.words.max(1)),
            arena,
            state_arena,
            network,
        }
    }

    /// GPU bytes of the parameters, their grads and momentum, and the running statistics.
    pub fn bytes(&self) -> u64 {
        [&self.weights, &self.grads, &self.velocity, &self.state].iter().map(|b| b.size()).sum()
    }

    pub fn w(&self, name: &str) -> View {
        self.arena.view(&self.weights, name)
    }
    pub fn g(&self, name: &str) -> View {
        self.arena.view(&self.grads, name)
    }
    /// A running statistic's view.
    pub fn s(&self, name: &str) -> View {
        self.state_arena.view(&self.state, name)
    }

    /// Uploads a host copy of the arena (layout `self.arena`); no momentum means zeros.
    pub fn upload(&self, gpu: &Gpu, weights: &[f32], velocity: Option<&[f32]>) {
        assert_eq!(weights.len(), self.arena.words);
        gpu.queue.write_buffer(&self.weights, 0, bytemuck::cast_slice(weights));
        let zeros;
        let v = match velocity {
            Some(v) => v,
            None => {
                zeros = vec![0f32; self.arena.words];
                &zeros
            }
        };
        gpu.queue.write_buffer(&self.velocity, 0, bytemuck::cast_slice(v));
    }

    /// Uploads running statistics (layout `self.state_arena`).
    pub fn upload_state(&self, gpu: &Gpu, values: &[f32]) {
        assert_eq!(values.len(), self.state_arena.words);
        if !values.is_empty() {
            gpu.queue.write_buffer(&self.state, 0, bytemuck::cast_slice(values));
        }
    }

    pub fn download_weights(&self, gpu: &Gpu) -> Result<Vec<f32>, String> {
        gpu.read_words(&self.weights, 0, self.arena.words)
    }
    pub fn download_velocity(&self, gpu: &Gpu) -> Result<Vec<f32>, String> {
        gpu.read_words(&self.velocity, 0, self.arena.words)
    }
    pub fn download_grads(&self, gpu: &Gpu) -> Result<Vec<f32>, String> {
        gpu.read_words(&self.grads, 0, self.arena.words)
    }
    pub fn download_state(&self, gpu: &Gpu) -> Result<Vec<f32>, String> {
        if self.state_arena.words == 0 {
            return Ok(Vec::new());
        }
        gpu.read_words(&self.state, 0, self.state_arena.words)
    }
}
