//! The pictures gpu-lenet writes: `show-batch`'s grid of training images and the training
//! curves. Both draw into an RGB buffer (plotters' bitmap backend, text in the embedded DejaVu
//! Sans) that `image` writes as PNG, through a temporary file renamed into place, so that a
//! failed write never leaves a half-written picture behind.

pub mod batch_grid;
pub mod curves;

use std::path::Path;

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans-ascii.ttf");
pub const FONT_FAMILY: &str = "sans-serif";

/// Makes the embedded font plotters' "sans-serif" (once per process).
pub(crate) fn register_font() -> Result<(), String> {
    static RESULT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *RESULT
        .get_or_init(|| plotters::style::register_font(FONT_FAMILY, plotters::style::FontStyle::Normal, FONT).is_ok());
    ok.then_some(()).ok_or_else(|| "internal error: the embedded font does not parse".to_string())
}

/// Checks before any work that `path` can be a new PNG: a `.png` name in an existing folder.
pub fn check_output(path: &Path, flag: &str) -> Result<(), String> {
    let name = path.display();
    if !path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")) {
        return Err(format!("{flag} {name}: expected a file name ending in .png (the picture is a PNG)"));
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(format!("{flag} {name}: the folder {} does not exist", dir.display()));
    }
    if path.is_dir() {
        return Err(format!("{flag} {name}: is a folder; expected a file name"));
    }
    Ok(())
}

/// Writes a `width` x `height` RGB picture to `path` as PNG; errors name `flag` and the file.
pub fn write_png(path: &Path, flag: &str, width: u32, height: u32, rgb: Vec<u8>) -> Result<(), String> {
    let name = path.display();
    let img = image::RgbImage::from_raw(width, height, rgb).ok_or("internal error: picture buffer size")?;
    let file_name = path.file_name().ok_or_else(|| format!("{flag} {name}: expected a file name"))?;
    let tmp = path.with_file_name(format!(".{}.partial", file_name.to_string_lossy()));
    let written = img
        .save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(|e| format!("{flag} {name}: cannot write: {e}"))
        .and_then(|_| std::fs::rename(&tmp, path).map_err(|e| format!("{flag} {name}: cannot write: {e}")));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_embedded_font_parses() {
        super::register_font().unwrap();
    }
}
