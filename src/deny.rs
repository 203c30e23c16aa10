//! Denials -> the response the filter sends: status, RFC 6750 `WWW-Authenticate`, and a JSON
//! body with a stable code. Codes keep the meaning of the Auth Service codes users know
//! (AUTH_102 insufficient scope, AUTH_105 signature, AUTH_107 audience) and extend them.

use crate::verify::VerifyError;

/// Every reason the filter refuses a request. The code strings are a stable interface:
/// users grep logs and alert on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyCode {
    TokenMissing,
    TokenAmbiguous,
    InsufficientScope,
    IpNotAllowed,
    SignatureInvalid,
    AudienceInvalid,
    TokenMalformed,
    TokenExpired,
    TokenNotYetValid,
    IssuerInvalid,
    AlgorithmNotAllowed,
    KeyNotFound,
    ClaimInvalid,
    RouteDenied,
    AccessDenied,
    KeysUnavailable,
    KeysStale,
    TypeNotAccepted,
    NotPrepared,
    LifetimeTooLong,
    DenyRule,
}

impl DenyCode {
    pub const ALL: [DenyCode; 21] = [
        DenyCode::TokenMissing,
        DenyCode::TokenAmbiguous,
        DenyCode::InsufficientScope,
        DenyCode::IpNotAllowed,
        DenyCode::SignatureInvalid,
        DenyCode::AudienceInvalid,
        DenyCode::TokenMalformed,
        DenyCode::TokenExpired,
        DenyCode::TokenNotYetValid,
        DenyCode::IssuerInvalid,
        DenyCode::AlgorithmNotAllowed,
        DenyCode::KeyNotFound,
        DenyCode::ClaimInvalid,
        DenyCode::RouteDenied,
        DenyCode::AccessDenied,
        DenyCode::KeysUnavailable,
        DenyCode::KeysStale,
        DenyCode::TypeNotAccepted,
        DenyCode::NotPrepared,
        DenyCode::LifetimeTooLong,
        DenyCode::DenyRule,
    ];

