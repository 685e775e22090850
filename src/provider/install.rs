//! The `install` template variables of SPEC §7, from one eSIM, and the
//! inline QR image that `install.qrImage` points at.
//!
//! Everything an install email offers comes from the activation code `ac`
//! (`LPA:1$<SM-DP+ address>$<matching ID>`, GSMA SGP.22): the QR code, the
//! one-tap links of Apple (iOS 17.4+) and Android, and the two fields for
//! entering it by hand.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::esim::Esim;
use super::qr::{self, QrError};
use crate::mailer::InlineImage;

pub const APPLE_SETUP: &str = "https://esimsetup.apple.com/esim_qrcode_provisioning?carddata=";
pub const ANDROID_SETUP: &str = "https://esimsetup.android.com/esim_qrcode_provisioning?carddata=";

/// `install` of SPEC §7; every key present, null when unknown.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallVars {
    pub qr_code_url: Option<String>,
    pub short_url: Option<String>,
    pub ac: Option<String>,
    pub smdp_address: Option<String>,
    pub matching_id: Option<String>,
    pub apn: Option<String>,
    pub apple_url: Option<String>,
    pub android_url: Option<String>,
    /// `cid:<content id>` of the QR code embedded in the message.
    pub qr_image: Option<String>,
}

impl InstallVars {
    /// From one eSIM; `content_id` names the inline QR image (see
    /// [`content_id`]). Without an activation code only the provider's links
    /// and the APN are known: there is nothing to draw or link to.
    pub fn from_esim(esim: &Esim, content_id: &str) -> InstallVars {
        let ac = esim.ac.clone();
        let (smdp_address, matching_id) = match ac.as_deref().and_then(split_ac) {
            Some((a, m)) => (Some(a), Some(m).filter(|m| !m.is_empty())),
            None => (None, None),
        };
        InstallVars {
            qr_code_url: esim.qr_code_url.clone(),
            short_url: esim.short_url.clone(),
            apple_url: ac.as_deref().map(|a| format!("{APPLE_SETUP}{}", encode(a))),
            android_url: ac
                .as_deref()
                .map(|a| format!("{ANDROID_SETUP}{}", encode(a))),
            qr_image: ac.as_ref().map(|_| format!("cid:{content_id}")),
            smdp_address,
            matching_id,
            apn: esim.apn.clone(),
            ac,
        }
    }

    /// The `install` object for the templates.
    pub fn vars(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The inline images the rendered HTML needs: the QR code when the HTML
    /// refers to `install.qrImage`, none otherwise (an image no part refers
    /// to would show as an attachment).
    pub fn inline_images(&self, html: &str) -> Result<Vec<InlineImage>, QrError> {
        images_for(self.ac.as_deref(), self.qr_image.as_deref(), html)
    }
}

/// The QR image an HTML part shows by `qr_image` (a `cid:` URL) for the
/// activation code `ac`; none when the HTML does not show it. The same
/// image for a sent email, a test send and a preview.
pub fn images_for(
    ac: Option<&str>,
    qr_image: Option<&str>,
    html: &str,
) -> Result<Vec<InlineImage>, QrError> {
    let (Some(url), Some(ac)) = (qr_image, ac) else {
        return Ok(Vec::new());
    };
    if !html.contains(url) {
        return Ok(Vec::new());
    }
    let id = url.trim_start_matches("cid:");
    Ok(vec![InlineImage::png(id, "esim-qr.png", qr::png(ac)?)])
}

/// [`images_for`] from a notice's template variables (`install.ac`, `install.qrImage`).
pub fn images_in_vars(vars: &Value, html: &str) -> Result<Vec<InlineImage>, QrError> {
    let install = &vars["install"];
    images_for(install["ac"].as_str(), install["qrImage"].as_str(), html)
}

/// `LPA:1$<address>$<matching id>` split; `None` for anything else. The
/// matching ID may be empty in the standard (then the phone asks the SM-DP+),
/// so only the address must be there; a trailing `$<OID>` or `$1` (the
/// confirmation-code flag) of the longer forms is not part of the ID.
pub fn split_ac(ac: &str) -> Option<(String, String)> {
    let rest = ac.trim().strip_prefix("LPA:1$")?;
    let mut parts = rest.split('$');
    let address = parts.next()?.trim();
    let matching = parts.next().unwrap_or("").trim();
    let valid_host = !address.is_empty()
        && address
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c));
    valid_host.then(|| (address.to_string(), matching.to_string()))
}

/// The activation code as one query value (its `:` and `$` encoded).
pub fn encode(ac: &str) -> String {
    crate::uri::encode_component(ac)
}

/// A Content-ID for the QR image of one activation code: the same on every
/// retry of the email (derived from the code, not random), revealing nothing
/// of it, and made of characters that need no escaping in `cid:` URLs or HTML.
pub fn content_id(ac: &str) -> String {
    let digest = hex::encode(Sha256::digest(ac.as_bytes()));
    format!("esim-qr-{}@esim-notify", &digest[..16])
}

