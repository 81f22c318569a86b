// conv2d_forward: y = conv(x, w) + b, optional ReLU. Stride 1, no padding (LeNet's convolutions).
// x [B, Cin, H, W], w [Cout, Cin, KH, KW], b [Cout], y [B, Cout, OH, OW].
//
// One invocation computes four horizontally adjacent output pixels of one output channel.
// The input row segment it needs (4 + KW - 1 values) is loaded once per (ci, ky) into registers
// and reused KW times; every lane of a workgroup shares `co`, so weight loads are uniform (one
// load for the whole SIMD group on llvmpipe, a broadcast on GPUs).

struct Params {
    batch: u32, cin: u32, h: u32, w: u32,
    cout: u32, kh: u32, kw: u32, oh: u32,
    ow: u32, relu: u32, quads: u32, _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const MAX_SEG: u32 = 20u; // 4 outputs + kernel width up to 17 - 1

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let tile = gid.x;
    let co = gid.y;
    let b = gid.z;
    if (tile >= p.oh * p.quads) { return; }
    let oy = tile / p.quads;
    let ox0 = (tile % p.quads) * 4u;
    let seg_len = 3u + p.kw;

    var acc = vec4<f32>(bias[co]);
    var seg: array<f32, MAX_SEG>;
    for (var ci = 0u; ci < p.cin; ci++) {
        for (var ky = 0u; ky < p.kh; ky++) {
            let row = ((b * p.cin + ci) * p.h + oy + ky) * p.w;
            for (var j = 0u; j < seg_len; j++) {
                // Past the row's end only for outputs that are masked off below.
                seg[j] = x[row + min(ox0 + j, p.w - 1u)];
            }
            let wrow = ((co * p.cin + ci) * p.kh + ky) * p.kw;
            for (var kx = 0u; kx < p.kw; kx++) {
                let wv = wt[wrow + kx];
                acc += wv * vec4<f32>(seg[kx], seg[kx + 1u], seg[kx + 2u], seg[kx + 3u]);
            }
        }
    }
    if (p.relu != 0u) { acc = max(acc, vec4<f32>(0.0)); }
    let out = ((b * p.cout + co) * p.oh + oy) * p.ow + ox0;
    for (var j = 0u; j < 4u; j++) {
        if (ox0 + j < p.ow) { y[out + j] = acc[j]; }
    }
}
