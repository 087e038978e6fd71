//! The body of the `endpoint_registry` fuzz target, here so that the
//! stable test suite runs it too.

use crate::{Endpoint, Registry};

/// Any text parses as an endpoint and as a registry, or is refused,
/// without a panic; what parses prints back to text that parses to the
/// same value.
pub fn endpoint_registry(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(e) = text.parse::<Endpoint>() {
        let shown = e.to_string();
        let again: Endpoint = shown.parse().unwrap_or_else(|err| panic!("{shown:?} does not parse: {err}"));
        assert_eq!(again.to_string(), shown);
        assert_eq!((again.transport, again.port(), again.key), (e.transport, e.port(), e.key));
    }
    if let Ok(r) = Registry::parse(text) {
        let shown = r.to_text();
        assert_eq!(Registry::parse(&shown).unwrap_or_else(|err| panic!("{shown:?}: {err}")), r);
    }
}

#[cfg(test)]
mod tests {
    proptest::proptest! {
        /// Text made of the characters the grammars care about, so that
        /// much of it parses.
        #[test]
        fn round_trips(s in "(xtmp(\\+(udp|ws|hybrid|tcp))?://)?[a-f0-9:.\\[\\]/?=&# \\n\\t-]{0,40}(xtmp1:[0-9a-f]{32})?") {
            super::endpoint_registry(s.as_bytes());
        }
    }

    #[test]
    fn known_inputs() {
        for s in [
            "xtmp://[::ffff:1.2.3.4]:1",
            "xtmp+ws://a/?key=xtmp1:00112233445566778899aabbccddeeff",
            "a. 1.2.3.4\n[::1] [::1]\n",
            "xtmp+ws://a/%2F",
        ] {
            super::endpoint_registry(s.as_bytes());
        }
    }
}
