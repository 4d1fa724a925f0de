//! QR codes for invite links, rendered as inline SVG with the `qrcode` crate.

use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};

/// An SVG image (without the XML prolog, ready to inline) of a QR code for `text`, or `None`
/// if the text is too long for any QR version.
pub fn qr_svg(text: &str) -> Option<String> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M).ok()?;
    let image = code
        .render::<svg::Color<'_>>()
        .min_dimensions(240, 240)
        .quiet_zone(true)
        .dark_color(svg::Color("#1d1d1b"))
        .light_color(svg::Color("#ffffff"))
        .build();
    let start = image.find("<svg")?;
    Some(image[start..].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_inline_svg_for_an_invite_link() {
        let link = format!(
            "https://swarm.example/join/{}#t={}",
            "a".repeat(32),
            "T".repeat(43)
        );
        let svg = qr_svg(&link).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(!svg.contains("<?xml"));
        // Longer text needs more modules, so the image grows.
        let bigger = qr_svg(&link.repeat(8)).unwrap();
        assert!(bigger.len() > svg.len());
        assert!(qr_svg(&"x".repeat(8000)).is_none(), "beyond QR capacity");
    }
}
