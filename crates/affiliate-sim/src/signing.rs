//! The two signatures: TOP's request signature (`sign_method=hmac-sha256`) and the postback
//! signature header.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The postback signature header.
pub const SIGNATURE_HEADER: &str = "x-affiliate-signature";

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
}

/// TOP's `hmac-sha256` signature of a request: every parameter except `sign` (and except those
/// with an empty name or value, which TOP's SDKs do not send), sorted by name (byte order),
/// concatenated as `name1value1name2value2…`, HMAC-SHA256 keyed with the app secret, in
/// uppercase hex.
pub fn top_sign<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>, app_secret: &str) -> String {
    let sorted: BTreeMap<&str, &str> =
        params.into_iter().filter(|(k, v)| *k != "sign" && !k.is_empty() && !v.is_empty()).collect();
    let mut mac = mac(app_secret.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    hex::encode_upper(mac.finalize().into_bytes())
}

/// Adds `sign` to `params` (replacing any), for clients and tests.
pub fn sign_params(params: &mut BTreeMap<String, String>, app_secret: &str) {
    let sign = top_sign(params.iter().map(|(k, v)| (k.as_str(), v.as_str())), app_secret);
    params.insert("sign".to_owned(), sign);
}

/// Whether `params` carry a correct `sign` (hex, either case; compared in constant time).
pub fn verify_top_sign(params: &BTreeMap<String, String>, app_secret: &str) -> bool {
    let Some(given) = params.get("sign").and_then(|s| hex::decode(s).ok()) else {
        return false;
    };
    let sorted = params.iter().filter(|(k, v)| k.as_str() != "sign" && !k.is_empty() && !v.is_empty());
    let mut mac = mac(app_secret.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac.verify_slice(&given).is_ok()
}

/// The `X-Affiliate-Signature` value for a postback body sent at Unix second `t`:
/// `t=<t>,v1=<lowercase hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn postback_signature(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = mac(secret.as_bytes());
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Why a postback signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PostbackSignatureError {
    /// The header is not `t=<int>,v1=<hex>`.
    #[error("malformed signature header")]
    Malformed,
    /// The MAC does not match the body.
    #[error("signature does not match")]
    Mismatch,
    /// `t` is further than the tolerance from now.
    #[error("signature timestamp outside the tolerance")]
    Stale,
}

/// Checks an `X-Affiliate-Signature` header against the raw body, and that its `t` is within
/// `tolerance_secs` of `now_secs` (real time, not the simulated clock). Returns `t`.
pub fn verify_postback_signature(
    secret: &str,
    header: &str,
    body: &[u8],
    now_secs: i64,
    tolerance_secs: i64,
) -> Result<i64, PostbackSignatureError> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => v1 = hex::decode(value).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return Err(PostbackSignatureError::Malformed);
    };
    let mut mac = mac(secret.as_bytes());
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&v1).map_err(|_| PostbackSignatureError::Mismatch)?;
    if (now_secs - t).abs() > tolerance_secs {
        return Err(PostbackSignatureError::Stale);
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_signature_sorts_names_and_skips_sign_and_empty_values() {
        let secret = "s3cret";
        let expected = {
            let mut mac = mac(secret.as_bytes());
            mac.update(b"app_keyk1methodm.xtimestamp2025-06-01 00:00:00");
            hex::encode_upper(mac.finalize().into_bytes())
        };
        let params = [
            ("timestamp", "2025-06-01 00:00:00"),
            ("method", "m.x"),
            ("sign", "whatever"),
            ("tk_status", ""),
            ("app_key", "k1"),
        ];
        assert_eq!(top_sign(params, secret), expected);

        let mut map: BTreeMap<String, String> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        sign_params(&mut map, secret);
        assert_eq!(map["sign"], expected);
        assert!(verify_top_sign(&map, secret));
        let lower = map["sign"].to_lowercase();
        map.insert("sign".into(), lower);
        assert!(verify_top_sign(&map, secret));
        assert!(!verify_top_sign(&map, "other"));
        map.insert("method".into(), "m.y".into());
        assert!(!verify_top_sign(&map, secret));
    }

    #[test]
    fn a_postback_signature_verifies_only_for_its_body_secret_and_time() {
        let header = postback_signature("k", 1_700_000_000, b"{}");
        assert!(header.starts_with("t=1700000000,v1="));
        assert_eq!(verify_postback_signature("k", &header, b"{}", 1_700_000_100, 300), Ok(1_700_000_000));
        assert_eq!(
            verify_postback_signature("k", &header, b"{ }", 1_700_000_000, 300),
            Err(PostbackSignatureError::Mismatch)
        );
        assert_eq!(
            verify_postback_signature("j", &header, b"{}", 1_700_000_000, 300),
            Err(PostbackSignatureError::Mismatch)
        );
        assert_eq!(
            verify_postback_signature("k", &header, b"{}", 1_700_001_000, 300),
            Err(PostbackSignatureError::Stale)
        );
        assert_eq!(verify_postback_signature("k", "v1=00", b"{}", 0, 300), Err(PostbackSignatureError::Malformed));
    }
}
