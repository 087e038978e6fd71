//! Endpoint strings: `xtmp://host:port` and its transport variants, parsed
//! into a typed [`Endpoint`].
//!
//! ```text
//! endpoint  = scheme "://" host [ ":" port ] [ path ] [ "?key=" key-id ]
//! scheme    = "xtmp" | "xtmp+tcp" | "xtmp+udp" | "xtmp+ws" | "xtmp+hybrid"
//! host      = name | IPv4 | "[" IPv6 "]"
//! path      = "/" ...             (WebSocket only; default "/")
//! key-id    = "xtmp1:" 32 hex digits   (pins the server identity)
//! ```
//!
//! The port defaults to [`DEFAULT_PORT`] (7778). `xtmp://` is TCP. A hybrid
//! endpoint is one host and port reached over TCP (the stream path) and UDP
//! (the datagram path) at once.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use xtmp_core::handshake::KeyId;

/// The port an endpoint without one uses.
pub const DEFAULT_PORT: u16 = 7778;

/// The environment variable that names the server's endpoint.
pub const ENDPOINT_VAR: &str = "BPCI_XTMP_ENDPOINT";

/// The endpoint used when [`ENDPOINT_VAR`] is not set.
pub const DEFAULT_ENDPOINT: &str = "xtmp://localhost:7778";

/// How a session reaches its server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// TCP: one stream path (`xtmp://`, or `xtmp+tcp://`).
    Tcp,
    /// UDP: one datagram path (`xtmp+udp://`).
    Udp,
    /// WebSocket binary messages over TCP, for firewalls that pass only
    /// web traffic (`xtmp+ws://`): one stream path.
    WebSocket,
    /// A TCP stream path and a UDP datagram path in one session
    /// (`xtmp+hybrid://`).
    Hybrid,
}

impl Transport {
    /// The scheme that names it.
    pub fn scheme(self) -> &'static str {
        match self {
            Transport::Tcp => "xtmp",
            Transport::Udp => "xtmp+udp",
            Transport::WebSocket => "xtmp+ws",
            Transport::Hybrid => "xtmp+hybrid",
        }
    }

    fn from_scheme(s: &str) -> Option<Transport> {
        Some(match s.to_ascii_lowercase().as_str() {
            "xtmp" | "xtmp+tcp" => Transport::Tcp,
            "xtmp+udp" => Transport::Udp,
            "xtmp+ws" => Transport::WebSocket,
            "xtmp+hybrid" => Transport::Hybrid,
            _ => return None,
        })
    }
}

/// Where a server is: a host name or an address literal.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    /// A name, resolved by a [`Resolver`](crate::Resolver) (lower case).
    Name(String),
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
            Host::Ip(IpAddr::V4(a)) => write!(f, "{a}"),
        }
    }
}

impl Host {
    /// Parses a host: a name, an IPv4 literal or a bracketed IPv6 literal.
    pub fn parse(text: &str) -> Result<Host, EndpointError> {
        if text.is_empty() {
            return Err(EndpointError::MissingHost);
        }
        if let Some(inner) = text.strip_prefix('[') {
            let v6 = inner.strip_suffix(']').ok_or_else(|| EndpointError::BadHost(text.into()))?;
            return v6
                .parse::<Ipv6Addr>()
                .map(|a| Host::Ip(IpAddr::V6(a)))
                .map_err(|_| EndpointError::BadHost(text.into()));
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Host::Ip(ip));
        }
        // RFC 1123 names; `_` is allowed, as registries and service names
        // use it.
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        let name = text.strip_suffix('.').unwrap_or(text);
        if name.len() > 253 || !name.split('.').all(label_ok) || name.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(EndpointError::BadHost(text.into()));
        }
        Ok(Host::Name(name.to_ascii_lowercase()))
    }
}

/// A parsed endpoint string.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// How to reach the server.
    pub transport: Transport,
    /// Where the server is.
    pub host: Host,
    /// The port, if the string named one (see [`Endpoint::port`]).
    pub explicit_port: Option<u16>,
    /// The WebSocket request path (`/` when not given).
    pub path: String,
    /// The server identity the string pins (`?key=`).
    pub key: Option<KeyId>,
}

