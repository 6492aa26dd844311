//! The connection- and TLS-level labels of a service port (`SWITCHYARD_{n}_…`): the PROXY
//! protocol to its backends, TLS passthrough by SNI, TLS to its backends, and client
//! certificates on its vhosts. Read for one port by `compile`; a value that does not parse
//! skips the port (each of these changes what the backend or the client is promised, so a
//! silent default would be the wrong one).

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use super::Mode;
use super::known_labels::PortKeys;

/// The PROXY protocol version sent to a port's backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyVersion {
    V1,
    V2,
}

/// TLS from switchyard to the backends (`SWITCHYARD_{n}_BACKEND_TLS=true`). The files are read
/// by the proxy (compile reads no file); one it cannot use fails the requests with 502.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct BackendTls {
    /// PEM CA bundle the backends' certificates are verified against
    /// (`SWITCHYARD_{n}_BACKEND_TLS_CA`, default: the system bundle).
    pub ca: PathBuf,
    /// The name sent as SNI and verified (`SWITCHYARD_{n}_BACKEND_TLS_SNI`); `None`: the
    /// backend's IP address is verified and no SNI is sent.
    pub server_name: Option<String>,
    /// A client certificate chain and key (PEM) presented to the backends
    /// (`SWITCHYARD_{n}_BACKEND_TLS_CERT` and `_KEY`, both or neither).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// The system's CA bundle (Debian and derivatives).
pub const SYSTEM_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EdgeLabels {
    /// `SWITCHYARD_{n}_PROXY_PROTOCOL=v1|v2`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyVersion>,
    /// `SWITCHYARD_{n}_TLS_PASSTHROUGH=true`: TLS connections on the HTTPS listeners whose SNI
    /// names one of the port's vhosts go to its backends as they are.
    pub tls_passthrough: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_tls: Option<Arc<BackendTls>>,
    /// `SWITCHYARD_{n}_CLIENT_CA`: a PEM CA bundle; HTTPS clients of the port's vhosts must
    /// present a certificate it verifies.
    pub client_ca: Option<PathBuf>,
}

/// The label names read here, after `SWITCHYARD_{n}_`.
pub const LABELS: &[&str] = &[
    "PROXY_PROTOCOL",
    "TLS_PASSTHROUGH",
    "BACKEND_TLS",
    "BACKEND_TLS_CA",
    "BACKEND_TLS_SNI",
    "BACKEND_TLS_CERT",
    "BACKEND_TLS_KEY",
    "CLIENT_CA",
];

