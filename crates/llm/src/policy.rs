//! Outbound URL policy (R-PROV-5): provider URLs are admin input, and the server fetching them is
//! a classic SSRF vector. Link-local and cloud metadata addresses are always refused; loopback and
//! private ranges only when the admin allows them (local model servers need that).
//!
//! The check runs twice: on save ([`UrlPolicy::check`]) for a clear error, and at connect time in
//! the DNS resolver of [`crate::HttpClient`], so a name that resolves differently later (DNS
//! rebinding) still cannot reach a refused address.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

use crate::LlmError;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UrlPolicy {
    pub allow_private: bool,
}

/// Why an address may not be contacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddressClass {
    /// Never reachable: link-local, metadata, unspecified, multicast, broadcast.
    Forbidden(&'static str),
    /// Reachable only with `allow_private`.
    Private(&'static str),
    Public,
}

/// The resolver's refusal; found again in reqwest's error chain to become [`LlmError::UrlRefused`].
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to refused addresses ({reason})")]
pub(crate) struct AddressRefused {
    host: String,
    reason: String,
}

impl UrlPolicy {
    pub fn new(allow_private: bool) -> Self {
        UrlPolicy { allow_private }
    }

    /// Validates a provider URL, resolving its host name: for saving a provider and for a clear
    /// error before any request is sent.
    pub async fn check(&self, url: &Url) -> Result<(), LlmError> {
        self.check_literal(url)?;
        if let Some(Host::Domain(domain)) = url.host() {
            let port = url.port_or_known_default().unwrap_or(80);
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((domain, port))
                .await
                .map_err(|e| LlmError::Connect(format!("cannot resolve {domain}: {e}")))?
                .collect();
            if addrs.is_empty() {
                return Err(LlmError::Connect(format!("cannot resolve {domain}")));
            }
            // Every address must pass: the connection may use any of them.
            for addr in addrs {
                self.check_ip(addr.ip()).map_err(|reason| {
                    LlmError::UrlRefused(format!("{domain} resolves to {reason}"))
                })?;
            }
        }
        Ok(())
    }

    /// The checks that need no DNS: scheme, and the host when it is an IP literal (reqwest never
    /// asks the resolver about those).
    pub fn check_literal(&self, url: &Url) -> Result<(), LlmError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(LlmError::UrlRefused(format!(
                "scheme {:?} is not http or https",
                url.scheme()
            )));
        }
        match url.host() {
            None => Err(LlmError::UrlRefused("URL has no host".into())),
            Some(Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip)).map_err(LlmError::UrlRefused),
            Some(Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip)).map_err(LlmError::UrlRefused),
            Some(Host::Domain(_)) => Ok(()),
        }
    }

    pub fn is_allowed(&self, ip: IpAddr) -> bool {
        self.check_ip(ip).is_ok()
    }

    fn check_ip(&self, ip: IpAddr) -> Result<(), String> {
        match classify(ip) {
            AddressClass::Public => Ok(()),
            AddressClass::Private(_) if self.allow_private => Ok(()),
            AddressClass::Private(what) => Err(format!(
                "{ip}, a {what} address (private addresses are not allowed)"
            )),
            AddressClass::Forbidden(what) => Err(format!("{ip}, a {what} address")),
        }
    }

    pub(crate) fn resolver(self) -> Arc<PolicyResolver> {
        Arc::new(PolicyResolver { policy: self })
    }
}

fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped().or_else(|| nat64_embedded(v6)) {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

/// `64:ff9b::/96` reaches the embedded IPv4 address through a NAT64 gateway.
fn nat64_embedded(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let segments = ip.segments();
    (segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0]).then(|| {
        let [.., a, b, c, d] = ip.octets();
        Ipv4Addr::new(a, b, c, d)
    })
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, ..] = ip.octets();
    if ip == Ipv4Addr::new(100, 100, 100, 200) {
        // Alibaba Cloud's metadata service sits inside the CGNAT range.
        AddressClass::Forbidden("cloud metadata")
    } else if ip.is_link_local() {
        // Includes 169.254.169.254, the AWS/GCP/Azure metadata service.
        AddressClass::Forbidden("link-local")
    } else if a == 0 {
        AddressClass::Forbidden("unspecified")
    } else if ip.is_multicast() {
        AddressClass::Forbidden("multicast")
    } else if ip.is_broadcast() {
        AddressClass::Forbidden("broadcast")
    } else if ip.is_loopback() {
        AddressClass::Private("loopback")
    } else if ip.is_private() {
        AddressClass::Private("private")
    } else if a == 100 && (64..128).contains(&b) {
        AddressClass::Private("shared (CGNAT)")
    } else {
        AddressClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let first = ip.segments()[0];
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        AddressClass::Forbidden("cloud metadata")
    } else if ip.is_unspecified() {
        AddressClass::Forbidden("unspecified")
    } else if first & 0xffc0 == 0xfe80 {
        AddressClass::Forbidden("link-local")
    } else if ip.is_multicast() {
        AddressClass::Forbidden("multicast")
    } else if ip.is_loopback() {
        AddressClass::Private("loopback")
    } else if first & 0xfe00 == 0xfc00 {
        AddressClass::Private("unique local")
    } else {
        AddressClass::Public
    }
}

/// Resolves with the system resolver, then drops every address the policy refuses.
pub(crate) struct PolicyResolver {
    policy: UrlPolicy,
}

impl fmt::Debug for PolicyResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyResolver")
            .field("policy", &self.policy)
            .finish()
    }
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut reasons = Vec::new();
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| match policy.check_ip(addr.ip()) {
                    Ok(()) => true,
                    Err(reason) => {
                        reasons.push(reason);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() && !reasons.is_empty() {
                tracing::warn!(%host, "outbound connection refused by URL policy");
                return Err(Box::new(AddressRefused {
                    host,
                    reason: reasons.join("; "),
                })
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(policy: UrlPolicy, ip: &str) -> bool {
        !policy.is_allowed(ip.parse().unwrap())
    }

    #[test]
    fn metadata_and_link_local_always_refused() {
        let open = UrlPolicy::new(true);
        for ip in [
            "169.254.169.254",
            "169.254.1.1",
            "100.100.100.200",
            "fd00:ec2::254",
            "fe80::1",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "ff02::1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "255.255.255.255",
        ] {
            assert!(refused(open, ip), "{ip} must be refused");
        }
    }

    #[test]
    fn private_ranges_depend_on_the_setting() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "::1",
            "fd12::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(
                refused(UrlPolicy::new(false), ip),
                "{ip} refused by default"
            );
            assert!(
                !refused(UrlPolicy::new(true), ip),
                "{ip} allowed when private is allowed"
            );
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in ["1.1.1.1", "2606:4700::1111", "172.32.0.1", "100.128.0.1"] {
            assert!(!refused(UrlPolicy::new(false), ip), "{ip}");
        }
    }
}