impl Endpoint {
    /// An endpoint at `addr` over `transport`, with no pinned key.
    pub fn from_addr(transport: Transport, addr: SocketAddr) -> Endpoint {
        Endpoint { transport, host: Host::Ip(addr.ip()), explicit_port: Some(addr.port()), path: "/".into(), key: None }
    }

    /// The port to use: the string's, or [`DEFAULT_PORT`].
    pub fn port(&self) -> u16 {
        self.explicit_port.unwrap_or(DEFAULT_PORT)
    }

    /// The address, when the host is a literal.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self.host {
            Host::Ip(ip) => Some(SocketAddr::new(ip, self.port())),
            Host::Name(_) => None,
        }
    }

    /// The endpoint named by [`ENDPOINT_VAR`], or [`DEFAULT_ENDPOINT`] when
    /// it is unset. A set but malformed value is an error, never silently
    /// replaced by the default.
    pub fn from_env() -> Result<Endpoint, EndpointError> {
        Endpoint::from_var(std::env::var_os(ENDPOINT_VAR).as_deref())
    }

    /// What [`Endpoint::from_env`] makes of the variable's value (`None`:
    /// unset).
    pub fn from_var(value: Option<&std::ffi::OsStr>) -> Result<Endpoint, EndpointError> {
        match value {
            None => DEFAULT_ENDPOINT.parse(),
            Some(v) => v.to_str().ok_or(EndpointError::NotUnicode)?.parse(),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.transport.scheme(), self.host, self.port())?;
        if self.transport == Transport::WebSocket && self.path != "/" {
            f.write_str(&self.path)?;
        }
        if let Some(k) = &self.key {
            write!(f, "?key={k}")?;
        }
        Ok(())
    }
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(text: &str) -> Result<Endpoint, EndpointError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(EndpointError::Empty);
        }
        let (scheme, rest) = text.split_once("://").ok_or(EndpointError::MissingScheme)?;
        let transport = Transport::from_scheme(scheme).ok_or_else(|| EndpointError::UnknownScheme(scheme.into()))?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(EndpointError::UserInfo);
        }
        if !path.is_empty() && path != "/" && transport != Transport::WebSocket {
            return Err(EndpointError::PathNotAllowed(path.into()));
        }
        if path.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'#') {
            return Err(EndpointError::BadPath(path.into()));
        }
        let (host, port) = split_host_port(authority)?;
        let key = match query {
            None => None,
            Some(q) => Some(parse_query(q)?),
        };
        Ok(Endpoint {
            transport,
            host: Host::parse(host)?,
            explicit_port: port,
            path: if path.is_empty() { "/".into() } else { path.into() },
            key,
        })
    }
}

/// Splits `host[:port]` (IPv6 hosts in brackets).
pub(crate) fn split_host_port(authority: &str) -> Result<(&str, Option<u16>), EndpointError> {
    let (host, port) = if authority.starts_with('[') {
        match authority.find(']') {
            Some(i) => match &authority[i + 1..] {
                "" => (&authority[..=i], None),
                p => (
                    &authority[..=i],
                    Some(p.strip_prefix(':').ok_or_else(|| EndpointError::BadHost(authority.into()))?),
                ),
            },
            None => return Err(EndpointError::BadHost(authority.into())),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((_, _)) if authority.matches(':').count() > 1 => {
                return Err(EndpointError::UnbracketedIpv6(authority.into()));
            }
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(EndpointError::BadPort(p.into())),
            Ok(n) if p.starts_with('+') => return Err(EndpointError::BadPort(n.to_string())),
            Ok(n) => Some(n),
        },
    };
    Ok((host, port))
}

fn parse_query(q: &str) -> Result<KeyId, EndpointError> {
    let mut key = None;
    for pair in q.split('&') {
        match pair.split_once('=') {
            Some(("key", v)) if key.is_none() => {
                key = Some(KeyId::parse(v).ok_or_else(|| EndpointError::BadKey(v.into()))?);
            }
            Some(("key", _)) => return Err(EndpointError::BadQuery("key given twice".into())),
            _ => return Err(EndpointError::BadQuery(pair.into())),
        }
    }
    key.ok_or_else(|| EndpointError::BadQuery(q.into()))
}

