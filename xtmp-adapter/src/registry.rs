//! The registry (the design's "Shadow Registry"): a text file that maps
//! server names to addresses and pinned identities, like `/etc/hosts` and
//! `known_hosts` in one.
//!
//! ```text
//! # name        address               key id (optional)
//! bpci          10.0.0.5:7778         xtmp1:00112233445566778899aabbccddeeff
//! bpci.backup   backup.internal       xtmp1:ffeeddccbbaa99887766554433221100
//! 10.0.0.9      10.0.0.9:7778         xtmp1:0123456789abcdef0123456789abcdef
//! ```
//!
//! One entry per line, fields separated by spaces or tabs; `#` starts a
//! comment. A name is a host name or an address literal, matched against
//! an endpoint's host; the address is `host[:port]` (IPv6 in brackets),
//! its port used when the endpoint names none. A name appears once.
//! Trust on first use appends to the same file.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use xtmp_core::handshake::KeyId;

use crate::endpoint::{Endpoint, EndpointError, Host, split_host_port};

/// One server in the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Where the server is.
    pub host: Host,
    /// Its port, if the entry names one.
    pub port: Option<u16>,
    /// Its identity's fingerprint, if pinned.
    pub key: Option<KeyId>,
}

/// A parsed registry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registry {
    entries: BTreeMap<Host, Entry>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Parses a registry file's text.
    pub fn parse(text: &str) -> Result<Registry, RegistryError> {
        let mut r = Registry::new();
        for (i, line) in text.lines().enumerate() {
            let at = |problem| RegistryError::Line { line: i + 1, problem };
            let content = line.split('#').next().unwrap_or("");
            let fields: Vec<&str> = content.split_whitespace().collect();
            let (name, address, key) = match fields[..] {
                [] => continue,
                [n, a] => (n, a, None),
                [n, a, k] => (n, a, Some(k)),
                [_] => return Err(at(LineProblem::MissingAddress)),
                _ => return Err(at(LineProblem::TrailingFields)),
            };
            let name = Host::parse(name).map_err(|e| at(LineProblem::Name(e)))?;
            let (host, port) = split_host_port(address).map_err(|e| at(LineProblem::Address(e)))?;
            let host = Host::parse(host).map_err(|e| at(LineProblem::Address(e)))?;
            let key = match key {
                None => None,
                Some(k) => Some(KeyId::parse(k).ok_or_else(|| at(LineProblem::Key(k.into())))?),
            };
            if r.entries.contains_key(&name) {
                return Err(at(LineProblem::Duplicate(name.to_string())));
            }
            r.entries.insert(name, Entry { host, port, key });
        }
        Ok(r)
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Registry, RegistryError> {
        let text = std::fs::read_to_string(path).map_err(|e| RegistryError::Io(path.to_path_buf(), e))?;
        Registry::parse(&text).map_err(|e| e.in_file(path))
    }

    /// As [`Registry::load`], but a missing file is an empty registry (a
    /// trust-on-first-use file before its first use).
    pub fn load_or_empty(path: &Path) -> Result<Registry, RegistryError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Registry::parse(&text).map_err(|e| e.in_file(path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Registry::new()),
            Err(e) => Err(RegistryError::Io(path.to_path_buf(), e)),
        }
    }

    /// The entry for `name`.
    pub fn get(&self, name: &Host) -> Option<&Entry> {
        self.entries.get(name)
    }

    /// Adds or replaces the entry for `name`; returns the old one.
    pub fn insert(&mut self, name: Host, entry: Entry) -> Option<Entry> {
        self.entries.insert(name, entry)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it has no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Applies the registry to `endpoint`: a host the registry names is
    /// replaced by the entry's address (the endpoint's own port wins over
    /// the entry's), and the entry's key pins the server unless the
    /// endpoint pins one itself; two different pins are an error.
    pub fn apply(&self, endpoint: &Endpoint) -> Result<Endpoint, RegistryError> {
        let Some(entry) = self.get(&endpoint.host) else { return Ok(endpoint.clone()) };
        let key = match (endpoint.key, entry.key) {
            (Some(a), Some(b)) if !a.ct_eq(&b) => {
                return Err(RegistryError::KeyConflict { name: endpoint.host.to_string(), endpoint: a, registry: b });
            }
            (a, b) => a.or(b),
        };
        Ok(Endpoint {
            host: entry.host.clone(),
            explicit_port: endpoint.explicit_port.or(entry.port),
            key,
            ..endpoint.clone()
        })
    }

    /// The registry as file text (entries sorted by name).
    pub fn to_text(&self) -> String {
        let mut s = String::from("# XTMP registry: name, address, key id (see xtmp-adapter's registry docs)\n");
        for (name, e) in &self.entries {
            let address = match e.port {
                Some(p) => format!("{}:{p}", e.host),
                None => e.host.to_string(),
            };
            s += &format!("{name:<24} {address:<28}");
            if let Some(k) = &e.key {
                s += &format!(" {k}");
            }
            s = s.trim_end().to_string() + "\n";
        }
        s
    }

    /// Writes the registry to `path` atomically (a temporary file renamed
    /// over it), so a reader never sees half a file.
    pub fn save(&self, path: &Path) -> Result<(), RegistryError> {
        let io = |e| RegistryError::Io(path.to_path_buf(), e);
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, self.to_text()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// What is wrong with one line of a registry file.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LineProblem {
    /// A name and no address.
    MissingAddress,
    /// More than three fields.
    TrailingFields,
    /// The name is not a host name or address literal.
    Name(EndpointError),
    /// The address is not `host[:port]`.
    Address(EndpointError),
    /// The key id is not `xtmp1:` and 32 hex digits.
    Key(String),
    /// The name appeared on an earlier line.
    Duplicate(String),
}

impl fmt::Display for LineProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineProblem::MissingAddress => f.write_str("a name without an address"),
            LineProblem::TrailingFields => f.write_str("more than three fields (name, address, key id)"),
            LineProblem::Name(e) => write!(f, "bad name: {e}"),
            LineProblem::Address(e) => write!(f, "bad address: {e}"),
            LineProblem::Key(k) => write!(f, "bad key id {k:?}: expected xtmp1: and 32 hex digits"),
            LineProblem::Duplicate(n) => write!(f, "{n} is listed twice"),
        }
    }
}

