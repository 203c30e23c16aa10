//! The wire format of Envoy's `verify_signature` foreign function (BoringSSL's
//! `EVP_DigestVerify` on a DER public key): the request and reply protobufs, and ECDSA
//! signatures re-encoded from JWS's raw `r||s` to DER. Pure; the call itself is in `host`.
//!
//! The two messages have four and two scalar fields, so they are written and read here
//! directly rather than through a protobuf crate that would double the filter's size.

/// A JWS ES256 signature (`r||s`, 64 bytes) as the DER `ECDSA-Sig-Value` BoringSSL
/// expects; `None` when it is not a well-formed signature at all.
pub fn es256_der(raw: &[u8]) -> Option<Vec<u8>> {
    let sig = p256::ecdsa::Signature::from_slice(raw).ok()?;
    Some(sig.to_der().as_bytes().to_vec())
}

/// `VerifySignatureArguments { hash_function = 1, public_key = 2, signature = 3, text = 4 }`.
pub fn encode_request(hash: &str, public_key_der: &[u8], signature: &[u8], text: &[u8]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(hash.len() + public_key_der.len() + signature.len() + text.len() + 16);
    for (field, bytes) in [
        (1u8, hash.as_bytes()),
        (2, public_key_der),
        (3, signature),
        (4, text),
    ] {
        out.push((field << 3) | 2); // length-delimited
        put_varint(&mut out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// `VerifySignatureResult { bool result = 1; string error = 2; }` -> `result`. Anything
/// unreadable counts as "not verified".
pub fn decode_result(bytes: &[u8]) -> bool {
    let mut result = false;
    let mut rest = bytes;
    while let Some((&tag, tail)) = rest.split_first() {
        rest = tail;
        let Some((value, tail)) = get_varint(rest) else {
            return false;
        };
        rest = tail;
        match (tag >> 3, tag & 7) {
            (1, 0) => result = value == 1,
            (_, 0) => {}
            (_, 2) => match usize::try_from(value).ok().and_then(|n| rest.get(n..)) {
                Some(tail) => rest = tail,
                None => return false,
            },
            _ => return false,
        }
    }
    result
}

fn get_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, bytes.get(i + 1..)?));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout() {
        let req = encode_request("sha256", &[1, 2], &[3], &[0u8; 200]);
        assert_eq!(&req[..8], &[0x0a, 6, b's', b'h', b'a', b'2', b'5', b'6']);
        assert_eq!(&req[8..12], &[0x12, 2, 1, 2]);
        assert_eq!(&req[12..15], &[0x1a, 1, 3]);
        // 200 needs a two-byte varint.
        assert_eq!(&req[15..18], &[0x22, 0xc8, 0x01]);
        assert_eq!(req.len(), 18 + 200);
    }

    #[test]
    fn reply_decoding() {
        assert!(decode_result(&[0x08, 0x01, 0x12, 0x00]));
        assert!(decode_result(&[0x08, 0x01]));
        assert!(!decode_result(&[0x08, 0x00, 0x12, 0x03, b'b', b'a', b'd']));
        assert!(!decode_result(&[0x12, 0x03, b'b', b'a', b'd']));
        assert!(!decode_result(&[]));
        assert!(!decode_result(&[0x08]));
        assert!(!decode_result(&[0x08, 0x01, 0x12, 0x09, b'x']));
        assert!(!decode_result(&[0x0d, 0, 0, 0, 0]));
    }

    #[test]
    fn es256_signatures_become_der() {
        let mut raw = [0u8; 64];
        raw[31] = 1;
        raw[63] = 2;
        assert_eq!(
            es256_der(&raw).unwrap(),
            vec![0x30, 6, 0x02, 1, 1, 0x02, 1, 2]
        );
        assert!(
            es256_der(&[0u8; 64]).is_none(),
            "r = s = 0 is not a signature"
        );
        assert!(es256_der(&[1u8; 63]).is_none());
    }
}
