//! Checkpoints as safetensors, f32, with PyTorch's `state_dict` names and shapes, so
//! `Net().load_state_dict(safetensors.torch.load_file(path))` works unchanged. Writes are
//! atomic: a temporary file in the same folder, fsync, rename. A crash mid-write leaves the
//! previous file intact. The same tensors and metadata always give the same bytes: tensors in
//! the order safetensors sorts them, metadata in key order.

use crate::model::{param_specs, Arena};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

/// Prefix of the momentum buffers in resumable checkpoints (not part of a `state_dict`).
pub const MOMENTUM_PREFIX: &str = "momentum.";

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let file_name =
        path.file_name().ok_or_else(|| format!("{}: not a file path", path.display()))?.to_string_lossy().to_string();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: cannot write: {e}", path.display())
    })
}

/// Serialises the weights (and optionally the momentum) of `arena` with metadata.
pub fn to_bytes(
    arena: &Arena,
    weights: &[f32],
    momentum: Option<&[f32]>,
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>, String> {
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for t in &arena.tensors {
        let bytes = bytemuck::cast_slice(arena.slice(weights, &t.name)).to_vec();
        owned.push((t.name.clone(), t.shape.clone(), bytes));
        if let Some(m) = momentum {
            let bytes = bytemuck::cast_slice(arena.slice(m, &t.name)).to_vec();
            owned.push((format!("{MOMENTUM_PREFIX}{}", t.name), t.shape.clone(), bytes));
        }
    }
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(n, s, b)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), b).expect("consistent tensor view")))
        .collect();
    // safetensors writes its metadata map in hash order, which changes from process to process:
    // serialise without it and put it into the header ourselves, in key order.
    let bytes = safetensors::serialize(views, None).map_err(|e| format!("cannot serialise checkpoint: {e}"))?;
    with_metadata(&bytes, metadata)
}

/// `bytes` (a safetensors file without metadata) with `metadata` as its `__metadata__`, in key
/// order; the tensor entries and data stay as they are.
fn with_metadata(bytes: &[u8], metadata: &BTreeMap<String, String>) -> Result<Vec<u8>, String> {
    if metadata.is_empty() {
        return Ok(bytes.to_vec());
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8-byte header length")) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).map_err(|e| format!("cannot serialise checkpoint: {e}"))?;
    let tensors = header.trim_end().strip_prefix('{').ok_or("cannot serialise checkpoint: header is not an object")?;
    let meta = serde_json::to_string(metadata).map_err(|e| format!("cannot serialise checkpoint: {e}"))?;
    let sep = if tensors.starts_with('}') { "" } else { "," };
    let mut new_header = format!("{{\"__metadata__\":{meta}{sep}{tensors}").into_bytes();
    new_header.resize(new_header.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + new_header.len() + bytes.len() - 8 - n);
    out.extend((new_header.len() as u64).to_le_bytes());
    out.extend(new_header);
    out.extend(&bytes[8 + n..]);
    Ok(out)
}

/// Saves weights (and optionally momentum) atomically.
pub fn save(
    path: &Path,
    arena: &Arena,
    weights: &[f32],
    momentum: Option<&[f32]>,
    metadata: BTreeMap<String, String>,
) -> Result<(), String> {
    write_atomic(path, &to_bytes(arena, weights, momentum, &metadata)?)
}

/// Only the metadata of a checkpoint (its header), for the flags a resume takes from it.
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: cannot read checkpoint: {e}", path.display()))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| format!("{}: not a valid safetensors file: {e}", path.display()))?;
    Ok(header.metadata().clone().unwrap_or_default())
}

/// A loaded checkpoint, in the arena layout for its input channel count.
#[derive(Debug)]
pub struct Loaded {
    pub in_channels: usize,
    pub arena: Arena,
    pub weights: Vec<f32>,
    pub momentum: Option<Vec<f32>>,
    pub metadata: HashMap<String, String>,
}