/// Why a registry could not be read, written or applied.
#[derive(Debug)]
#[non_exhaustive]
pub enum RegistryError {
    /// Reading or writing the file failed.
    Io(PathBuf, io::Error),
    /// A line is malformed.
    Line {
        /// Its number, from 1.
        line: usize,
        /// What is wrong.
        problem: LineProblem,
    },
    /// A malformed line of a file.
    File {
        /// The file.
        path: PathBuf,
        /// Its line number, from 1.
        line: usize,
        /// What is wrong.
        problem: LineProblem,
    },
    /// The endpoint pins one key and the registry another.
    KeyConflict {
        /// The name.
        name: String,
        /// The endpoint's key.
        endpoint: KeyId,
        /// The registry's key.
        registry: KeyId,
    },
}

impl RegistryError {
    fn in_file(self, path: &Path) -> RegistryError {
        match self {
            RegistryError::Line { line, problem } => RegistryError::File { path: path.to_path_buf(), line, problem },
            other => other,
        }
    }
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::Io(p, e) => write!(f, "registry {}: {e}", p.display()),
            RegistryError::Line { line, problem } => write!(f, "registry line {line}: {problem}"),
            RegistryError::File { path, line, problem } => write!(f, "{}:{line}: {problem}", path.display()),
            RegistryError::KeyConflict { name, endpoint, registry } => {
                write!(f, "{name}: the endpoint pins {endpoint} but the registry pins {registry}")
            }
        }
    }
}

