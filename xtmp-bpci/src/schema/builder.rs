//! Building a canonical bundle from a node's transactions, so that a node
//! never assembles the Merkle root, the count or the total by hand.

use std::fmt;
use std::time::Duration;

use super::{Approval, Bundle, Hash, Millis, NodeMetadata, SubmitRequest, WalletId, merkle};

/// Why a bundle could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// No transaction was added.
    NoTransactions,
    /// The values add up past `u64::MAX` minor units.
    ValueOverflow,
    /// The deadline is not after the creation time.
    DeadlineNotAfterCreation {
        /// When the bundle was built (ms).
        created_at: Millis,
        /// Its deadline (ms).
        valid_until: Millis,
    },
    /// Neither a deadline nor a validity period was given.
    NoDeadline,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::NoTransactions => f.write_str("a bundle needs at least one transaction"),
            BuildError::ValueOverflow => f.write_str("the transactions' values add up past 2^64 - 1 minor units"),
            BuildError::DeadlineNotAfterCreation { created_at, valid_until } => {
                write!(f, "the deadline ({valid_until} ms) is not after the creation time ({created_at} ms)")
            }
            BuildError::NoDeadline => f.write_str("a bundle needs a deadline: valid_until or valid_for"),
        }
    }
}

impl std::error::Error for BuildError {}

/// Builds a [`Bundle`]: transactions with their values, then the
/// metadata; [`BundleBuilder::build`] computes the Merkle root (RFC 6962),
/// the count and the total, and checks the deadline.
///
/// ```
/// use std::time::Duration;
/// use xtmp_bpci::schema::{Bundle, Hash, NodeMetadata};
///
/// let node = NodeMetadata { node_id: "bpi-1".into(), network: "bpi-testnet".into(), ..Default::default() };
/// let bundle = Bundle::builder(node)
///     .transaction(Hash::of(b"tx 1"), 500)
///     .transaction(Hash::of(b"tx 2"), 250)
///     .created_at(1_700_000_000_000)
///     .valid_for(Duration::from_secs(60))
///     .build()
///     .unwrap();
/// assert_eq!((bundle.transaction_count, bundle.total_value), (2, 750));
/// assert_eq!(bundle.valid_until, 1_700_000_060_000);
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct BundleBuilder {
    node: NodeMetadata,
    transactions: Vec<Hash>,
    total: Option<u64>,
    created_at: Option<Millis>,
    valid_until: Option<Millis>,
    valid_for: Option<Duration>,
    endorsement: Vec<u8>,
    wallet: Option<WalletId>,
}

impl Bundle {
    /// A builder for a bundle from the node `node`.
    pub fn builder(node: NodeMetadata) -> BundleBuilder {
        BundleBuilder {
            node,
            transactions: Vec::new(),
            total: Some(0),
            created_at: None,
            valid_until: None,
            valid_for: None,
            endorsement: Vec::new(),
            wallet: None,
        }
    }
}

impl BundleBuilder {
    /// Adds a transaction: its id and its value in minor units.
    pub fn transaction(mut self, id: Hash, value: u64) -> Self {
        self.transactions.push(id);
        self.total = self.total.and_then(|t| t.checked_add(value));
        self
    }

    /// Adds transactions, in order.
    pub fn transactions(self, txs: impl IntoIterator<Item = (Hash, u64)>) -> Self {
        txs.into_iter().fold(self, |b, (id, value)| b.transaction(id, value))
    }

    /// When the node built it (ms since the Unix epoch; default: now).
    pub fn created_at(mut self, ms: Millis) -> Self {
        self.created_at = Some(ms);
        self
    }

    /// Its deadline (ms since the Unix epoch): a bundle not confirmed by
    /// then expires.
    pub fn valid_until(mut self, ms: Millis) -> Self {
        self.valid_until = Some(ms);
        self
    }

    /// Its deadline, as a period after its creation.
    pub fn valid_for(mut self, period: Duration) -> Self {
        self.valid_for = Some(period);
        self
    }

    /// The endorsement proof (kept and hashed, not verified by the server).
    pub fn endorsement(mut self, proof: impl Into<Vec<u8>>) -> Self {
        self.endorsement = proof.into();
        self
    }

    /// The wallet it is submitted for.
    pub fn wallet(mut self, wallet: WalletId) -> Self {
        self.wallet = Some(wallet);
        self
    }

    /// The bundle, canonical: its id is [`Bundle::id`].
    pub fn build(self) -> Result<Bundle, BuildError> {
        if self.transactions.is_empty() {
            return Err(BuildError::NoTransactions);
        }
        let total_value = self.total.ok_or(BuildError::ValueOverflow)?;
        let created_at = self.created_at.unwrap_or_else(now_ms);
        let valid_until = match (self.valid_until, self.valid_for) {
            (Some(t), _) => t,
            (None, Some(d)) => created_at.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            (None, None) => return Err(BuildError::NoDeadline),
        };
        if valid_until <= created_at {
            return Err(BuildError::DeadlineNotAfterCreation { created_at, valid_until });
        }
        Ok(Bundle {
            merkle_root: merkle::root(&self.transactions),
            transaction_count: self.transactions.len() as u64,
            transactions: self.transactions,
            total_value,
            created_at,
            valid_until,
            node: self.node,
            endorsement: self.endorsement,
            wallet: self.wallet,
        })
    }
}

impl SubmitRequest {
    /// A submission of `bundle` with the notaries' `approvals`.
    pub fn new(bundle: Bundle, approvals: Vec<Approval>) -> SubmitRequest {
        SubmitRequest { bundle, approvals }
    }
}

fn now_ms() -> Millis {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeMetadata {
        NodeMetadata { node_id: "bpi-1".into(), ..Default::default() }
    }

    #[test]
    fn the_built_bundle_is_canonical_and_each_rule_names_itself() {
        let (a, b) = (Hash::of(b"a"), Hash::of(b"b"));
        let bundle = Bundle::builder(node())
            .transactions([(a, 7), (b, 8)])
            .created_at(1_000)
            .valid_until(2_000)
            .endorsement(b"proof".to_vec())
            .build()
            .unwrap();
        assert_eq!(bundle.merkle_root, merkle::root(&[a, b]));
        assert_eq!((bundle.transaction_count, bundle.total_value, bundle.valid_until), (2, 15, 2_000));
        // Two builds of the same content are the same bundle.
        let again = Bundle::builder(node())
            .transaction(a, 7)
            .transaction(b, 8)
            .created_at(1_000)
            .valid_until(2_000)
            .endorsement(b"proof".to_vec())
            .build()
            .unwrap();
        assert_eq!(bundle.id(), again.id());

        let b0 = || Bundle::builder(node()).created_at(1_000);
        assert_eq!(b0().valid_for(Duration::from_secs(1)).build(), Err(BuildError::NoTransactions));
        assert_eq!(
            b0().transaction(a, u64::MAX).transaction(b, 1).valid_for(Duration::from_secs(1)).build(),
            Err(BuildError::ValueOverflow)
        );
        assert_eq!(b0().transaction(a, 1).build(), Err(BuildError::NoDeadline));
        assert_eq!(
            b0().transaction(a, 1).valid_until(1_000).build(),
            Err(BuildError::DeadlineNotAfterCreation { created_at: 1_000, valid_until: 1_000 })
        );
        assert!(BuildError::ValueOverflow.to_string().contains("2^64"));
    }
}
