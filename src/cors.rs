//! CORS preflights (`bypass_cors_preflight`). A browser sends `OPTIONS` with `Origin` and
//! `Access-Control-Request-Method` before a cross-origin call, and never a credential with
//! it, so a route that requires a token would refuse every preflight and the browser would
//! never make the call.
//!
//! Off by default: an upstream whose handler ignores the method would run that handler on
//! an unauthenticated `OPTIONS`. When on, only a real preflight passes without a token: the
//! method is `OPTIONS` on every reading of the request (a method-override header or a
//! `_method` parameter, whatever its value, makes it no preflight, since an upstream may
//! read the request as that method), and `Origin` and `Access-Control-Request-Method` are
//! both there and non-empty. What refuses everyone (the `default: deny` where no route
//! matched, a deny rule without a condition) refuses its preflight too.

use crate::config::Config;
use crate::flow::Request;
use crate::policy::Action;
use crate::routing::{has_method_override, Selected};

/// Whether `req` is a CORS preflight, read every way the rules read it.
pub fn is_preflight(req: &Request<'_>) -> bool {
    let non_empty = |name: &str| {
        req.headers
            .get_bytes(name)
            .is_some_and(|v| !v.trim_ascii().is_empty())
    };
    req.method == "OPTIONS"
        && non_empty("origin")
        && non_empty("access-control-request-method")
        && !has_method_override(req.headers, req.method, req.path)
}

/// Whether the rules `selected` refuse a request whatever it carries: then a preflight is
/// decided by them like any request, and refused.
pub fn refused_whatever_the_token(cfg: &Config, selected: &Selected) -> bool {
    let default_refuses =
        selected.routes.contains(&None) && matches!(cfg.default_action, Action::Deny);
    let deny_rule_refuses = selected.denies.iter().any(|&i| {
        cfg.rules
            .get(i)
            .is_some_and(|r| matches!(&r.action, Action::DenyWhen(c) if c.check.is_none()))
    });
    default_refuses || deny_rule_refuses
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::HeaderSnapshot;

    fn preflight(method: &str, path: &str, headers: &[(&str, &str)]) -> bool {
        let headers = HeaderSnapshot::from_pairs(headers);
        is_preflight(&Request {
            method,
            authority: "api.example.com",
            path,
            headers: &headers,
            source: None,
        })
    }

    const ORIGIN: (&str, &str) = ("origin", "https://app.example.com");
    const ACRM: (&str, &str) = ("access-control-request-method", "POST");

    fn config(extra: &str) -> Result<Config, crate::config::ConfigError> {
        let jwks = crate::testkit::jwks_json();
        Config::from_json(
            format!(
                r#"{{"providers": [{{"name": "p", "issuer": "https://i", "audiences": "any",
                     "local_jwks": {{"inline": {jwks}}}}}]{extra}}}"#
            )
            .as_bytes(),
        )
    }

    #[test]
    fn the_switch_is_off_unless_asked_and_errors_name_it() {
        assert!(!config("").unwrap().bypass_cors_preflight);
        assert!(
            config(r#", "bypass_cors_preflight": true"#)
                .unwrap()
                .bypass_cors_preflight
        );
        let e = config(r#", "bypass_cors_preflight": "yes""#).unwrap_err();
        assert_eq!(e.path, "bypass_cors_preflight", "{e}");
    }

    #[test]
    fn a_browser_preflight_is_one() {
        assert!(preflight("OPTIONS", "/workflows", &[ORIGIN, ACRM]));
        assert!(preflight(
            "OPTIONS",
            "/workflows?x=1",
            &[
                ORIGIN,
                ACRM,
                ("access-control-request-headers", "authorization")
            ]
        ));
    }

    #[test]
    fn without_both_cors_headers_it_is_a_plain_options_request() {
        assert!(!preflight("OPTIONS", "/workflows", &[ACRM]));
        assert!(!preflight("OPTIONS", "/workflows", &[ORIGIN]));
        assert!(!preflight(
            "OPTIONS",
            "/workflows",
            &[("origin", " "), ACRM]
        ));
        assert!(!preflight(
            "OPTIONS",
            "/workflows",
            &[ORIGIN, ("access-control-request-method", "")]
        ));
    }

    #[test]
    fn only_options_on_every_reading() {
        for method in ["GET", "POST", "options", "Options", "OPTIONS "] {
            assert!(
                !preflight(method, "/workflows", &[ORIGIN, ACRM]),
                "{method}"
            );
        }
        // An override makes a second reading, whatever it names: an upstream may serve
        // the request as that method.
        for header in [
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
        ] {
            for value in ["DELETE", "OPTIONS"] {
                assert!(
                    !preflight("OPTIONS", "/workflows", &[ORIGIN, ACRM, (header, value)]),
                    "{header}: {value}"
                );
            }
        }
        assert!(!preflight(
            "OPTIONS",
            "/workflows?_method=DELETE",
            &[ORIGIN, ACRM]
        ));
        assert!(!preflight(
            "OPTIONS",
            "/workflows?%5Fmethod=OPTIONS",
            &[ORIGIN, ACRM]
        ));
    }
}
