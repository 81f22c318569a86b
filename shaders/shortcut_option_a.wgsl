// shortcut_option_a: ResNet's parameter-free shortcut between stages of different widths,
// F.pad(x[:, :, ::S, ::S], (0, 0, 0, 0, PAD, PAD)): every S-th row and column, and PAD zero
// channels on both sides (COUT = CIN + 2 PAD).
// forward: x [N, CIN, H, W] -> y [N, COUT, OH, OW];  backward: dy [N, COUT, OH, OW] -> dx [N, CIN, H, W].

override CIN: u32;
override H: u32;
override W: u32;
override STRIDE: u32;
override PAD: u32;
override COUT: u32 = CIN + 2u * PAD;
override OH: u32 = (H + STRIDE - 1u) / STRIDE;
override OW: u32 = (W + STRIDE - 1u) / STRIDE;
// backward: dx += (the block's input also feeds its first convolution, whose grad came first).
override ACCUMULATE: bool = false;

struct Params { total: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

// One invocation per output value: a copy of the subsampled input, or a padding zero.
@compute @workgroup_size(64, 1, 1)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.total) { return; }
    let ox = i % OW;
    let oy = (i / OW) % OH;
    let c = (i / (OW * OH)) % COUT;
    let n = i / (OW * OH * COUT);
    var v = 0.0;
    if (c >= PAD && c < PAD + CIN) {
        v = src[((n * CIN + c - PAD) * H + oy * STRIDE) * W + ox * STRIDE];
    }
    dst[i] = v;
}

// One invocation per input value: the grad of the output it was copied to, or 0 for the rows
// and columns the subsampling skipped (the padding channels' grads go nowhere).
@compute @workgroup_size(64, 1, 1)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.total) { return; }
    let ix = i % W;
    let iy = (i / W) % H;
    let c = (i / (W * H)) % CIN;
    let n = i / (W * H * CIN);
    var g = 0.0;
    if (ix % STRIDE == 0u && iy % STRIDE == 0u) {
        g = src[((n * COUT + c + PAD) * OH + iy / STRIDE) * OW + ix / STRIDE];
    }
    if (ACCUMULATE) {
        dst[i] = dst[i] + g;
    } else {
        dst[i] = g;
    }
}
