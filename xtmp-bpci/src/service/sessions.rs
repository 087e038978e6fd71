//! What the server keeps about sessions and nodes, in memory and bounded:
//! WalletAuth challenges and grants (each tied to one session by its
//! channel binding), and each node's write rate and queued writes.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::error::BpciError;
use crate::schema::{Capability, Challenge, Grant, Hash, Millis, WalletId};

use super::Config;

/// A BPI node: the key id of the identity it authenticated with in the
/// handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub [u8; 16]);

struct PendingChallenge {
    wallet: WalletId,
    binding: [u8; 32],
    expires_at: Millis,
}

struct Bucket {
    tokens: f64,
    at: Millis,
    queued: usize,
}

#[derive(Default)]
struct Inner {
    challenges: HashMap<Hash, PendingChallenge>,
    grants: HashMap<([u8; 32], WalletId), Grant>,
    nodes: HashMap<NodeId, Bucket>,
}

/// Challenges, grants and node limits.
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sessions")
    }
}

fn full(what: &str) -> BpciError {
    BpciError::RateLimited { retry_after_ms: 1000, reason: format!("{what} table full") }
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Issues a challenge for `wallet` to the session `binding`.
    pub fn challenge(
        &self,
        c: &Config,
        now: Millis,
        wallet: WalletId,
        binding: [u8; 32],
        nonce: Hash,
    ) -> Result<Challenge, BpciError> {
        let mut i = self.lock();
        if i.challenges.len() >= c.max_auth_entries {
            i.challenges.retain(|_, p| p.expires_at > now);
            if i.challenges.len() >= c.max_auth_entries {
                return Err(full("challenge"));
            }
        }
        let expires_at = now + c.challenge_ttl_ms;
        i.challenges.insert(nonce, PendingChallenge { wallet, binding, expires_at });
        Ok(Challenge { domain: c.domain.clone(), nonce, expires_at })
    }

    /// Takes the challenge `nonce` (once) if it was issued to `binding`
    /// for `wallet` and has not expired; returns its expiry.
    pub fn take_challenge(
        &self,
        now: Millis,
        nonce: &Hash,
        wallet: &WalletId,
        binding: &[u8; 32],
    ) -> Result<Millis, BpciError> {
        let mut i = self.lock();
        let ok = i.challenges.get(nonce).is_some_and(|p| {
            p.wallet == *wallet && xtmp_core::crypto::ct_eq(&p.binding, binding) && p.expires_at > now
        });
        if !ok {
            return Err(BpciError::Unauthorized {
                reason: String::from("nonce: no such challenge for this wallet in this session, or it expired"),
            });
        }
        Ok(i.challenges.remove(nonce).map_or(0, |p| p.expires_at))
    }

    /// Grants `capabilities` for `wallet` to the session `binding`.
    pub fn grant(
        &self,
        c: &Config,
        now: Millis,
        binding: [u8; 32],
        wallet: WalletId,
        mut capabilities: Vec<Capability>,
    ) -> Result<Grant, BpciError> {
        capabilities.sort();
        capabilities.dedup();
        let mut i = self.lock();
        if i.grants.len() >= c.max_auth_entries {
            i.grants.retain(|_, g| g.expires_at > now);
            if i.grants.len() >= c.max_auth_entries {
                return Err(full("grant"));
            }
        }
        let grant = Grant { wallet, capabilities, expires_at: now + c.grant_ttl_ms };
        i.grants.insert((binding, wallet), grant.clone());
        Ok(grant)
    }

    /// FORBIDDEN unless the session `binding` holds `cap` for `wallet`.
    pub fn require(
        &self,
        now: Millis,
        binding: &[u8; 32],
        wallet: &WalletId,
        cap: Capability,
    ) -> Result<(), BpciError> {
        let i = self.lock();
        match i.grants.get(&(*binding, *wallet)) {
            Some(g) if g.expires_at > now && g.capabilities.contains(&cap) => Ok(()),
            _ => Err(BpciError::Forbidden {
                reason: format!("this session holds no {cap:?} grant for wallet {wallet} (WalletAuth first)"),
            }),
        }
    }

    /// Forgets the grants and challenges of the session `binding` (it closed).
    pub fn forget(&self, binding: &[u8; 32]) {
        let mut i = self.lock();
        i.grants.retain(|(b, _), _| b != binding);
        i.challenges.retain(|_, p| p.binding != *binding);
    }

    /// Admits one write by `node`: within its rate and its queue, else
    /// RATE_LIMITED. Admitted writes must be [`Sessions::done`] once stored.
    pub fn admit(&self, c: &Config, now: Millis, node: NodeId) -> Result<(), BpciError> {
        let mut i = self.lock();
        if !i.nodes.contains_key(&node) && i.nodes.len() >= c.max_auth_entries {
            i.nodes.retain(|_, b| b.queued > 0 || b.tokens < f64::from(c.node_burst));
        }
        let b = i.nodes.entry(node).or_insert(Bucket { tokens: f64::from(c.node_burst), at: now, queued: 0 });
        let elapsed = now.saturating_sub(b.at) as f64 / 1000.0;
        b.tokens = (b.tokens + elapsed * f64::from(c.node_rate)).min(f64::from(c.node_burst));
        b.at = now;
        if b.queued >= c.node_queue {
            return Err(BpciError::RateLimited {
                retry_after_ms: 50,
                reason: format!("this node has {} writes waiting (the limit)", b.queued),
            });
        }
        if b.tokens < 1.0 {
            let wait = ((1.0 - b.tokens) / f64::from(c.node_rate.max(1)) * 1000.0).ceil() as u64;
            return Err(BpciError::RateLimited {
                retry_after_ms: wait.max(1),
                reason: format!("over this node's rate of {} writes per second", c.node_rate),
            });
        }
        b.tokens -= 1.0;
        b.queued += 1;
        Ok(())
    }

    /// One of `node`'s admitted writes left the queue.
    pub fn done(&self, node: NodeId) {
        if let Some(b) = self.lock().nodes.get_mut(&node) {
            b.queued = b.queued.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_challenge_is_good_once_in_its_session_for_its_wallet_until_it_expires() {
        let c = Config::default();
        let s = Sessions::default();
        let (w, other) = (WalletId(Hash([1; 32])), WalletId(Hash([2; 32])));
        let n = Hash([9; 32]);
        s.challenge(&c, 1000, w, [5; 32], n).unwrap();
        assert!(s.take_challenge(1000, &n, &w, &[6; 32]).is_err(), "another session");
        assert!(s.take_challenge(1000, &n, &other, &[5; 32]).is_err(), "another wallet");
        assert!(s.take_challenge(1000 + c.challenge_ttl_ms, &n, &w, &[5; 32]).is_err(), "expired");
        assert!(s.take_challenge(1000, &n, &w, &[5; 32]).is_ok());
        assert!(s.take_challenge(1000, &n, &w, &[5; 32]).is_err(), "used twice");
    }

    #[test]
    fn grants_belong_to_one_session_and_end() {
        let c = Config::default();
        let s = Sessions::default();
        let w = WalletId(Hash([1; 32]));
        s.grant(&c, 0, [5; 32], w, vec![Capability::ReadBalance]).unwrap();
        assert!(s.require(1, &[5; 32], &w, Capability::ReadBalance).is_ok());
        assert!(s.require(1, &[5; 32], &w, Capability::SubmitBundles).is_err());
        assert!(s.require(1, &[6; 32], &w, Capability::ReadBalance).is_err());
        assert!(s.require(c.grant_ttl_ms, &[5; 32], &w, Capability::ReadBalance).is_err());
        s.forget(&[5; 32]);
        assert!(s.require(1, &[5; 32], &w, Capability::ReadBalance).is_err());
    }

    #[test]
    fn a_node_is_held_to_its_rate_and_its_queue() {
        let c = Config { node_rate: 10, node_burst: 3, node_queue: 2, ..Config::default() };
        let s = Sessions::default();
        let n = NodeId([1; 16]);
        s.admit(&c, 0, n).unwrap();
        s.admit(&c, 0, n).unwrap();
        assert!(matches!(s.admit(&c, 0, n), Err(BpciError::RateLimited { .. })), "queue of 2");
        s.done(n);
        s.admit(&c, 0, n).unwrap();
        s.done(n);
        s.done(n);
        match s.admit(&c, 0, n) {
            Err(BpciError::RateLimited { retry_after_ms, .. }) => assert_eq!(retry_after_ms, 100),
            other => panic!("burst of 3 spent: {other:?}"),
        }
        s.admit(&c, 100, n).unwrap();
        assert!(s.admit(&c, 0, NodeId([2; 16])).is_ok(), "another node has its own budget");
    }
}
