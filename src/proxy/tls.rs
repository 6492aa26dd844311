//! TLS for the shared HTTPS listeners: certificates from a directory (one PEM file per
//! certificate, chain and key together, as marathon-lb's `HAPROXY_SSL_CERT` files) and from apps'
//! `HAPROXY_{n}_SSL_CERT` labels; SNI picks the certificate by the names it is valid for; files
//! are watched and reloaded without touching open connections; a file that stops parsing keeps
//! its last good certificate.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::metrics::Metrics;

/// The certificates in force, swapped whole on reload.
#[derive(Default)]
struct CertSet {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` under `example.com`: a TLS wildcard covers exactly one label.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl CertSet {
    fn lookup(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(key) = self.exact.get(&name) {
            return Some(key.clone());
        }
        let parent = name.split_once('.')?.1;
        self.wildcard.get(parent).cloned()
    }
}

#[derive(PartialEq, Eq, Clone, Copy)]
struct Signature {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

struct Loaded {
    signature: Signature,
    key: Arc<CertifiedKey>,
    names: Vec<String>,
}

/// The certificate store: what the resolver reads per handshake, and what reloads replace.
pub struct Certificates {
    current: ArcSwap<CertSet>,
    /// Per file: the last version that loaded, and the last error reported for it.
    files: std::sync::Mutex<(BTreeMap<PathBuf, Loaded>, HashMap<PathBuf, String>)>,
    dir: Option<PathBuf>,
    default_file: Option<PathBuf>,
}

impl Certificates {
    pub fn new(dir: Option<PathBuf>, default_file: Option<PathBuf>) -> Certificates {
        Certificates {
            current: ArcSwap::from_pointee(CertSet::default()),
            files: Default::default(),
            dir,
            default_file,
        }
    }

    /// One PEM file as the whole store (the relay's `relay.tls_cert`, and `check`'s test of
    /// each certificate file): loaded now, or refused when it holds no certificate chain with
    /// its private key.
    pub fn single(path: &Path, metrics: &Metrics) -> Result<Arc<Certificates>, String> {
        let certs = Arc::new(Certificates::new(None, Some(path.to_path_buf())));
        match certs.reload(&[], metrics) {
            0 => Err("not a certificate chain with its private key".into()),
            _ => Ok(certs),
        }
    }

    /// Reads what changed among the certificate files (the directory's, the default, and
    /// `extra` from app labels) and swaps in the new set. Returns how many certificates are live.
    pub fn reload(&self, extra: &[PathBuf], metrics: &Metrics) -> usize {
        let mut paths: Vec<PathBuf> = Vec::new();
        if let Some(dir) = &self.dir {
            match std::fs::read_dir(dir) {
                Ok(entries) => paths.extend(
                    entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|e| e == "pem")),
                ),
                Err(e) => tracing::warn!(dir = %dir.display(), "cannot list certificates: {e}"),
            }
        }
        paths.extend(self.default_file.iter().cloned());
        paths.extend(extra.iter().cloned());
        paths.sort();
        paths.dedup();

        let mut guard = self.files.lock().unwrap();
        let (files, errors) = &mut *guard;
        let mut changed = false;
        files.retain(|path, _| {
            let keep = paths.contains(path);
            changed |= !keep;
            keep
        });
        for path in &paths {
            let Some(signature) = signature(path) else {
                report(errors, path, "cannot read the file".into(), metrics);
                continue;
            };
            if files.get(path).is_some_and(|l| l.signature == signature) {
                continue;
            }
            match load(path) {
                Ok((key, names)) => {
                    errors.remove(path);
                    tracing::info!(file = %path.display(), names = ?names, "certificate loaded");
                    files.insert(
                        path.clone(),
                        Loaded {
                            signature,
                            key,
                            names,
                        },
                    );
                    changed = true;
                }
                Err(reason) => {
                    let kept = if files.contains_key(path) {
                        "; keeping the previous one"
                    } else {
                        ""
                    };
                    report(errors, path, format!("{reason}{kept}"), metrics);
                }
            }
        }
        if changed || self.current.load().default.is_none() {
            self.current.store(Arc::new(self.build(files)));
        }
        files.len()
    }

    fn build(&self, files: &BTreeMap<PathBuf, Loaded>) -> CertSet {
        let mut set = CertSet::default();
        // In path order, so the first file claiming a name keeps it, on every instance.
        for loaded in files.values() {
            for name in &loaded.names {
                let map = match name.strip_prefix("*.") {
                    Some(parent) => set.wildcard.entry(parent.to_string()),
                    None => set.exact.entry(name.clone()),
                };
                map.or_insert_with(|| loaded.key.clone());
            }
        }
        let default = self
            .default_file
            .as_ref()
            .and_then(|p| files.get(p))
            .or(files.values().next());
        set.default = default.map(|l| l.key.clone());
        set
    }
}

fn report(errors: &mut HashMap<PathBuf, String>, path: &Path, reason: String, metrics: &Metrics) {
    if errors.get(path) != Some(&reason) {
        tracing::error!(file = %path.display(), "certificate rejected: {reason}");
        metrics.reject("certificate");
        errors.insert(path.to_path_buf(), reason);
    }
}

fn signature(path: &Path) -> Option<Signature> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(Signature {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

/// One PEM file: its certificate chain (end entity first) and private key, and the DNS names
/// the end-entity certificate is valid for.
fn load(path: &Path) -> Result<(Arc<CertifiedKey>, Vec<String>), String> {
    const LIMIT: u64 = 1 << 20;
    if std::fs::metadata(path).map_err(|e| e.to_string())?.len() > LIMIT {
        return Err(format!("larger than {LIMIT} bytes"));
    }
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad certificate PEM: {e}"))?;
    if chain.is_empty() {
        return Err("no certificate in the file".into());
    }
    let key =
        PrivateKeyDer::from_pem_file(path).map_err(|e| format!("no usable private key: {e}"))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| format!("{e}"))?;
    let end_entity = webpki::EndEntityCert::try_from(&certified.cert[0])
        .map_err(|e| format!("bad end-entity certificate: {e:?}"))?;
    let names: Vec<String> = end_entity
        .valid_dns_names()
        .map(str::to_ascii_lowercase)
        .collect();
    Ok((Arc::new(certified), names))
}

#[derive(Clone)]
pub struct Resolver(pub Arc<Certificates>);

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.0.current.load();
        hello
            .server_name()
            .and_then(|name| set.lookup(name))
            .or_else(|| set.default.clone())
    }
}

/// The HTTPS listeners' protocol settings (`https.min_version`, `https.cipher_suites`).
#[derive(Debug, Clone)]
pub struct Policy {
    pub versions: Vec<&'static rustls::SupportedProtocolVersion>,
    pub provider: Arc<rustls::crypto::CryptoProvider>,
}

impl Policy {
    /// `min_version`: "1.2" or "1.3"; `suites`: rustls's names of cipher suites (as IANA's,
    /// `TLS13_AES_128_GCM_SHA256`, `TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384`, …), in order of
    /// preference; empty: every suite rustls offers. A suite of a version below the minimum is
    /// refused, as is a set that leaves a version allowed without a suite.
    pub fn parse(min_version: &str, suites: &[String]) -> Result<Policy, String> {
        let versions: Vec<&'static rustls::SupportedProtocolVersion> = match min_version {
            "1.2" => vec![&rustls::version::TLS13, &rustls::version::TLS12],
            "1.3" => vec![&rustls::version::TLS13],
            other => {
                return Err(format!(
                    "https.min_version: {other:?} (use \"1.2\" or \"1.3\")"
                ));
            }
        };
        let mut provider = rustls::crypto::ring::default_provider();
        if !suites.is_empty() {
            let mut chosen = Vec::new();
            for name in suites {
                let suite = provider
                    .cipher_suites
                    .iter()
                    .find(|s| format!("{:?}", s.suite()).eq_ignore_ascii_case(name))
                    .ok_or_else(|| {
                        let known: Vec<String> = provider
                            .cipher_suites
                            .iter()
                            .map(|s| format!("{:?}", s.suite()))
                            .collect();
                        format!(
                            "https.cipher_suites: unknown suite {name:?} (known: {})",
                            known.join(", ")
                        )
                    })?;
                if !versions.contains(&suite.version()) {
                    return Err(format!(
                        "https.cipher_suites: {name:?} is a suite of a version below \
                         https.min_version"
                    ));
                }
                chosen.push(*suite);
            }
            for version in &versions {
                if !chosen.iter().any(|s| s.version() == *version) {
                    return Err(format!(
                        "https.cipher_suites: no suite for {:?}, which https.min_version allows",
                        version.version
                    ));
                }
            }
            provider.cipher_suites = chosen;
        }
        Ok(Policy {
            versions,
            provider: Arc::new(provider),
        })
    }
}

impl Default for Policy {
    fn default() -> Policy {
        Policy::parse("1.2", &[]).expect("the defaults are valid")
    }
}

/// Certificates from `certs`, ALPN `h2` (when enabled) then `http/1.1`, the versions and
/// suites of `policy`; with `client_roots`, a client certificate they verify is required.
pub fn server_config(
    certs: Arc<Certificates>,
    h2: bool,
    policy: &Policy,
    client_roots: Option<Arc<rustls::RootCertStore>>,
) -> Result<Arc<ServerConfig>, String> {
    let builder = ServerConfig::builder_with_provider(policy.provider.clone())
        .with_protocol_versions(&policy.versions)
        .map_err(|e| e.to_string())?;
    let builder = match client_roots {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                roots,
                policy.provider.clone(),
            )
            .build()
            .map_err(|e| e.to_string())?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(Resolver(certs)));
    config.alpn_protocols = if h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}

/// Re-checks the certificate files every `interval` on the blocking pool (file reads), with
/// the paths `extra` gives at each check besides (the HTTPS listeners: the apps' label paths
/// from the table; the relay: none). A file that stops loading keeps its last good certificate.
pub async fn watch(
    certs: Arc<Certificates>,
    extra: impl Fn() -> Vec<PathBuf> + Send + 'static,
    metrics: Arc<Metrics>,
    interval: Duration,
) {
    loop {
        tokio::time::sleep(interval).await;
        let extra = extra();
        let certs = certs.clone();
        let metrics = metrics.clone();
        let _ = tokio::task::spawn_blocking(move || certs.reload(&extra, &metrics)).await;
    }
}
