// conv2d_backward_input: dx = full correlation of dy with the flipped kernel.
// dy [B, Cout, OH, OW], w [Cout, Cin, KH, KW] -> dx [B, Cin, H, W].
//
// A gather, not a scatter: each invocation owns one input pixel and sums every (co, ky, kx)
// term that reaches it, in a fixed order, so there are no atomics and the result is
// bit-reproducible. Lanes of a workgroup share `ci`, so weight loads are uniform.

struct Params {
    batch: u32, cin: u32, h: u32, w: u32,
    cout: u32, kh: u32, kw: u32, oh: u32,
    ow: u32, _p0: u32, _p1: u32, _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let pix = gid.x;
    let ci = gid.y;
    let b = gid.z;
    if (pix >= p.h * p.w) { return; }
    let iy = pix / p.w;
    let ix = pix % p.w;
    // Output rows oy = iy - ky must lie in [0, oh): ky in [iy - oh + 1, iy].
    let ky_lo = select(0u, iy + 1u - p.oh, iy + 1u > p.oh);
    let ky_hi = min(p.kh, iy + 1u);
    let kx_lo = select(0u, ix + 1u - p.ow, ix + 1u > p.ow);
    let kx_hi = min(p.kw, ix + 1u);
    var acc = 0.0;
    for (var co = 0u; co < p.cout; co++) {
        let plane = (b * p.cout + co) * p.oh;
        for (var ky = ky_lo; ky < ky_hi; ky++) {
            let drow = (plane + iy - ky) * p.ow + ix;
            let wrow = ((co * p.cin + ci) * p.kh + ky) * p.kw;
            for (var kx = kx_lo; kx < kx_hi; kx++) {
                acc += dy[drow - kx] * wt[wrow + kx];
            }
        }
    }
    dx[((b * p.cin + ci) * p.h + iy) * p.w + ix] = acc;
}