/// Why an endpoint string was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndpointError {
    /// The string is empty.
    Empty,
    /// No `scheme://`.
    MissingScheme,
    /// A scheme other than `xtmp`, `xtmp+tcp`, `xtmp+udp`, `xtmp+ws`, `xtmp+hybrid`.
    UnknownScheme(String),
    /// No host after `://`.
    MissingHost,
    /// The host is neither a valid name nor an address literal.
    BadHost(String),
    /// An IPv6 address without brackets.
    UnbracketedIpv6(String),
    /// The port is not a number in 1..=65535.
    BadPort(String),
    /// `user@` in the authority: XTMP endpoints carry no credentials.
    UserInfo,
    /// A path on a transport other than WebSocket.
    PathNotAllowed(String),
    /// A path with spaces, control characters or a fragment.
    BadPath(String),
    /// A query other than one `key=`.
    BadQuery(String),
    /// The `key=` value is not `xtmp1:` and 32 hex digits.
    BadKey(String),
    /// The environment variable is not valid Unicode.
    NotUnicode,
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointError::Empty => f.write_str("empty endpoint"),
            EndpointError::MissingScheme => f.write_str("endpoint has no scheme: write xtmp://host:port"),
            EndpointError::UnknownScheme(s) => {
                write!(f, "unknown scheme {s:?}: use xtmp, xtmp+tcp, xtmp+udp, xtmp+ws or xtmp+hybrid")
            }
            EndpointError::MissingHost => f.write_str("endpoint has no host"),
            EndpointError::BadHost(h) => write!(f, "invalid host {h:?}"),
            EndpointError::UnbracketedIpv6(h) => write!(f, "IPv6 address {h:?} must be in brackets: [addr]:port"),
            EndpointError::BadPort(p) => write!(f, "invalid port {p:?}: expected 1 to 65535"),
            EndpointError::UserInfo => f.write_str("endpoint must not contain user@ credentials"),
            EndpointError::PathNotAllowed(p) => write!(f, "path {p:?} is only allowed on xtmp+ws endpoints"),
            EndpointError::BadPath(p) => write!(f, "invalid path {p:?}"),
            EndpointError::BadQuery(q) => write!(f, "invalid query {q:?}: the only parameter is key=xtmp1:<32 hex>"),
            EndpointError::BadKey(k) => write!(f, "invalid key id {k:?}: expected xtmp1: and 32 hex digits"),
            EndpointError::NotUnicode => write!(f, "{ENDPOINT_VAR} is not valid Unicode"),
        }
    }
}

impl std::error::Error for EndpointError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Endpoint {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> EndpointError {
        s.parse::<Endpoint>().expect_err(s)
    }

    #[test]
    fn schemes_pick_transports_and_the_port_defaults() {
        let e = ep("xtmp://localhost");
        assert_eq!((e.transport, e.port(), e.explicit_port), (Transport::Tcp, DEFAULT_PORT, None));
        assert_eq!(e.host, Host::Name("localhost".into()));
        assert_eq!(ep("xtmp+tcp://a:1").transport, Transport::Tcp);
        assert_eq!(ep("XTMP+UDP://a:1").transport, Transport::Udp);
        assert_eq!(ep("xtmp+ws://a:1/bpci").path, "/bpci");
        assert_eq!(ep("xtmp+hybrid://10.0.0.5:9000").socket_addr(), Some("10.0.0.5:9000".parse().unwrap()));
        assert_eq!(ep("xtmp+udp://[::1]:7").socket_addr(), Some("[::1]:7".parse().unwrap()));
        assert_eq!(ep("xtmp://[fe80::1]").port(), DEFAULT_PORT);
        assert_eq!(ep("xtmp://Bpci.Example.").host, Host::Name("bpci.example".into()));
    }

    #[test]
    fn a_key_pins_the_server() {
        let k = "xtmp1:00112233445566778899aabbccddeeff";
        let e = ep(&format!("xtmp://bpci:7778?key={k}"));
        assert_eq!(e.key, KeyId::parse(k));
        assert_eq!(e.to_string(), format!("xtmp://bpci:7778?key={k}"));
    }

