//! The client address that source-IP bindings check.
//!
//! Envoy's `source.address` is the TCP peer only when its HTTP connection manager says so:
//! without `use_remote_address: true` (the default), or with `xff_num_trusted_hops` above
//! zero, Envoy takes it from `X-Forwarded-For`, which any client can write. An address
//! Envoy parsed from a header has no port (it reads `10.0.1.5:0`), while a real peer always
//! has one; that is how the default [`ClientAddressFrom::Peer`] tells them apart and
//! refuses to trust the first.

use std::net::{IpAddr, SocketAddr};

use crate::headers::HeaderSnapshot;

/// Where the client address comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAddressFrom {
    /// The TCP peer Envoy reports; an address it took from a header is not trusted.
    #[default]
    Peer,
    /// `X-Forwarded-For` as it reaches the filter: the `trusted_hops`-th address from its
    /// right end, the leftmost one written by a proxy the operator trusts.
    ForwardedFor { trusted_hops: usize },
}

/// The client address, or `None` when it cannot be known (then every caller a binding
/// names is refused).
pub fn client_address(
    from: ClientAddressFrom,
    source_property: Option<&str>,
    headers: &HeaderSnapshot,
) -> Option<IpAddr> {
    match from {
        ClientAddressFrom::Peer => {
            let peer: SocketAddr = source_property?.parse().ok()?;
            (peer.port() != 0).then_some(peer.ip())
        }
        ClientAddressFrom::ForwardedFor { trusted_hops } => {
            let joined: Vec<String> = headers.get_all("x-forwarded-for").collect();
            let joined = joined.join(",");
            let hops: Vec<&str> = joined
                .split(',')
                .map(|h| h.trim_matches([' ', '\t']))
                .collect();
            let at = hops.len().checked_sub(trusted_hops)?;
            parse_hop(hops.get(at)?)
        }
    }
}

/// An `X-Forwarded-For` entry: an IP, `ip:port` or `[v6]:port`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(values: &[&str]) -> HeaderSnapshot {
        let pairs: Vec<(&str, &str)> = values.iter().map(|v| ("x-forwarded-for", *v)).collect();
        HeaderSnapshot::from_pairs(&pairs)
    }

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    #[test]
    fn the_peer_is_trusted_only_with_a_port() {
        let none = HeaderSnapshot::default();
        let peer = ClientAddressFrom::Peer;
        assert_eq!(
            client_address(peer, Some("10.0.1.5:40000"), &none),
            ip("10.0.1.5")
        );
        assert_eq!(client_address(peer, Some("[::1]:40000"), &none), ip("::1"));
        // What Envoy reports when it took the address from X-Forwarded-For.
        assert_eq!(client_address(peer, Some("10.0.1.5:0"), &none), None);
        assert_eq!(client_address(peer, Some("10.0.1.5"), &none), None);
        assert_eq!(client_address(peer, Some("garbage"), &none), None);
        assert_eq!(client_address(peer, None, &none), None);
        // The peer mode never reads the header.
        let h = xff(&["10.0.1.5"]);
        assert_eq!(
            client_address(peer, Some("127.0.0.1:5"), &h),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn forwarded_for_counts_trusted_hops_from_the_right() {
        let one = ClientAddressFrom::ForwardedFor { trusted_hops: 1 };
        let two = ClientAddressFrom::ForwardedFor { trusted_hops: 2 };
        let h = xff(&["10.0.1.5, 192.0.2.1"]);
        assert_eq!(client_address(one, None, &h), ip("192.0.2.1"));
        assert_eq!(client_address(two, None, &h), ip("10.0.1.5"));
        // Repeated headers are one list, in order.
        let h = xff(&["10.0.1.5", "192.0.2.1:443"]);
        assert_eq!(client_address(one, None, &h), ip("192.0.2.1"));
        // Fewer hops than trusted, or an entry that is no address: unknown.
        assert_eq!(client_address(two, None, &xff(&["10.0.1.5"])), None);
        assert_eq!(client_address(one, None, &HeaderSnapshot::default()), None);
        assert_eq!(client_address(one, None, &xff(&["unknown"])), None);
        assert_eq!(
            client_address(one, None, &xff(&["[2001:db8::1]:80"])),
            ip("2001:db8::1")
        );
    }
}
