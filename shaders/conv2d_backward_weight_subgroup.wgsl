// conv2d_backward_weight, subgroup variant of the `partials` pass (the `reduce` pass is the
// one in conv2d_backward_weight.wgsl). Same lanes and the same fixed summation order as the
// plain kernel; the difference is how dy is read. Every lane of a workgroup needs the same dy
// value at each output pixel, so instead of each lane loading it, the lanes of a subgroup load
// 8 consecutive pixels' dy at once (lane s loads pixel ox0 + s % 8) and take them from each
// other with subgroupShuffle: one load per 8 pixels instead of one per pixel. Valid for any
// subgroup size that is a multiple of 8 (8 on llvmpipe, 32 on NVIDIA, 32/64 on AMD), which the
// Rust side checks before choosing this variant. A workgroup serves CO_TILE output channels,
// so each input load feeds CO_TILE * KW multiply-adds. Every lane stays active through the loops
// (lanes past the last (ci, ky) compute a clamped duplicate and do not write), since a shuffle
// reads from lanes that must be running.

override CIN: u32;
override H: u32;
override W: u32;
override COUT: u32;
override KH: u32;
override KW: u32;
override OH: u32 = H - KH + 1u;
override OW: u32 = W - KW + 1u;
override NW: u32 = COUT * CIN * KH * KW;
override NOUT: u32 = NW + COUT;
// Lanes per workgroup: CIN * KH rounded up to whole subgroups of 8, at most 32 (set by the
// Rust side), so few lanes idle.
override WG: u32 = 32u;
override CO_TILE: u32 = 1u;   // output channels per workgroup, at most 8

const MAX_K: u32 = 16u;
const MAX_CO: u32 = 8u;

// Workgroup z is chunk c0 + z; `x` and `dy` are bound from image x_b0 on (the whole batch, or
// 64 KiB uniform windows of them where uniform loads are cheap: see `x_at`, `dy_at` and
// conv2d_forward.wgsl; on llvmpipe a storage load in this loop cost half the kernel's time).
struct Params { batch: u32, chunk: u32, chunks: u32, c0: u32, x_b0: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
fn dy_at(i: u32) -> f32 { return dy[i]; }
@group(0) @binding(2) var<storage, read> x: array<f32>;
fn x_at(i: u32) -> f32 { return x[i]; }
@group(0) @binding(3) var<storage, read_write> partial: array<f32>;

@compute @workgroup_size(WG, 1, 1)
fn partials(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(subgroup_invocation_id) sg_lane: u32,
) {
    let lane = gid.x;
    let co0 = wid.y * CO_TILE;
    let c = p.c0 + wid.z;
    let owns_taps = lane < CIN * KH;
    let l = min(lane, CIN * KH - 1u);
    let ci = l / KH;
    let ky = l % KH;
    let s8 = sg_lane % 8u;
    let b0 = c * p.chunk;
    let b1 = min(p.batch, b0 + p.chunk);
    let x_b0 = p.x_b0;   // read once: llvmpipe does not hoist uniform loads out of loops
    var acc: array<f32, 128>;      // [CO_TILE][KW]
    var bias: array<f32, MAX_CO>;
    for (var b = b0; b < b1; b++) {
        for (var oy = 0u; oy < OH; oy++) {
            let xrow = (((b - x_b0) * CIN + ci) * H + oy + ky) * W;
            var win: array<f32, MAX_K>;
            for (var kx = 0u; kx + 1u < KW; kx++) {
                win[kx] = x_at(xrow + kx);
            }
            for (var ox0 = 0u; ox0 < OW; ox0 += 8u) {
                // Always 8 pixels, so the loop below unrolls and every shuffle reads a constant
                // lane (a broadcast); pixels past the row's end get dy = 0 and add nothing.
                var dv: array<f32, MAX_CO>;
                let in_row = ox0 + s8 < OW;
                for (var t = 0u; t < CO_TILE; t++) {
                    let co = min(co0 + t, COUT - 1u);
                    dv[t] = select(0.0, dy_at((((b - x_b0) * COUT + co) * OH + oy) * OW + min(ox0 + s8, OW - 1u)), in_row);
                }
                for (var u = 0u; u < 8u; u++) {
                    win[KW - 1u] = x_at(xrow + min(ox0 + u + KW - 1u, W - 1u));
                    for (var t = 0u; t < CO_TILE; t++) {
                        let g = subgroupShuffle(dv[t], u);
                        for (var kx = 0u; kx < KW; kx++) {
                            acc[t * KW + kx] += g * win[kx];
                        }
                        bias[t] += g;
                    }
                    for (var kx = 0u; kx + 1u < KW; kx++) {
                        win[kx] = win[kx + 1u];
                    }
                }
            }
        }
    }
    for (var t = 0u; t < CO_TILE; t++) {
        let co = co0 + t;
        if (co >= COUT) { break; }
        if (owns_taps) {
            let out = c * NOUT + ((co * CIN + ci) * KH + ky) * KW;
            for (var kx = 0u; kx < KW; kx++) {
                partial[out + kx] = acc[t * KW + kx];
            }
        }
        if (lane == 0u) {
            partial[c * NOUT + NW + co] = bias[t];
        }
    }
}
