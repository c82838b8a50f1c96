//! A provider's public keys: a JSON Web Key Set (RFC 7517) parsed into keys
//! ready for `jsonwebtoken`, each with the algorithms it may verify. RSA
//! keys verify RS256/384/512 and PS256/384/512, EC P-256 keys ES256, P-384
//! keys ES384, Ed25519 keys EdDSA; a key's own `alg` narrows that to one.
//! Symmetric (`oct`) keys, encryption keys (`use: enc`) and key types or
//! curves remora cannot verify with are skipped, so a JWKS can never make an
//! HMAC key of a public one (no algorithm confusion). EC coordinates written
//! without their leading zero bytes are padded to their full size first.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

/// Every algorithm a JWKS key can verify; the first six are RSA's.
pub(super) const VERIFIABLE: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];
const RSA: &[Algorithm] = VERIFIABLE.split_at(6).0;

/// One verification key.
pub(super) struct Key {
    kid: Option<String>,
    algorithms: Vec<Algorithm>,
    pub(super) decoding: DecodingKey,
}

/// The usable keys of one JWKS document.
#[derive(Default)]
pub(super) struct KeySet {
    keys: Vec<Key>,
}

/// Which keys may verify a token.
pub(super) enum Lookup<'a> {
    Keys(Vec<&'a Key>),
    /// A key has the token's `kid`, but not for the token's algorithm.
    WrongAlgorithm,
    /// No key has the token's `kid` (or, without a `kid`, the set is empty).
    Unknown,
}

#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

impl KeySet {
    /// The usable keys of a JWKS document and how many were skipped; an
    /// error when it is not a JWKS at all.
    pub(super) fn parse(json: &[u8]) -> Result<(KeySet, usize), String> {
        let document: Document = serde_json::from_slice(json)
            .map_err(|error| format!("not a JWKS document: {error}"))?;
        let total = document.keys.len();
        let keys: Vec<Key> = (document.keys.into_iter())
            .filter_map(|mut value| {
                pad_ec_coordinates(&mut value);
                serde_json::from_value::<Jwk>(value).ok()
            })
            .filter_map(|jwk| usable(&jwk))
            .collect();
        let skipped = total - keys.len();
        Ok((KeySet { keys }, skipped))
    }

    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The keys that may verify a token signed with `alg`, with key id `kid`.
    pub(super) fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Lookup<'_> {
        let named: Vec<&Key> = match kid {
            Some(kid) => (self.keys.iter())
                .filter(|key| key.kid.as_deref() == Some(kid))
                .collect(),
            None => self.keys.iter().collect(),
        };
        if named.is_empty() {
            return Lookup::Unknown;
        }
        let usable: Vec<&Key> = (named.into_iter())
            .filter(|key| key.algorithms.contains(&alg))
            .collect();
        if usable.is_empty() {
            Lookup::WrongAlgorithm
        } else {
            Lookup::Keys(usable)
        }
    }
}

/// Pads an EC key's `x` and `y` to the full size of its curve's coordinates.
/// RFC 7518 §6.2.1.2 requires that size, but some issuers write them as
/// minimal integers, without leading zero bytes (PyJWT 2.6, Debian
/// bookworm's, does: one key in about 128), and `jsonwebtoken` would then
/// make a wrong point of them, so that every token the key signed failed.
/// The value is the same; verifiers that read the coordinates as integers
/// (Envoy's, through BoringSSL) accept them too.
fn pad_ec_coordinates(jwk: &mut serde_json::Value) {
    let size = match (jwk["kty"].as_str(), jwk["crv"].as_str()) {
        (Some("EC"), Some("P-256")) => 32,
        (Some("EC"), Some("P-384")) => 48,
        _ => return,
    };
    for coordinate in ["x", "y"] {
        let Some(Ok(bytes)) = jwk[coordinate]
            .as_str()
            .map(|text| URL_SAFE_NO_PAD.decode(text))
        else {
            continue;
        };
        if bytes.len() < size {
            let mut padded = vec![0; size - bytes.len()];
            padded.extend_from_slice(&bytes);
            jwk[coordinate] = URL_SAFE_NO_PAD.encode(padded).into();
        }
    }
}