    pub fn code(self) -> &'static str {
        match self {
            DenyCode::TokenMissing => "AUTH_100",
            DenyCode::InsufficientScope => "AUTH_102",
            DenyCode::IpNotAllowed => "AUTH_104",
            DenyCode::SignatureInvalid => "AUTH_105",
            DenyCode::AudienceInvalid => "AUTH_107",
            DenyCode::TokenMalformed => "AUTH_110",
            DenyCode::TokenExpired => "AUTH_111",
            DenyCode::TokenNotYetValid => "AUTH_112",
            DenyCode::IssuerInvalid => "AUTH_113",
            DenyCode::AlgorithmNotAllowed => "AUTH_114",
            DenyCode::KeyNotFound => "AUTH_115",
            DenyCode::ClaimInvalid => "AUTH_116",
            DenyCode::TokenAmbiguous => "AUTH_117",
            DenyCode::TypeNotAccepted => "AUTH_118",
            DenyCode::LifetimeTooLong => "AUTH_119",
            DenyCode::RouteDenied => "AUTH_120",
            DenyCode::AccessDenied => "AUTH_121",
            DenyCode::DenyRule => "AUTH_122",
            DenyCode::KeysUnavailable => "AUTH_130",
            DenyCode::KeysStale => "AUTH_131",
            DenyCode::NotPrepared => "AUTH_140",
        }
    }

    pub fn status(self) -> u32 {
        match self {
            DenyCode::TokenAmbiguous => 400,
            DenyCode::TokenMissing
            | DenyCode::SignatureInvalid
            | DenyCode::AudienceInvalid
            | DenyCode::TokenMalformed
            | DenyCode::TokenExpired
            | DenyCode::TokenNotYetValid
            | DenyCode::IssuerInvalid
            | DenyCode::AlgorithmNotAllowed
            | DenyCode::KeyNotFound
            | DenyCode::ClaimInvalid
            | DenyCode::TypeNotAccepted
            | DenyCode::LifetimeTooLong => 401,
            DenyCode::InsufficientScope
            | DenyCode::IpNotAllowed
            | DenyCode::RouteDenied
            | DenyCode::AccessDenied
            | DenyCode::DenyRule => 403,
            DenyCode::KeysUnavailable | DenyCode::KeysStale | DenyCode::NotPrepared => 503,
        }
    }

    /// The `error` of the JSON body (and of `WWW-Authenticate`, where RFC 6750 has one).
    fn error(self) -> &'static str {
        match self {
            DenyCode::TokenMissing => "unauthorized",
            DenyCode::TokenAmbiguous => "invalid_request",
            DenyCode::InsufficientScope => "insufficient_scope",
            DenyCode::RouteDenied
            | DenyCode::AccessDenied
            | DenyCode::IpNotAllowed
            | DenyCode::DenyRule => "access_denied",
            DenyCode::KeysUnavailable | DenyCode::KeysStale | DenyCode::NotPrepared => {
                "temporarily_unavailable"
            }
            _ => "invalid_token",
        }
    }

    /// The fixed, human-readable message. Never built from the token, so nothing a client
    /// sent is echoed back.
    pub fn message(self) -> &'static str {
        match self {
            DenyCode::TokenMissing => "a bearer token is required",
            DenyCode::InsufficientScope => "the token lacks a required scope",
            DenyCode::SignatureInvalid => "the token signature is invalid",
            DenyCode::AudienceInvalid => "the token audience is not accepted",
            DenyCode::TokenMalformed => "the token is malformed",
            DenyCode::TokenExpired => "the token has expired",
            DenyCode::TokenNotYetValid => "the token is not valid yet",
            DenyCode::IssuerInvalid => "the token issuer is not accepted",
            DenyCode::AlgorithmNotAllowed => "the token signing algorithm is not allowed",
            DenyCode::KeyNotFound => "no key is known for the token",
            DenyCode::ClaimInvalid => "a required claim is missing or malformed",
            DenyCode::TypeNotAccepted => "the token type is not accepted",
            DenyCode::TokenAmbiguous => "the request carries more than one token",
            DenyCode::RouteDenied => "this route is not open to any caller",
            DenyCode::AccessDenied => "the caller is not allowed on this route",
            DenyCode::IpNotAllowed => "the caller may not call from this address",
            DenyCode::KeysUnavailable => "the keys to verify tokens are not available",
            DenyCode::KeysStale => "the keys to verify tokens are too old to trust",
            DenyCode::NotPrepared => "the request could not be prepared for the upstream",
            DenyCode::LifetimeTooLong => "the token's lifetime is longer than accepted",
            DenyCode::DenyRule => "a deny rule refuses this request",
        }
    }
}

impl From<&VerifyError> for DenyCode {
    fn from(e: &VerifyError) -> DenyCode {
        match e {
            VerifyError::Malformed => DenyCode::TokenMalformed,
            VerifyError::AlgNotAllowed { .. } => DenyCode::AlgorithmNotAllowed,
            VerifyError::UnknownKid { .. } | VerifyError::NoFittingKey => DenyCode::KeyNotFound,
            VerifyError::BadSignature => DenyCode::SignatureInvalid,
            VerifyError::MalformedClaims | VerifyError::MissingClaim { .. } => {
                DenyCode::ClaimInvalid
            }
            VerifyError::Expired => DenyCode::TokenExpired,
            VerifyError::NotYetValid => DenyCode::TokenNotYetValid,
            VerifyError::IssuerMismatch => DenyCode::IssuerInvalid,
            VerifyError::AudienceMismatch => DenyCode::AudienceInvalid,
            VerifyError::TypeNotAccepted => DenyCode::TypeNotAccepted,
            VerifyError::LifetimeTooLong => DenyCode::LifetimeTooLong,
        }
    }
}

/// A refusal, with what the response needs beyond the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub code: DenyCode,
    /// For `InsufficientScope`: the scopes the route requires (all of them, as RFC 6750's
    /// `scope` attribute lists what a new token must carry).
    pub required_scopes: Vec<String>,
}

impl Denial {
    pub fn new(code: DenyCode) -> Denial {
        Denial {
            code,
            required_scopes: Vec::new(),
        }
    }
}

