//! TLS client configurations for the gateway's connections: MQTT over TLS
//! (`mqtts://`) to the broker. rustls with the ring provider; trusted roots are the
//! system's (rustls-native-certs) plus, when given, the certificates of a PEM file
//! (a private CA, or a self-signed broker certificate).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Makes ring the process's rustls provider, once (later calls do nothing). Every
/// HTTP client needs one: reqwest is built without a provider of its own, so that
/// only ring's crypto is compiled in.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The system's trusted roots plus those in `ca_file`; an error names the file and
/// says what is wrong with it.
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable system certificates are skipped: a private CA file may be all there is.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "{}: no certificate (expected -----BEGIN CERTIFICATE-----)",
                path.display()
            ));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("{}: unusable certificate: {e}", path.display()))?;
        }
    }
    if roots.is_empty() {
        return Err("no trusted root certificates: the system has none; set a CA file".into());
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth())
}
