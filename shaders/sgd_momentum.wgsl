// sgd_momentum: PyTorch's SGD with momentum over the whole parameter arena in one dispatch:
// v = momentum * v + g; w = w - lr * v (no dampening, no Nesterov, no weight decay).
// Padding words between tensors in the arena hold zeros and stay zero.

struct Params { n: u32, lr: f32, momentum: f32, _p0: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> weight: array<f32>;
@group(0) @binding(3) var<storage, read_write> velocity: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.n) { return; }
    let v = p.momentum * velocity[i] + grad[i];
    velocity[i] = v;
    weight[i] = weight[i] - p.lr * v;
}