/// `InstallVars` for a notice: its eSIM and the content ID of its own code.
impl From<&Esim> for InstallVars {
    fn from(esim: &Esim) -> InstallVars {
        let cid = content_id(esim.ac.as_deref().unwrap_or(""));
        InstallVars::from_esim(esim, &cid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AC: &str = "LPA:1$rsp-eu.redteamobile.com$43DE23C67EE747BCAD6B63E8B67B261F";

    fn esim(ac: Option<&str>) -> Esim {
        Esim {
            ac: ac.map(str::to_string),
            qr_code_url: Some("https://p.qrsim.net/x.png".into()),
            short_url: Some("https://p.qrsim.net/x".into()),
            apn: Some("drei.at".into()),
            ..Default::default()
        }
    }

    #[test]
    fn every_install_variable_from_one_activation_code() {
        let v = InstallVars::from_esim(&esim(Some(AC)), "qr@test");
        assert_eq!(v.ac.as_deref(), Some(AC));
        assert_eq!(v.smdp_address.as_deref(), Some("rsp-eu.redteamobile.com"));
        assert_eq!(
            v.matching_id.as_deref(),
            Some("43DE23C67EE747BCAD6B63E8B67B261F")
        );
        let encoded = "LPA%3A1%24rsp-eu.redteamobile.com%2443DE23C67EE747BCAD6B63E8B67B261F";
        assert_eq!(
            v.apple_url.as_deref(),
            Some(&*format!(
                "https://esimsetup.apple.com/esim_qrcode_provisioning?carddata={encoded}"
            ))
        );
        assert_eq!(
            v.android_url.as_deref(),
            Some(&*format!(
                "https://esimsetup.android.com/esim_qrcode_provisioning?carddata={encoded}"
            ))
        );
        assert_eq!(v.qr_image.as_deref(), Some("cid:qr@test"));
        let j = v.vars();
        for k in [
            "qrCodeUrl",
            "shortUrl",
            "ac",
            "smdpAddress",
            "matchingId",
            "apn",
            "appleUrl",
            "androidUrl",
            "qrImage",
        ] {
            assert!(j.get(k).is_some_and(|x| !x.is_null()), "{k}");
        }
    }

    #[test]
    fn a_malformed_code_keeps_ac_but_not_its_parts() {
        for bad in [
            "43DE23C67EE747BC",
            "LPA:1$",
            "LPA:2$host$id",
            "LPA:1$bad host$id",
        ] {
            let v = InstallVars::from_esim(&esim(Some(bad)), "qr@test");
            assert_eq!(v.ac.as_deref(), Some(bad));
            assert_eq!(v.smdp_address, None, "{bad}");
            assert_eq!(v.matching_id, None, "{bad}");
            assert!(v.apple_url.is_some());
        }
        // Longer SGP.22 forms: the matching ID stops at the next `$`.
        assert_eq!(
            split_ac("LPA:1$smdp.example.com$ABC-123$1.3.6.1.4.1.31746$1"),
            Some(("smdp.example.com".into(), "ABC-123".into()))
        );
        assert_eq!(
            split_ac("LPA:1$smdp.example.com:8443$"),
            Some(("smdp.example.com:8443".into(), String::new()))
        );
    }

    #[test]
    fn without_an_activation_code_there_is_nothing_to_install_with() {
        let v = InstallVars::from(&esim(None));
        assert_eq!(v.ac, None);
        assert_eq!(v.apple_url, None);
        assert_eq!(v.android_url, None);
        assert_eq!(v.qr_image, None);
        assert_eq!(v.short_url.as_deref(), Some("https://p.qrsim.net/x"));
        assert!(v.inline_images("<img src=\"cid:x\">").unwrap().is_empty());
    }

    #[test]
    fn the_qr_image_is_attached_only_when_the_html_uses_it() {
        let v = InstallVars::from(&esim(Some(AC)));
        let url = v.qr_image.clone().unwrap();
        assert!(v.inline_images("<p>no picture</p>").unwrap().is_empty());
        let images = v.inline_images(&format!("<img src=\"{url}\">")).unwrap();
        assert_eq!(images.len(), 1);
        assert_eq!(format!("cid:{}", images[0].content_id), url);
        assert!(images[0].data.starts_with(b"\x89PNG"));
    }

    #[test]
    fn content_ids_are_stable_and_need_no_escaping() {
        let a = content_id(AC);
        assert_eq!(a, content_id(AC));
        assert_ne!(a, content_id("LPA:1$rsp-eu.redteamobile.com$OTHER"));
        assert!(!a.contains("43DE23C6"));
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-@".contains(c)));
    }
}