impl std::error::Error for RegistryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RegistryError::Io(_, e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "xtmp1:00112233445566778899aabbccddeeff";
    const K2: &str = "xtmp1:ffeeddccbbaa99887766554433221100";

    fn host(s: &str) -> Host {
        Host::parse(s).unwrap()
    }

    #[test]
    fn parses_names_addresses_keys_and_comments() {
        let text =
            format!("# servers\n\nbpci 10.0.0.5:7778 {K1}   # main\nbackup\tbackup.internal\n[::1] [::1]:9000 {K2}\n");
        let r = Registry::parse(&text).unwrap();
        assert_eq!(r.len(), 3);
        let e = r.get(&host("bpci")).unwrap();
        assert_eq!((e.host.clone(), e.port, e.key), (host("10.0.0.5"), Some(7778), KeyId::parse(K1)));
        assert_eq!(r.get(&host("backup")).unwrap().key, None);
        assert_eq!(r.get(&host("[::1]")).unwrap().port, Some(9000));
        // The text form parses back to the same registry.
        assert_eq!(Registry::parse(&r.to_text()).unwrap(), r);
    }

    #[test]
    fn bad_lines_name_their_line_and_problem() {
        let bad = |text: &str| match Registry::parse(text) {
            Err(RegistryError::Line { line, problem }) => (line, problem),
            other => panic!("{text:?}: {other:?}"),
        };
        assert_eq!(bad("a 1.2.3.4\nlonely\n"), (2, LineProblem::MissingAddress));
        assert_eq!(bad("a 1.2.3.4 xtmp1:00 extra"), (1, LineProblem::TrailingFields));
        assert_eq!(bad("a 1.2.3.4 nokey"), (1, LineProblem::Key("nokey".into())));
        assert_eq!(bad("a 1.2.3.4\nA 5.6.7.8"), (2, LineProblem::Duplicate("a".into())));
        assert!(matches!(bad("a 1.2.3.4:0").1, LineProblem::Address(EndpointError::BadPort(_))));
        assert!(matches!(bad("-x 1.2.3.4").1, LineProblem::Name(EndpointError::BadHost(_))));
        let msg = Registry::parse("x\n").unwrap_err().to_string();
        assert!(msg.contains("line 1") && msg.contains("without an address"), "{msg}");
    }

    #[test]
    fn applying_maps_the_name_and_pins_the_key() {
        let r = Registry::parse(&format!("bpci 10.0.0.5:9000 {K1}\nplain 10.0.0.6")).unwrap();
        let e = r.apply(&"xtmp+hybrid://bpci".parse().unwrap()).unwrap();
        assert_eq!(e.to_string(), format!("xtmp+hybrid://10.0.0.5:9000?key={K1}"));
        // The endpoint's own port wins.
        let e = r.apply(&"xtmp://bpci:1234".parse().unwrap()).unwrap();
        assert_eq!(e.socket_addr(), Some("10.0.0.5:1234".parse().unwrap()));
        // No key in the registry: none pinned; a name it does not know is
        // left as it is.
        assert_eq!(r.apply(&"xtmp://plain".parse().unwrap()).unwrap().key, None);
        let other: Endpoint = "xtmp://elsewhere:1".parse().unwrap();
        assert_eq!(r.apply(&other).unwrap(), other);
        // Two different pins are refused.
        let e: Endpoint = format!("xtmp://bpci?key={K2}").parse().unwrap();
        assert!(matches!(r.apply(&e), Err(RegistryError::KeyConflict { .. })));
        let e: Endpoint = format!("xtmp://bpci?key={K1}").parse().unwrap();
        assert_eq!(r.apply(&e).unwrap().key, KeyId::parse(K1));
    }

    #[test]
    fn saves_atomically_and_loads_back() {
        let dir = std::env::temp_dir().join(format!("xtmp-registry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("registry");
        assert!(Registry::load_or_empty(&path).unwrap().is_empty());
        assert!(matches!(Registry::load(&path), Err(RegistryError::Io(..))));
        let mut r = Registry::new();
        r.insert(host("bpci"), Entry { host: host("10.0.0.5"), port: None, key: KeyId::parse(K1) });
        r.save(&path).unwrap();
        assert_eq!(Registry::load(&path).unwrap(), r);
        std::fs::write(&path, "bpci\n").unwrap();
        let msg = Registry::load(&path).unwrap_err().to_string();
        assert!(msg.starts_with(&format!("{}:1:", path.display())), "{msg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
