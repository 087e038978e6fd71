//! Fuzz target bodies, as plain functions of the fuzzer's bytes.
//!
//! Each cargo-fuzz target in `fuzz/fuzz_targets/` is a one-line call into
//! this module, and the stable test suite replays every file under
//! `fuzz/regressions/<target>/` and `fuzz/seeds/<target>/` through the same
//! functions, so a crash found once stays fixed without nightly. Compiled
//! only for tests and with the `__fuzzing` feature (which needs `std`); not
//! a public API.
//!
//! Structured targets read their input positionally with
//! [`arbitrary::Unstructured`]: changing how a target reads its bytes
//! reinterprets the committed corpus (it still runs, it just means
//! something else), so regression files are kept small and named after
//! what they found.
//!
//! | target | what it feeds | what it asserts |
//! | --- | --- | --- |
//! | `frame_decode` | bytes as one frame and as a datagram | decodes re-encode to the same bytes |
//! | `deframer` | a byte stream in random chunks | same frames as one-shot decoding, bounded buffer |
//! | `handshake_client` | server frames (real, mutated, forged) to a client | no panic; a completed handshake needs the real flight |
//! | `handshake_server` | client frames (real, mutated, forged) to an endpoint | no panic; admission bounds hold |
//! | `session_input` | frames sealed with the real keys, with any header and plaintext, to an established session | no panic; memory and state bounds |
//! | `session_tamper` | mutated copies of real encrypted frames | every one rejected; no window, key or counter moved |
//! | `reassembly` | fragments (overlaps, gaps, huge sizes) | agrees with a naive model; memory bound |
//! | `replay_window` | sequence numbers | agrees with a set-based model |
//! | `decompress` | compressed payloads | never more than the declared limit is allocated; round trips |
//! | `session_ops` | operations on a client–server pair | what was received reliably equals what was sent |

mod compress;
mod fixture;
mod handshake;
mod ops;
mod reassembly;
mod replay;
mod session;
mod wire;

pub use compress::decompress;
pub use handshake::{handshake_client, handshake_server};
pub use ops::session_ops;
pub use reassembly::reassembly;
pub use replay::replay_window;
pub use session::{session_input, session_tamper};
pub use wire::{deframer, frame_decode};

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target, by the name its cargo-fuzz binary and corpus folders use.
pub const TARGETS: &[(&str, Target)] = &[
    ("frame_decode", frame_decode),
    ("deframer", deframer),
    ("handshake_client", handshake_client),
    ("handshake_server", handshake_server),
    ("session_input", session_input),
    ("session_tamper", session_tamper),
    ("reassembly", reassembly),
    ("replay_window", replay_window),
    ("session_ops", session_ops),
    ("decompress", decompress),
];

#[cfg(test)]
mod tests {
    extern crate std;
    use alloc::vec::Vec;
    use rand_core::{Rng, SeedableRng};
    use std::path::PathBuf;

    fn fuzz_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
    }

    /// Replays `fuzz/regressions/<target>` and `fuzz/seeds/<target>`.
    fn replay(target: &str, f: fn(&[u8])) -> usize {
        let mut n = 0;
        for dir in ["regressions", "seeds"] {
            let Ok(entries) = std::fs::read_dir(fuzz_dir().join(dir).join(target)) else { continue };
            for entry in entries {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let caught = std::panic::catch_unwind(|| f(&data));
                assert!(caught.is_ok(), "{target}: {} fails", path.display());
                n += 1;
            }
        }
        n
    }

    /// Every target has seeds, and every seed and regression input passes.
    #[test]
    fn replay_corpora() {
        for (name, f) in super::TARGETS {
            let n = replay(name, *f);
            assert!(n > 0, "{name}: no seeds or regressions in fuzz/");
        }
    }

    /// Every target is wired into the cargo-fuzz crate under its name.
    #[test]
    fn every_target_has_a_binary() {
        let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
        for (name, _) in super::TARGETS {
            assert!(manifest.contains(&alloc::format!("name = \"{name}\"")), "fuzz/Cargo.toml lacks {name}");
            let src = std::fs::read_to_string(fuzz_dir().join("fuzz_targets").join(alloc::format!("{name}.rs")));
            assert!(src.is_ok_and(|s| s.contains(&alloc::format!("fuzzing::{name}("))), "no fuzz target calls {name}");
        }
    }

    /// A short stable-toolchain run of every target on seeded random bytes
    /// and on random mutations of its seeds (a smoke test; the real search
    /// runs under cargo-fuzz).
    #[test]
    fn random_inputs() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5eed);
        for (name, f) in super::TARGETS {
            let seeds: Vec<Vec<u8>> = std::fs::read_dir(fuzz_dir().join("seeds").join(name))
                .map(|d| d.map(|e| std::fs::read(e.unwrap().path()).unwrap()).collect())
                .unwrap_or_default();
            for i in 0..48 {
                let mut data = match seeds.get(i % seeds.len().max(1)) {
                    Some(s) if i % 2 == 0 => s.clone(),
                    _ => {
                        let mut v = alloc::vec![0u8; (rng.next_u32() % 2048) as usize];
                        rng.fill_bytes(&mut v);
                        v
                    }
                };
                for _ in 0..(rng.next_u32() % 4) {
                    if !data.is_empty() {
                        let at = rng.next_u32() as usize % data.len();
                        data[at] ^= 1 << (rng.next_u32() % 8);
                    }
                }
                let caught = std::panic::catch_unwind(|| f(&data));
                assert!(caught.is_ok(), "{name} panicked on {}", hex::encode(&data));
            }
        }
    }
}
