//! The parameter arena: every LeNet parameter in one flat f32 buffer (gradients and momentum in
//! two more of the same layout), each tensor a named view at an offset aligned for binding.
//! So the optimizer is one dispatch, a checkpoint one readback, zeroing the momentum one clear.

use crate::kernels::View;

/// One named tensor inside the arena.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    /// Offset in 32-bit words from the start of the arena.
    pub offset: usize,
}

impl TensorSpec {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The layout of the arena.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arena {
    pub tensors: Vec<TensorSpec>,
    /// Total length in words, padding included.
    pub words: usize,
}

impl Arena {
    /// Lays out `specs` in order, each tensor starting at a multiple of `align_bytes`.
    pub fn new<S: AsRef<str>>(specs: &[(S, Vec<usize>)], align_bytes: u64) -> Arena {
        let align = (align_bytes.max(4) / 4) as usize;
        let mut offset = 0;
        let mut tensors = Vec::new();
        for (name, shape) in specs {
            let t = TensorSpec { name: name.as_ref().to_string(), shape: shape.clone(), offset };
            offset = (offset + t.len()).div_ceil(align) * align;
            tensors.push(t);
        }
        Arena { tensors, words: offset }
    }

    pub fn get(&self, name: &str) -> &TensorSpec {
        self.tensors.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no tensor named {name} in the arena"))
    }

    /// The tensor's values inside a host copy of the arena.
    pub fn slice<'a>(&self, data: &'a [f32], name: &str) -> &'a [f32] {
        let t = self.get(name);
        &data[t.offset..t.offset + t.len()]
    }

    pub fn slice_mut<'a>(&self, data: &'a mut [f32], name: &str) -> &'a mut [f32] {
        let t = self.get(name);
        &mut data[t.offset..t.offset + t.len()]
    }

    /// The tensor as a binding range of one of the arena's GPU buffers.
    pub fn view(&self, buffer: &wgpu::Buffer, name: &str) -> View {
        let t = self.get(name);
        View { buffer: buffer.clone(), offset: (t.offset * 4) as u64, len: t.len() }
    }
}