/// Parses a checkpoint. Every LeNet tensor must be present with its PyTorch shape as F32;
/// momentum tensors (`momentum.<name>`) are optional but all-or-nothing; anything else is
/// refused. Errors name the file and the tensor. `align` is the arena's offset alignment.
pub fn from_bytes(path: &Path, bytes: &[u8], align: u64) -> Result<Loaded, String> {
    let name = path.display();
    let st = SafeTensors::deserialize(bytes).map_err(|e| format!("{name}: not a valid safetensors file: {e}"))?;
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| format!("{name}: not a valid safetensors file: {e}"))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let tensors: HashMap<String, TensorView> = st.tensors().into_iter().collect();
    let conv1 = tensors.get("conv1.weight").ok_or_else(|| {
        format!("{name}: tensor conv1.weight is missing (expected LeNet's state_dict: conv1.weight … fc3.bias)")
    })?;
    let in_channels = match conv1.shape() {
        [6, c @ (1 | 3), 5, 5] => *c,
        s => {
            return Err(format!(
                "{name}: tensor conv1.weight has shape {s:?}, expected [6, 3, 5, 5] (CIFAR-10) or \
            [6, 1, 5, 5] (Fashion-MNIST)"
            ))
        }
    };
    let specs = param_specs(in_channels);
    let arena = Arena::new(&specs, align);
    let mut weights = vec![0f32; arena.words];
    let mut momentum = vec![0f32; arena.words];
    let mut momentum_found = 0;
    let read = |t: &TensorView, tname: &str, shape: &[usize], dst: &mut [f32]| -> Result<(), String> {
        if t.dtype() != Dtype::F32 {
            return Err(format!("{name}: tensor {tname} has dtype {:?}, expected F32", t.dtype()));
        }
        if t.shape() != shape {
            return Err(format!("{name}: tensor {tname} has shape {:?}, expected {shape:?}", t.shape()));
        }
        for (d, c) in dst.iter_mut().zip(t.data().chunks_exact(4)) {
            *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        Ok(())
    };
    for (tname, shape) in &specs {
        let t = tensors.get(tname.as_str()).ok_or_else(|| {
            format!("{name}: tensor {tname} is missing (expected LeNet's state_dict: conv1.weight … fc3.bias)")
        })?;
        read(t, tname, shape, arena.slice_mut(&mut weights, tname))?;
        let mname = format!("{MOMENTUM_PREFIX}{tname}");
        if let Some(m) = tensors.get(&mname) {
            read(m, &mname, shape, arena.slice_mut(&mut momentum, tname))?;
            momentum_found += 1;
        }
    }
    if momentum_found != 0 && momentum_found != specs.len() {
        return Err(format!(
            "{name}: holds momentum for {momentum_found} of {} tensors; expected all or none",
            specs.len()
        ));
    }
    let known = |n: &str| specs.iter().any(|(s, _)| s == n || n.strip_prefix(MOMENTUM_PREFIX) == Some(s.as_str()));
    let mut extra: Vec<&String> = tensors.keys().filter(|n| !known(n)).collect();
    extra.sort();
    if let Some(x) = extra.first() {
        return Err(format!("{name}: unexpected tensor {x} (a LeNet state_dict holds only conv1.weight … fc3.bias)"));
    }
    if let Some((i, v)) = weights.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        let t = arena
            .tensors
            .iter()
            .find(|t| i >= t.offset && i < t.offset + t.len())
            .map(|t| t.name.as_str())
            .unwrap_or("?");
        return Err(format!("{name}: tensor {t} holds a non-finite value ({v})"));
    }
    Ok(Loaded { in_channels, arena, weights, momentum: (momentum_found > 0).then_some(momentum), metadata })
}

pub fn load(path: &Path, align: u64) -> Result<Loaded, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: cannot read checkpoint: {e}", path.display()))?;
    from_bytes(path, &bytes, align)
}