    #[test]
    fn bad_strings_say_what_is_wrong() {
        assert_eq!(err(""), EndpointError::Empty);
        assert_eq!(err("localhost:7778"), EndpointError::MissingScheme);
        assert_eq!(err("http://a"), EndpointError::UnknownScheme("http".into()));
        assert_eq!(err("xtmp://"), EndpointError::MissingHost);
        assert_eq!(err("xtmp://:7778"), EndpointError::MissingHost);
        assert_eq!(err("xtmp://a:0"), EndpointError::BadPort("0".into()));
        assert_eq!(err("xtmp://a:70000"), EndpointError::BadPort("70000".into()));
        assert_eq!(err("xtmp://a:+1"), EndpointError::BadPort("1".into()));
        assert_eq!(err("xtmp://a:"), EndpointError::BadPort("".into()));
        assert_eq!(err("xtmp://::1"), EndpointError::UnbracketedIpv6("::1".into()));
        assert_eq!(err("xtmp://[::1"), EndpointError::BadHost("[::1".into()));
        assert_eq!(err("xtmp://[::1]x"), EndpointError::BadHost("[::1]x".into()));
        assert_eq!(err("xtmp://[nope]:1"), EndpointError::BadHost("[nope]".into()));
        assert_eq!(err("xtmp://-a-:1"), EndpointError::BadHost("-a-".into()));
        assert_eq!(err("xtmp://a b"), EndpointError::BadHost("a b".into()));
        assert_eq!(err("xtmp://999.1.1.1"), EndpointError::BadHost("999.1.1.1".into()));
        assert_eq!(err("xtmp://u@a"), EndpointError::UserInfo);
        assert_eq!(err("xtmp://a/x"), EndpointError::PathNotAllowed("/x".into()));
        assert_eq!(err("xtmp+ws://a/x y"), EndpointError::BadPath("/x y".into()));
        assert_eq!(err("xtmp://a?x=1"), EndpointError::BadQuery("x=1".into()));
        assert_eq!(err("xtmp://a?key=xtmp1:00"), EndpointError::BadKey("xtmp1:00".into()));
        // Every message names the problem.
        assert!(err("xtmp://a:0").to_string().contains("1 to 65535"));
        assert!(err("ftp://a").to_string().contains("xtmp+hybrid"));
    }

    #[test]
    fn the_environment_variable_names_the_endpoint_and_defaults_to_localhost() {
        use std::ffi::OsStr;
        assert_eq!(Endpoint::from_var(None).unwrap(), ep("xtmp://localhost:7778"));
        assert_eq!(Endpoint::from_var(Some(OsStr::new("xtmp+udp://10.1.2.3:9"))).unwrap(), ep("xtmp+udp://10.1.2.3:9"));
        // A malformed value is an error, not the default.
        assert_eq!(Endpoint::from_var(Some(OsStr::new("bpci:7778"))), Err(EndpointError::MissingScheme));
    }

    proptest::proptest! {
        #[test]
        fn display_parses_back(
            t in 0usize..4,
            a in proptest::prelude::any::<[u8; 16]>(),
            v4 in proptest::prelude::any::<bool>(),
            port in 1u16..,
            key in proptest::option::of(proptest::prelude::any::<[u8; 16]>()),
            name in "[a-z]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z][a-z0-9]{0,5}){0,3}",
            named in proptest::prelude::any::<bool>(),
        ) {
            let transport = [Transport::Tcp, Transport::Udp, Transport::WebSocket, Transport::Hybrid][t];
            let host = if named {
                Host::Name(name)
            } else if v4 {
                Host::Ip(IpAddr::from([a[0], a[1], a[2], a[3]]))
            } else {
                Host::Ip(IpAddr::from(a))
            };
            let e = Endpoint { transport, host, explicit_port: Some(port), path: "/".into(), key: key.map(KeyId) };
            proptest::prop_assert_eq!(e.to_string().parse::<Endpoint>().unwrap(), e);
        }

        #[test]
        fn arbitrary_strings_never_panic(s in "\\PC{0,64}") {
            let _ = s.parse::<Endpoint>();
        }
    }
}
