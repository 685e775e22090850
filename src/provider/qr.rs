//! The QR code of an activation code, as the PNG embedded in the install email.
//!
//! Drawn here rather than linked from the provider's `qrCodeUrl` because
//! mail clients block remote images by default: an embedded image shows at
//! once, even offline. The picture is black on white, 1 bit per pixel (a few
//! hundred bytes), with the 4-module quiet zone the QR standard asks for, and
//! whole pixels per module so that scaling it to the ~200 CSS pixels the
//! template gives it (or 400 on a high-density screen) keeps edges sharp.

use qrcode::{Color, EcLevel, QrCode};

/// Modules of white around the code (ISO/IEC 18004 asks for 4).
pub const QUIET_ZONE: usize = 4;

/// The image is at least this wide: twice the ~200 px it is shown at, so a
/// high-density screen (or a phone camera pointed at a laptop) gets sharp modules.
pub const MIN_SIZE_PX: usize = 400;

#[derive(Debug, thiserror::Error)]
pub enum QrError {
    #[error("cannot encode the activation code as a QR code: {0}")]
    Encode(String),
    #[error("cannot write the QR code as PNG: {0}")]
    Png(String),
}

/// The dark/light grid of `text` with its quiet zone, row by row (true = dark).
/// Error correction M: the level eSIM providers print, readable from a
/// screen with a little glare, still a small code for a ~60-character LPA string.
pub fn modules(text: &str) -> Result<Vec<Vec<bool>>, QrError> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
        .map_err(|e| QrError::Encode(e.to_string()))?;
    let width = code.width();
    let colors = code.to_colors();
    let side = width + 2 * QUIET_ZONE;
    let mut grid = vec![vec![false; side]; side];
    for (i, c) in colors.iter().enumerate() {
        let (x, y) = (i % width, i / width);
        grid[y + QUIET_ZONE][x + QUIET_ZONE] = *c == Color::Dark;
    }
    Ok(grid)
}

/// The PNG (1-bit greyscale) of the QR code of `text`: square, at least
/// [`MIN_SIZE_PX`] wide, a whole number of pixels per module.
pub fn png(text: &str) -> Result<Vec<u8>, QrError> {
    let grid = modules(text)?;
    let side_modules = grid.len();
    let scale = MIN_SIZE_PX.div_ceil(side_modules).max(1);
    let side = side_modules * scale;
    let row_bytes = side.div_ceil(8);
    // 1 = white in greyscale: start white, set dark pixels to 0.
    let mut data = vec![0xffu8; row_bytes * side];
    for (my, row) in grid.iter().enumerate() {
        for (mx, dark) in row.iter().enumerate() {
            if !dark {
                continue;
            }
            for y in my * scale..(my + 1) * scale {
                for x in mx * scale..(mx + 1) * scale {
                    data[y * row_bytes + x / 8] &= !(0x80 >> (x % 8));
                }
            }
        }
    }
    let mut out = Vec::with_capacity(1024);
    {
        let side32 = u32::try_from(side).map_err(|e| QrError::Png(e.to_string()))?;
        let mut enc = png::Encoder::new(&mut out, side32, side32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::One);
        enc.set_compression(png::Compression::High);
        let mut w = enc
            .write_header()
            .map_err(|e| QrError::Png(e.to_string()))?;
        w.write_image_data(&data)
            .map_err(|e| QrError::Png(e.to_string()))?;
        w.finish().map_err(|e| QrError::Png(e.to_string()))?;
    }
    Ok(out)
}

/// The QR code as text for a terminal (two rows of modules per line, with
/// the quiet zone), for `esim-notify render`: scannable from a screen with
/// light text on a dark background.
pub fn terminal(text: &str) -> Result<String, QrError> {
    let grid = modules(text)?;
    let mut out = String::new();
    for pair in grid.chunks(2) {
        let top = &pair[0];
        let bottom = pair.get(1);
        for x in 0..top.len() {
            let t = top[x];
            let b = bottom.is_some_and(|r| r[x]);
            // The blocks draw the light modules and the terminal's own
            // background the dark ones: right on the usual dark terminal.
            out.push(match (t, b) {
                (false, false) => '█',
                (false, true) => '▀',
                (true, false) => '▄',
                (true, true) => ' ',
            });
        }
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AC: &str = "LPA:1$rsp-eu.redteamobile.com$43DE23C67EE747BCAD6B63E8B67B261F";

    #[test]
    fn png_is_square_large_enough_with_a_white_border() {
        let bytes = png(AC).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let reader = decoder.read_info().unwrap();
        let info = reader.info();
        assert_eq!(info.width, info.height);
        assert!(info.width as usize >= MIN_SIZE_PX, "{}", info.width);
        let grid = modules(AC).unwrap();
        assert_eq!(
            info.width as usize % grid.len(),
            0,
            "whole pixels per module"
        );
        // The quiet zone is light all round.
        let n = grid.len();
        let border = |x: usize, y: usize| {
            x < QUIET_ZONE || y < QUIET_ZONE || x >= n - QUIET_ZONE || y >= n - QUIET_ZONE
        };
        for (y, row) in grid.iter().enumerate() {
            for (x, dark) in row.iter().enumerate() {
                assert!(!(border(x, y) && *dark), "dark module at {x},{y}");
            }
        }
        // The finder pattern's corner sits just inside the quiet zone.
        assert!(grid[QUIET_ZONE][QUIET_ZONE]);
    }

    #[test]
    fn terminal_rendering_has_one_line_per_two_module_rows() {
        let grid = modules(AC).unwrap();
        let t = terminal(AC).unwrap();
        assert_eq!(t.lines().count(), grid.len().div_ceil(2));
        assert!(t.lines().all(|l| l.chars().count() == grid.len()));
    }
}
