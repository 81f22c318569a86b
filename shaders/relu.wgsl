// relu: forward y = max(x, 0) and backward dx = dy where y > 0 (else 0), PyTorch's rule,
// for the places where the ReLU is not fused into a neighbouring kernel.

struct Params { n: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;   // x (forward) or dy (backward)
@group(0) @binding(2) var<storage, read> act: array<f32>;   // y, the forward's output (backward)
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.n) { return; }
    dst[i] = max(src[i], 0.0);
}

@compute @workgroup_size(64, 1, 1)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.n) { return; }
    dst[i] = select(0.0, src[i], act[i] > 0.0);
}

