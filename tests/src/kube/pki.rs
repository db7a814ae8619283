//! A throwaway PKI for a loopback API server, made with the `openssl` tool: a CA, a serving
//! certificate for 127.0.0.1 signed by it (rustls rejects a self-signed certificate used as
//! its own CA with `CaUsedAsEndEntity`), a service-account key pair, a static bearer token in
//! `system:masters`, and a kubeconfig that uses them.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use super::ControlPlaneError;
use crate::exec;

/// Files of the PKI, all under one directory.
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
    pub token: String,
}

impl Pki {
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
    pub fn sa_key(&self) -> PathBuf {
        self.dir.join("sa.key")
    }
    pub fn sa_pub(&self) -> PathBuf {
        self.dir.join("sa.pub")
    }
    /// The static token file: `token,user,uid,"group"`.
    pub fn token_file(&self) -> PathBuf {
        self.dir.join("tokens.csv")
    }
}

const SERVER_EXT: &str = "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
";

fn openssl(dir: &Path, args: &str) -> Result<(), ControlPlaneError> {
    let mut cmd = Command::new("openssl");
    cmd.current_dir(dir).args(args.split_whitespace());
    exec::run(&mut cmd)?;
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<(), ControlPlaneError> {
    fs::write(path, text).map_err(|source| ControlPlaneError::Io {
        path: path.to_owned(),
        source,
    })
}

/// A random hex token from the kernel's generator.
fn random_token() -> Result<String, ControlPlaneError> {
    let path = Path::new("/dev/urandom");
    let mut bytes = [0u8; 16];
    let mut f = fs::File::open(path).map_err(|source| ControlPlaneError::Io {
        path: path.to_owned(),
        source,
    })?;
    std::io::Read::read_exact(&mut f, &mut bytes).map_err(|source| ControlPlaneError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Creates the PKI in `dir` (which must exist).
pub fn create(dir: &Path) -> Result<Pki, ControlPlaneError> {
    let steps = [
        "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj /CN=palisade-test-ca",
        "req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1",
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 3650 -extfile server.ext",
        "genrsa -out sa.key 2048",
        "rsa -in sa.key -pubout -out sa.pub",
    ];
    write(&dir.join("server.ext"), SERVER_EXT)?;
    for step in steps {
        openssl(dir, step)?;
    }
    let pki = Pki {
        dir: dir.to_owned(),
        token: random_token()?,
    };
    write(
        &pki.token_file(),
        &format!(
            "{},palisade-admin,palisade-admin,\"system:masters\"\n",
            pki.token
        ),
    )?;
    Ok(pki)
}

/// A kubeconfig for `server` with the PKI's CA and token.
pub fn kubeconfig(pki: &Pki, server: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: palisade-test
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: palisade-admin
  user:
    token: {token}
contexts:
- name: palisade-test
  context:
    cluster: palisade-test
    user: palisade-admin
current-context: palisade-test
",
        ca = pki.ca_cert().display(),
        token = pki.token,
    )
}
