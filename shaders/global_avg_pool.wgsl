// global_avg_pool: F.adaptive_avg_pool2d(x, 1), forward and backward. Each plane (one image's
// channel) of PLANE = H*W values becomes its mean; the backward spreads each plane's grad
// evenly back over its values.
// forward: x [P, H, W] -> y [P];  backward: dy [P] -> dx [P, H, W].

override PLANE: u32;

struct Params { total: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

// One invocation per plane, summing its values in order (a fixed order: reproducible), then
// dividing once, as PyTorch's mean does.
@compute @workgroup_size(64, 1, 1)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let plane = gid.x + gid.y * nwg.x * 64u;
    if (plane >= p.total) { return; }   // total counts planes here
    var acc = 0.0;
    for (var i = 0u; i < PLANE; i++) {
        acc += src[plane * PLANE + i];
    }
    dst[plane] = acc / f32(PLANE);
}

// One invocation per input value.
@compute @workgroup_size(64, 1, 1)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.total) { return; }   // total counts input values here
    dst[i] = src[i / PLANE] / f32(PLANE);
}
