//! The sources of the uniform-window GEMM kernels: gemm_uniform_a.wgsl rewritten for vec4
//! stores of C and for a dispatch that sums over several windows.

use super::MAX_WINDOWS;
use crate::kernels::{rewrite, with_const};

/// gemm_uniform_a.wgsl with C and aux bound as vec4 arrays: each lane's loads and stores of its 4
/// columns one vec4 access (for blocks whose columns start at a multiple of 4 in a C whose rows
/// are multiples of 4 long, bound at multiples of 16 bytes).
pub fn vec4_output(source: &str) -> String {
    let swaps = [
        ("var<storage, read> aux: array<f32>;", "var<storage, read> aux: array<vec4<f32>>;"),
        ("var<storage, read_write> c: array<f32>;", "var<storage, read_write> c: array<vec4<f32>>;"),
        ("    var r = vec4<f32>(0.0);\n    for (var u = 0u; u < 4u; u++) { if (u < live) { r[u] = c[o + u]; } }\n    \
            return r;", "    return c[o / 4u];"),
        ("    var r = vec4<f32>(0.0);\n    for (var u = 0u; u < 4u; u++) \
            { if (u < live) { r[u] = aux[o + u]; } }\n    return r;", "    return aux[o / 4u];"),
        ("    for (var u = 0u; u < 4u; u++) { if (u < live) { c[o + u] = v[u]; } }", "    c[o / 4u] = v;"),
    ];
    rewrite(source, "gemm_uniform_a.wgsl", &swaps)
}

/// gemm_uniform_a.wgsl for a dispatch that sums over `windows` windows of the reduction: the
/// block between `// window {` and `// } window` repeated for each window after the first, reading
/// its own A window (and B window where B is uniform) at the next bindings after db, and its
/// entry of `p.more`.
pub fn more_windows(source: &str, windows: usize, uniform_b: bool) -> String {
    assert!((1..=MAX_WINDOWS).contains(&windows), "1 to {MAX_WINDOWS} windows a dispatch");
    let (open, close) = ("    // window {\n", "    // } window\n");
    let (Some(start), Some(end)) = (source.find(open), source.find(close)) else {
        panic!("shader lacks the `// window` block");
    };
    let block = &source[start + open.len()..end];
    let a_access = "fn a_at(i: u32) -> f32 { return a[i >> 2u][i & 3u]; }";
    assert!(source.contains(a_access), "shader lacks `{a_access}`");
    let mut decls = String::new();
    let mut copies = String::new();
    let mut binding = 7; // after C (5) and the bias grad (6)
    for w in 1..windows {
        let e = w - 1;
        decls += &format!(
            "\n@group(0) @binding({binding}) var<uniform> a{w}: array<vec4<f32>, A_VEC4S>;\nfn \
            a{w}_at(i: u32) -> f32 {{ return a{w}[i >> 2u][i & 3u]; }}"
        );
        binding += 1;
        let mut copy = block
            .replace("p.k,", &format!("p.more[{e}].x,"))
            .replace("p.a_k0", &format!("p.more[{e}].y"))
            .replace("p.b_k0", &format!("p.more[{e}].z"))
            .replace("in_window(j0, 0u)", &format!("in_window(j0, {w}u)"))
            .replace("col_start(0u)", &format!("col_start({w}u)"))
            .replace("a_at(", &format!("a{w}_at("));
        if uniform_b {
            decls += &format!(
                "\n@group(0) @binding({binding}) var<uniform> b{w}: array<vec4<f32>, A_VEC4S>;\nfn \
                b{w}_at(i: u32) -> f32 {{ return b{w}[i >> 2u][i & 3u]; }}"
            );
            binding += 1;
            copy = copy.replace("b_at(", &format!("b{w}_at("));
        }
        copies += &copy;
    }
    let mut out = source.to_string();
    out.insert_str(end, &copies);
    let out = with_const(&out, "WINDOWS", windows);
    out.replace(a_access, &format!("{a_access}{decls}"))
}