/// The key of `jwk` with the algorithms it verifies, or `None` when remora
/// cannot or must not verify signatures with it.
fn usable(jwk: &Jwk) -> Option<Key> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let by_type: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => RSA,
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
            _ => return None,
        },
        AlgorithmParameters::OctetKey(_) => return None,
    };
    let algorithms = match jwk.common.key_algorithm {
        None => by_type.to_vec(),
        Some(pinned) => {
            let pinned: Algorithm = pinned.to_string().parse().ok()?;
            by_type.contains(&pinned).then(|| vec![pinned])?
        }
    };
    Some(Key {
        kid: jwk.common.key_id.clone(),
        algorithms,
        decoding: DecodingKey::from_jwk(jwk).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_N: &str = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";

    fn rsa(extra: &str) -> String {
        format!(r#"{{"kty":"RSA","n":"{RSA_N}","e":"AQAB"{extra}}}"#)
    }

    #[test]
    fn symmetric_encryption_and_unknown_keys_are_skipped() {
        let document = format!(
            r#"{{"keys":[{},{},{{"kty":"oct","k":"c2VjcmV0","kid":"hmac"}},{},{{"kty":"XYZ"}}]}}"#,
            rsa(r#","kid":"a""#),
            rsa(r#","kid":"enc","use":"enc""#),
            r#"{"kty":"EC","crv":"P-521","x":"AA","y":"AA","kid":"p521"}"#,
        );
        let (set, skipped) = KeySet::parse(document.as_bytes()).unwrap();
        assert_eq!((set.len(), skipped), (1, 4));
        assert!(matches!(
            set.lookup(Some("hmac"), Algorithm::HS256),
            Lookup::Unknown
        ));
        assert!(matches!(
            set.lookup(Some("a"), Algorithm::HS256),
            Lookup::WrongAlgorithm
        ));
        assert!(
            matches!(set.lookup(Some("a"), Algorithm::PS256), Lookup::Keys(keys) if keys.len() == 1)
        );
    }

    #[test]
    fn a_keys_alg_pins_it_to_that_algorithm() {
        let document = format!(r#"{{"keys":[{}]}}"#, rsa(r#","kid":"a","alg":"RS256""#));
        let (set, _) = KeySet::parse(document.as_bytes()).unwrap();
        assert!(matches!(
            set.lookup(Some("a"), Algorithm::RS256),
            Lookup::Keys(_)
        ));
        assert!(matches!(
            set.lookup(Some("a"), Algorithm::PS256),
            Lookup::WrongAlgorithm
        ));
        assert!(matches!(
            set.lookup(Some("b"), Algorithm::RS256),
            Lookup::Unknown
        ));
        assert!(matches!(
            set.lookup(None, Algorithm::RS256),
            Lookup::Keys(_)
        ));
    }

    #[test]
    fn ec_coordinates_without_leading_zeros_are_padded_to_their_full_size() {
        let short = URL_SAFE_NO_PAD.encode([7u8; 31]);
        let full = URL_SAFE_NO_PAD.encode([9u8; 48]);
        let mut p256 = serde_json::json!({"kty": "EC", "crv": "P-256", "x": short, "y": short});
        pad_ec_coordinates(&mut p256);
        let x = URL_SAFE_NO_PAD.decode(p256["x"].as_str().unwrap()).unwrap();
        assert_eq!(x.len(), 32);
        assert_eq!((x[0], x[1], x[31]), (0, 7, 7));
        let mut p384 = serde_json::json!({"kty": "EC", "crv": "P-384", "x": short, "y": full});
        pad_ec_coordinates(&mut p384);
        let x = URL_SAFE_NO_PAD.decode(p384["x"].as_str().unwrap()).unwrap();
        assert_eq!(x.len(), 48);
        assert_eq!(&x[..17], &[0; 17]);
        assert_eq!(p384["y"], full, "a full-size coordinate is left as it is");
        let mut rsa = serde_json::json!({"kty": "RSA", "x": short});
        pad_ec_coordinates(&mut rsa);
        assert_eq!(rsa["x"], short, "not an EC key");
    }

    #[test]
    fn a_document_without_keys_is_an_error() {
        assert!(KeySet::parse(b"{\"kid\":\"x\"}").is_err());
        assert!(KeySet::parse(b"not json").is_err());
    }
}
