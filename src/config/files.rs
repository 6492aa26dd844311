//! `switchyard check`'s second half: the files a valid configuration names, checked the way
//! `run` will read them. A configuration that parses but names a token file that is not there
//! starts and exits 1; `check` says so first, naming the key and the path.

use std::path::Path;

use super::Config;

impl Config {
    /// Every file the configuration references that is missing, unreadable or unusable, one
    /// message per file naming its key and path. Empty: `run` will find everything it reads at
    /// start. Relative paths were resolved against the configuration file's directory by
    /// [`Config::parse`], so the messages show where they were looked for.
    pub fn check_files(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut report = |key: &str, path: &Path, what: String| {
            problems.push(format!("{key} {}: {what}", path.display()));
        };

        if let Some(path) = &self.discovery.file {
            match read_limited(path, self.discovery.max_snapshot_bytes) {
                Err(e) => report("discovery.file", path, e),
                Ok(body) => {
                    if let Err(e) = crate::discovery::marathon::api::parse_apps(&body) {
                        report(
                            "discovery.file",
                            path,
                            format!("not a Marathon apps file: {e}"),
                        );
                    }
                }
            }
        }
        if let Some(path) = &self.discovery.token_file
            && let Err(e) = read_token(path)
        {
            report("discovery.token_file", path, e);
        }
        if let Some(path) = &self.discovery.ca_file
            && let Err(e) = read_limited(path, 4 << 20)
                .and_then(|pem| crate::discovery::marathon::client::tls_connector(&pem).map(|_| ()))
        {
            report("discovery.ca_file", path, e);
        }
        if let Some(path) = &self.discovery.service_account_file
            && let Err(e) = read_service_account(path, self.discovery.login_endpoint.as_deref())
        {
            report("discovery.service_account_file", path, e);
        }
        if let Some(path) = &self.admin.token_file
            && let Err(e) = read_token(path)
        {
            report("admin.token_file", path, e);
        }
        if let Some(path) = &self.relay.token_file
            && let Err(e) = read_token(path)
        {
            report("relay.token_file", path, e);
        }
        if let Some(path) = &self.relay.tls_cert
            && let Err(e) = certificate(path)
        {
            report("relay.tls_cert", path, e);
        }
        // Certificates are read only when there are HTTPS listeners.
        if !self.https.listen.is_empty() {
            if let Some(dir) = &self.https.certs {
                match std::fs::read_dir(dir) {
                    Err(e) => report("https.certs", dir, format!("cannot list: {e}")),
                    Ok(entries) => {
                        let mut pems: Vec<_> = entries
                            .filter_map(|e| e.ok().map(|e| e.path()))
                            .filter(|p| p.extension().is_some_and(|e| e == "pem"))
                            .collect();
                        pems.sort();
                        if pems.is_empty() && self.https.default_cert.is_none() {
                            report(
                                "https.certs",
                                dir,
                                "no .pem file (and no https.default_cert): TLS handshakes \
                                 would fail"
                                    .into(),
                            );
                        }
                        for pem in pems {
                            if let Err(e) = certificate(&pem) {
                                report("https.certs", &pem, e);
                            }
                        }
                    }
                }
            }
            if let Some(path) = &self.https.default_cert
                && let Err(e) = certificate(path)
            {
                report("https.default_cert", path, e);
            }
        }
        if let Some(socket) = &self.runtime.upgrade_socket {
            let dir = socket.parent().unwrap_or(Path::new("."));
            if !dir.is_dir() {
                report(
                    "runtime.upgrade_socket",
                    socket,
                    format!(
                        "its directory {} does not exist (systemd: RuntimeDirectory=)",
                        dir.display()
                    ),
                );
            }
        }
        problems
    }
}

/// A file of at most `limit` bytes, whole.
///
/// Opened without blocking (a FIFO in its place does not hang the start), then checked on the
/// open file (a regular file: not `/dev/zero` behind a symlink), and read no further than
/// `limit` whatever its size says by then.
pub fn read_limited(path: &Path, limit: usize) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot read: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("not a file".into());
    }
    if meta.len() > limit as u64 {
        return Err(format!("larger than {limit} bytes"));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() > limit {
        return Err(format!("larger than {limit} bytes"));
    }
    Ok(bytes)
}

/// A bearer token file: readable, and not empty once trimmed (an empty token would be no
/// protection at all).
pub fn read_token(path: &Path) -> Result<String, String> {
    let text = read_limited(path, 64 * 1024)?;
    let text = String::from_utf8(text).map_err(|_| "not UTF-8 text".to_string())?;
    let token = text.trim();
    if token.is_empty() {
        return Err("empty".into());
    }
    Ok(token.to_string())
}

/// A DC/OS service-account credential file (its contents are never part of an error).
pub fn read_service_account(
    path: &Path,
    default_endpoint: Option<&str>,
) -> Result<crate::discovery::auth::Credentials, String> {
    let text = read_limited(path, 64 * 1024)?;
    let text = String::from_utf8(text).map_err(|_| "not UTF-8 text".to_string())?;
    crate::discovery::auth::Credentials::parse(&text, default_endpoint)
}

/// A PEM file the HTTPS listeners can serve: a certificate chain and its private key (loaded
/// by the same code the listeners use).
fn certificate(path: &Path) -> Result<(), String> {
    read_limited(path, 1 << 20)?;
    let certs = crate::proxy::tls::Certificates::new(None, Some(path.to_path_buf()));
    let metrics = crate::metrics::Metrics::new();
    match certs.reload(&[], &metrics) {
        0 => Err("not a certificate chain with its private key".into()),
        _ => Ok(()),
    }
}
