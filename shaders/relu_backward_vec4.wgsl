// relu_backward_vec4: relu.wgsl's backward, dx = dy where y > 0 (else 0), four values an
// invocation (a storage load costs llvmpipe about the same per lane whatever its width), for
// tensors whose length is a multiple of 4. A file of its own: its vec4 bindings would otherwise
// set the minimum binding size of relu.wgsl's scalar entry points too.

struct Params { n: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> act4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> dst4: array<vec4<f32>>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.n / 4u) { return; }
    dst4[i] = select(vec4<f32>(0.0), src4[i], act4[i] > vec4<f32>(0.0));
}