/// The labels of port `n`. `vhosts` are the port's (passthrough and client certificates are
/// per vhost, so they need one).
pub fn read(
    keys: &PortKeys<'_>,
    n: usize,
    mode: Mode,
    has_vhosts: bool,
) -> Result<EdgeLabels, String> {
    let prefix = super::known_labels::switchyard_prefix(n);
    // The port's `SWITCHYARD_{n}_…` labels (rest of the key, value), looked up by suffix (no
    // key built per lookup); without any, the port has none of these settings.
    let mine = &keys.own;
    if mine.is_empty() {
        return Ok(EdgeLabels::default());
    }
    let get = |key: &str| {
        mine.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    };
    let flag = |key: &str| -> Result<bool, String> {
        match get(key).map(str::to_ascii_lowercase).as_deref() {
            None | Some("false" | "0" | "no") => Ok(false),
            Some("true" | "1" | "yes") => Ok(true),
            Some(other) => Err(format!("{prefix}{key}={other:?}: expected true or false")),
        }
    };
    let path = |key: &str| -> Result<Option<PathBuf>, String> {
        match get(key) {
            None => Ok(None),
            Some(p) if p.starts_with('/') && !p.contains('\0') => Ok(Some(PathBuf::from(p))),
            Some(p) => Err(format!(
                "{prefix}{key}={p:?}: expected an absolute file path"
            )),
        }
    };
    let proxy_protocol = match get("PROXY_PROTOCOL")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None => None,
        Some("v1" | "1") => Some(ProxyVersion::V1),
        Some("v2" | "2") => Some(ProxyVersion::V2),
        Some(other) => {
            return Err(format!(
                "{prefix}PROXY_PROTOCOL={other:?}: expected v1 or v2"
            ));
        }
    };
    let tls_passthrough = flag("TLS_PASSTHROUGH")?;
    if tls_passthrough && !has_vhosts {
        return Err(format!(
            "{prefix}TLS_PASSTHROUGH needs HAPROXY_{n}_VHOST: passthrough routes by the TLS \
             server name"
        ));
    }
    if tls_passthrough
        && keys.acted_on[const { super::known_labels::acted_on_slot("PATH") }].is_some()
    {
        return Err(format!(
            "{prefix}TLS_PASSTHROUGH with HAPROXY_{n}_PATH: a passed-through connection is \
             routed by its server name alone, no path is seen"
        ));
    }
    let backend_tls = flag("BACKEND_TLS")?;
    let ca = path("BACKEND_TLS_CA")?;
    let server_name = match get("BACKEND_TLS_SNI") {
        None => None,
        Some(name) => match rustls_pki_types::ServerName::try_from(name) {
            Ok(rustls_pki_types::ServerName::DnsName(_)) => Some(name.to_ascii_lowercase()),
            _ => {
                return Err(format!(
                    "{prefix}BACKEND_TLS_SNI={name:?}: expected a DNS name"
                ));
            }
        },
    };
    let client_cert = match (path("BACKEND_TLS_CERT")?, path("BACKEND_TLS_KEY")?) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => {
            return Err(format!(
                "{prefix}BACKEND_TLS_CERT and {prefix}BACKEND_TLS_KEY go together"
            ));
        }
    };
    let tls_settings = ca.is_some() || server_name.is_some() || client_cert.is_some();
    if tls_settings && !backend_tls {
        return Err(format!(
            "{prefix}BACKEND_TLS_* settings without {prefix}BACKEND_TLS=true: the backends \
             would be spoken to in the clear"
        ));
    }
    if backend_tls && tls_passthrough {
        return Err(format!(
            "{prefix}BACKEND_TLS and {prefix}TLS_PASSTHROUGH: a passed-through connection is \
             the client's TLS already"
        ));
    }
    if backend_tls && mode != Mode::Http {
        return Err(format!(
            "{prefix}BACKEND_TLS needs HAPROXY_{n}_MODE=http (TLS to backends is made for HTTP \
             requests); the port is not served rather than served in the clear"
        ));
    }
    let backend_tls = backend_tls.then(|| {
        Arc::new(BackendTls {
            ca: ca.unwrap_or_else(|| PathBuf::from(SYSTEM_CA)),
            server_name,
            client_cert,
        })
    });
    let client_ca = path("CLIENT_CA")?;
    if client_ca.is_some() && !has_vhosts {
        return Err(format!(
            "{prefix}CLIENT_CA needs HAPROXY_{n}_VHOST: client certificates are asked per vhost \
             on the HTTPS listeners"
        ));
    }
    if client_ca.is_some() && tls_passthrough {
        return Err(format!(
            "{prefix}CLIENT_CA and {prefix}TLS_PASSTHROUGH: a passed-through connection's \
             client certificate is for the backend to check"
        ));
    }
    Ok(EdgeLabels {
        proxy_protocol,
        tls_passthrough,
        backend_tls,
        client_ca,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Port `n`'s labels of `labels`, gathered as compile gathers them.
    fn read(
        labels: &BTreeMap<String, String>,
        n: usize,
        mode: Mode,
        has_vhosts: bool,
    ) -> Result<EdgeLabels, String> {
        super::read(&PortKeys::of(labels, n), n, mode, has_vhosts)
    }

    #[test]
    fn values_and_refusals() {
        let l = read(
            &labels(&[
                ("SWITCHYARD_0_PROXY_PROTOCOL", "V2"),
                ("SWITCHYARD_0_BACKEND_TLS", "true"),
                ("SWITCHYARD_0_BACKEND_TLS_CA", "/etc/ca.pem"),
                ("SWITCHYARD_0_BACKEND_TLS_SNI", "api.internal"),
            ]),
            0,
            Mode::Http,
            false,
        )
        .unwrap();
        assert_eq!(l.proxy_protocol, Some(ProxyVersion::V2));
        let tls = l.backend_tls.unwrap();
        assert_eq!(tls.ca, PathBuf::from("/etc/ca.pem"));
        assert_eq!(tls.server_name.as_deref(), Some("api.internal"));
        let default_ca = read(
            &labels(&[("SWITCHYARD_1_BACKEND_TLS", "true")]),
            1,
            Mode::Http,
            false,
        )
        .unwrap();
        assert_eq!(default_ca.backend_tls.unwrap().ca, PathBuf::from(SYSTEM_CA));
        for (pairs, mode, vhosts, needle) in [
            (
                &[("SWITCHYARD_0_PROXY_PROTOCOL", "v3")][..],
                Mode::Tcp,
                false,
                "PROXY_PROTOCOL",
            ),
            (
                &[("SWITCHYARD_0_TLS_PASSTHROUGH", "yes")][..],
                Mode::Tcp,
                false,
                "VHOST",
            ),
            (
                &[("SWITCHYARD_0_TLS_PASSTHROUGH", "maybe")][..],
                Mode::Tcp,
                true,
                "true or false",
            ),
            (
                &[("SWITCHYARD_0_BACKEND_TLS", "true")][..],
                Mode::Tcp,
                false,
                "MODE=http",
            ),
            (
                &[("SWITCHYARD_0_BACKEND_TLS_CA", "/ca.pem")][..],
                Mode::Http,
                false,
                "clear",
            ),
            (
                &[
                    ("SWITCHYARD_0_BACKEND_TLS", "1"),
                    ("SWITCHYARD_0_BACKEND_TLS_CA", "ca.pem"),
                ][..],
                Mode::Http,
                false,
                "absolute",
            ),
            (
                &[
                    ("SWITCHYARD_0_BACKEND_TLS", "1"),
                    ("SWITCHYARD_0_BACKEND_TLS_SNI", "a b"),
                ][..],
                Mode::Http,
                false,
                "DNS name",
            ),
            (
                &[
                    ("SWITCHYARD_0_BACKEND_TLS", "1"),
                    ("SWITCHYARD_0_BACKEND_TLS_CERT", "/c"),
                ][..],
                Mode::Http,
                false,
                "together",
            ),
            (
                &[("SWITCHYARD_0_CLIENT_CA", "/ca.pem")][..],
                Mode::Http,
                false,
                "VHOST",
            ),
        ] {
            let err = read(&labels(pairs), 0, mode, vhosts).unwrap_err();
            assert!(err.contains(needle), "{pairs:?}: {err}");
        }
    }
}