/// A complete local reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u32,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

pub fn render(d: &Denial, realm: &str) -> Reply {
    let code = d.code;
    let body = serde_json::json!({
        "error": code.error(),
        "code": code.code(),
        "message": code.message(),
    })
    .to_string();
    let mut headers = vec![
        ("content-type", "application/json".to_string()),
        ("cache-control", "no-store".to_string()),
    ];
    if let Some(challenge) = challenge(d, realm) {
        headers.push(("www-authenticate", challenge));
    }
    if code.status() == 503 {
        headers.push(("retry-after", "5".to_string()));
    }
    Reply {
        status: code.status(),
        headers,
        body,
    }
}

/// RFC 6750 §3: no error attribute when no token was sent; `invalid_token` with a
/// description for a bad one; `insufficient_scope` with the scopes a token needs.
fn challenge(d: &Denial, realm: &str) -> Option<String> {
    let code = d.code;
    match code {
        DenyCode::TokenMissing => Some(format!("Bearer realm=\"{realm}\"")),
        // RFC 6750 §3.1: more than one method of sending a token is an invalid request.
        DenyCode::TokenAmbiguous => Some(format!(
            "Bearer realm=\"{realm}\", error=\"invalid_request\", error_description=\"{}\"",
            code.message()
        )),
        DenyCode::InsufficientScope => Some(format!(
            "Bearer realm=\"{realm}\", error=\"insufficient_scope\", error_description=\"{}\", scope=\"{}\"",
            code.message(),
            d.required_scopes.join(" ")
        )),
        DenyCode::RouteDenied
        | DenyCode::AccessDenied
        | DenyCode::IpNotAllowed
        | DenyCode::KeysUnavailable
        | DenyCode::KeysStale => None,
        _ => Some(format!(
            "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{}\"",
            code.message()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(r: &'a Reply, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn missing_token_has_no_error_attribute() {
        let r = render(&Denial::new(DenyCode::TokenMissing), "api");
        assert_eq!(r.status, 401);
        assert_eq!(header(&r, "www-authenticate"), Some("Bearer realm=\"api\""));
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["code"], "AUTH_100");
        assert_eq!(body["error"], "unauthorized");
    }

    #[test]
    fn insufficient_scope_lists_required_scopes() {
        let d = Denial {
            code: DenyCode::InsufficientScope,
            required_scopes: vec!["a:read".into(), "b:write".into()],
        };
        let r = render(&d, "api");
        assert_eq!(r.status, 403);
        let h = header(&r, "www-authenticate").unwrap();
        assert!(h.contains("error=\"insufficient_scope\""), "{h}");
        assert!(h.ends_with("scope=\"a:read b:write\""), "{h}");
    }

    #[test]
    fn every_code_is_unique_and_renders_valid_json() {
        let mut seen = std::collections::HashSet::new();
        for c in DenyCode::ALL {
            assert!(seen.insert(c.code()), "duplicate {}", c.code());
            let r = render(&Denial::new(c), "r");
            let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(body["code"], c.code());
            assert!(crate::schema::is_quotable(c.message()));
            match c.status() {
                401 => assert!(header(&r, "www-authenticate").is_some()),
                503 => assert!(header(&r, "retry-after").is_some()),
                _ => {}
            }
        }
    }

    #[test]
    fn two_tokens_are_an_invalid_request() {
        let r = render(&Denial::new(DenyCode::TokenAmbiguous), "api");
        assert_eq!(r.status, 400);
        let h = header(&r, "www-authenticate").unwrap();
        assert!(h.contains("error=\"invalid_request\""), "{h}");
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(
            (&body["code"], &body["error"]),
            (&"AUTH_117".into(), &"invalid_request".into())
        );
    }

    #[test]
    fn invalid_token_challenge() {
        let r = render(&Denial::new(DenyCode::TokenExpired), "api");
        assert_eq!(
            header(&r, "www-authenticate"),
            Some("Bearer realm=\"api\", error=\"invalid_token\", error_description=\"the token has expired\"")
        );
    }
}
