// gemm: C[i, j] = sum_k A(i, k) * B(k, j), then the epilogue: + bias[j] (has_bias), ReLU (relu),
// or the ReLU-backward mask "keep where aux[i, j] > 0" (mask). A and B are read through strides,
// so one kernel covers the three products a linear layer needs:
//   forward   y  = x · Wᵀ + b   A = x [M,K],   B(k,j) = W[j,k]
//   input     dx = dy · W      A = dy [M,N],  B = W [N,K]   (mask: the ReLU below this layer)
//   weight    dW = dyᵀ · x     A(i,k) = dy[k,i],  B = x [M,K]
// Each invocation computes a TILE_M x 4 register tile: with 4 rows, 8 loads feed 16 FMAs, and
// lanes that share a row of tiles read A at the same address (what a CPU adapter wants). A GPU
// wants more lanes with shorter work at LeNet's small products (fc1 forward at batch 64 is only
// 64 x 120 outputs), so the Rust side picks TILE_M per adapter. Loads past the edge are clamped
// and their results dropped, so any M, N, K work.

override TILE_M: u32 = 4u;   // rows per invocation, 1 to 4

struct Params {
    m: u32, n: u32, k: u32, ldc: u32,
    a_rs: u32, a_cs: u32, b_rs: u32, b_cs: u32,
    has_bias: u32, relu: u32, mask: u32, _p0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> aux: array<f32>;
@group(0) @binding(5) var<storage, read_write> c: array<f32>;

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j0 = gid.x * 4u;
    let i0 = gid.y * TILE_M;
    if (i0 >= p.m || j0 >= p.n) { return; }
    var ar: vec4<u32>;
    var bc: vec4<u32>;
    for (var t = 0u; t < 4u; t++) {
        ar[t] = min(i0 + t, p.m - 1u) * p.a_rs;
        bc[t] = min(j0 + t, p.n - 1u) * p.b_cs;
    }
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var kk = 0u; kk < p.k; kk++) {
        let ak = kk * p.a_cs;
        let bk = kk * p.b_rs;
        let bv = vec4<f32>(b[bk + bc.x], b[bk + bc.y], b[bk + bc.z], b[bk + bc.w]);
        acc0 += a[ar.x + ak] * bv;
        if (TILE_M > 1u) { acc1 += a[ar.y + ak] * bv; }
        if (TILE_M > 2u) { acc2 += a[ar.z + ak] * bv; }
        if (TILE_M > 3u) { acc3 += a[ar.w + ak] * bv; }
    }
    var rows = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var t = 0u; t < TILE_M; t++) {
        let i = i0 + t;
        if (i >= p.m) { break; }
        for (var u = 0u; u < 4u; u++) {
            let j = j0 + u;
            if (j >= p.n) { break; }
            var v = rows[t][u];
            if (p.has_bias != 0u) { v += bias[j]; }
            if (p.relu != 0u) { v = max(v, 0.0); }
            if (p.mask != 0u && !(aux[i * p.ldc + j] > 0.0)) { v = 0.0; }
            c[i * p.ldc + j] = v;
        }
    }
}
