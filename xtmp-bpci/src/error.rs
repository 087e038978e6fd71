//! The application's errors (SPEC.md 5.9): what a service refuses, with
//! the Error response's code (from `0x100`) and a reason whose form the
//! code fixes, so that a client turns it back into the same typed value.

use std::fmt;

use xtmp_adapter::Rejection;
use xtmp_core::session::ErrorCode;

use crate::schema::BundleState;

/// The application's error codes, carried in the core's Error response.
pub mod code {
    use xtmp_core::session::ErrorCode;
    /// A field broke a rule; the reason is `"<field>: <rule>"`.
    pub const INVALID: ErrorCode = ErrorCode(0x0100);
    /// The wallet, bundle, record or block does not exist.
    pub const NOT_FOUND: ErrorCode = ErrorCode(0x0101);
    /// An idempotency key (a transfer's sender and nonce, a registry
    /// version) was used with another body.
    pub const CONFLICT: ErrorCode = ErrorCode(0x0102);
    /// The bundle has no receipt yet: it is not final.
    pub const NOT_FINAL: ErrorCode = ErrorCode(0x0103);
    /// The cursor is older than the events the server keeps.
    pub const CURSOR_EXPIRED: ErrorCode = ErrorCode(0x0104);
    /// Over a rate or queue limit; the reason is `"retry after <ms> ms: ..."`.
    pub const RATE_LIMITED: ErrorCode = ErrorCode(0x0105);
    /// The node or wallet is not authenticated (or its proof is bad).
    pub const UNAUTHORIZED: ErrorCode = ErrorCode(0x0106);
    /// Authenticated, but without the capability this needs.
    pub const FORBIDDEN: ErrorCode = ErrorCode(0x0107);
    /// The sender's balance is below the amount.
    pub const INSUFFICIENT_FUNDS: ErrorCode = ErrorCode(0x0108);
    /// The bundle is final but was not confirmed: it has no receipt.
    pub const NO_RECEIPT: ErrorCode = ErrorCode(0x0109);
}

/// A service's refusal. Each variant is one code; nothing changed in the
/// store when one is returned.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BpciError {
    /// `INVALID`: `field` broke `rule`.
    Invalid {
        /// The field, as a path (`bundle.merkle_root`, `approvals[1]`).
        field: String,
        /// The rule it broke.
        rule: String,
    },
    /// `NOT_FOUND`: `what` does not exist.
    NotFound {
        /// What was looked for (`wallet w:…`, `bundle …`).
        what: String,
    },
    /// `CONFLICT`: the key was used with another body.
    Conflict {
        /// Which key, and how the bodies differ.
        reason: String,
    },
    /// `NOT_FINAL`: the bundle is in this state, not final.
    NotFinal {
        /// Its state.
        state: BundleState,
    },
    /// `NO_RECEIPT`: the bundle ended in this state, not Confirmed.
    NoReceipt {
        /// Its state.
        state: BundleState,
    },
    /// `CURSOR_EXPIRED`: the oldest event kept has this sequence number.
    CursorExpired {
        /// The oldest sequence number kept: resume from `first - 1` or
        /// re-read the state.
        first: u64,
    },
    /// `RATE_LIMITED`: try again after this many milliseconds.
    RateLimited {
        /// How long to wait.
        retry_after_ms: u64,
        /// Which limit.
        reason: String,
    },
    /// `UNAUTHORIZED`.
    Unauthorized {
        /// Why.
        reason: String,
    },
    /// `FORBIDDEN`.
    Forbidden {
        /// Which capability is missing.
        reason: String,
    },
    /// `INSUFFICIENT_FUNDS`.
    InsufficientFunds {
        /// The sender's balance.
        balance: u64,
        /// The amount asked for.
        amount: u64,
    },
    /// The core's `INTERNAL`: the server could not do it (its store failed).
    Internal {
        /// What failed.
        reason: String,
    },
    /// Another code (from a newer server).
    Other {
        /// The code.
        code: u16,
        /// The reason.
        reason: String,
    },
}

impl BpciError {
    /// An `INVALID` error.
    pub fn invalid(field: impl Into<String>, rule: impl Into<String>) -> BpciError {
        BpciError::Invalid { field: field.into(), rule: rule.into() }
    }

    /// A `NOT_FOUND` error.
    pub fn not_found(what: impl Into<String>) -> BpciError {
        BpciError::NotFound { what: what.into() }
    }

    /// The Error response's code.
    pub fn code(&self) -> ErrorCode {
        match self {
            BpciError::Invalid { .. } => code::INVALID,
            BpciError::NotFound { .. } => code::NOT_FOUND,
            BpciError::Conflict { .. } => code::CONFLICT,
            BpciError::NotFinal { .. } => code::NOT_FINAL,
            BpciError::NoReceipt { .. } => code::NO_RECEIPT,
            BpciError::CursorExpired { .. } => code::CURSOR_EXPIRED,
            BpciError::RateLimited { .. } => code::RATE_LIMITED,
            BpciError::Unauthorized { .. } => code::UNAUTHORIZED,
            BpciError::Forbidden { .. } => code::FORBIDDEN,
            BpciError::InsufficientFunds { .. } => code::INSUFFICIENT_FUNDS,
            BpciError::Internal { .. } => ErrorCode::INTERNAL,
            BpciError::Other { code, .. } => ErrorCode(*code),
        }
    }

    /// The Error response's reason (SPEC.md 5.9 gives each code's form).
    pub fn reason(&self) -> String {
        match self {
            BpciError::Invalid { field, rule } => format!("{field}: {rule}"),
            BpciError::NotFound { what } => format!("{what} not found"),
            BpciError::Conflict { reason } => reason.clone(),
            BpciError::NotFinal { state } => format!("bundle is {state}"),
            BpciError::NoReceipt { state } => format!("bundle is {state}"),
            BpciError::CursorExpired { first } => format!("oldest event kept is {first}"),
            BpciError::RateLimited { retry_after_ms, reason } => format!("retry after {retry_after_ms} ms: {reason}"),
            BpciError::Unauthorized { reason } | BpciError::Forbidden { reason } => reason.clone(),
            BpciError::InsufficientFunds { balance, amount } => format!("balance {balance} is below {amount}"),
            BpciError::Internal { reason } | BpciError::Other { reason, .. } => reason.clone(),
        }
    }

    /// The typed error an Error response with `code` and `reason` carries.
    pub fn from_wire(code: ErrorCode, reason: &str) -> BpciError {
        let number = |s: &str| s.split(|c: char| !c.is_ascii_digit()).find(|t| !t.is_empty())?.parse::<u64>().ok();
        let state = |s: &str| {
            let name = s.strip_prefix("bundle is ")?;
            [1, 2, 3, 4, 5].into_iter().filter_map(BundleState::from_code).find(|st| st.name() == name)
        };
        let other = || BpciError::Other { code: code.0, reason: reason.to_string() };
        match code {
            code::INVALID => match reason.split_once(": ") {
                Some((field, rule)) => BpciError::invalid(field, rule),
                None => BpciError::invalid("", reason),
            },
            code::NOT_FOUND => BpciError::not_found(reason.strip_suffix(" not found").unwrap_or(reason)),
            code::CONFLICT => BpciError::Conflict { reason: reason.to_string() },
            code::NOT_FINAL => state(reason).map_or_else(other, |state| BpciError::NotFinal { state }),
            code::NO_RECEIPT => state(reason).map_or_else(other, |state| BpciError::NoReceipt { state }),
            code::CURSOR_EXPIRED => number(reason).map_or_else(other, |first| BpciError::CursorExpired { first }),
            code::RATE_LIMITED => match (reason.strip_prefix("retry after ").and_then(number), reason.split_once(": "))
            {
                (Some(ms), Some((_, why))) => BpciError::RateLimited { retry_after_ms: ms, reason: why.to_string() },
                _ => other(),
            },
            code::UNAUTHORIZED => BpciError::Unauthorized { reason: reason.to_string() },
            code::FORBIDDEN => BpciError::Forbidden { reason: reason.to_string() },
            code::INSUFFICIENT_FUNDS => {
                let mut n = reason.split(' ').filter_map(|t| t.parse::<u64>().ok());
                match (n.next(), n.next()) {
                    (Some(balance), Some(amount)) => BpciError::InsufficientFunds { balance, amount },
                    _ => other(),
                }
            }
            ErrorCode::INTERNAL => BpciError::Internal { reason: reason.to_string() },
            _ => other(),
        }
    }
}

impl fmt::Display for BpciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            BpciError::Invalid { .. } => "invalid",
            BpciError::NotFound { .. } => "not found",
            BpciError::Conflict { .. } => "conflict",
            BpciError::NotFinal { .. } => "not final",
            BpciError::NoReceipt { .. } => "no receipt",
            BpciError::CursorExpired { .. } => "cursor expired",
            BpciError::RateLimited { .. } => "rate limited",
            BpciError::Unauthorized { .. } => "unauthorized",
            BpciError::Forbidden { .. } => "forbidden",
            BpciError::InsufficientFunds { .. } => "insufficient funds",
            BpciError::Internal { .. } => "server error",
            BpciError::Other { .. } => "error",
        };
        write!(f, "{name} (0x{:04x}): {}", self.code().0, self.reason())
    }
}

impl std::error::Error for BpciError {}

impl From<BpciError> for Rejection {
    fn from(e: BpciError) -> Rejection {
        Rejection { code: e.code(), reason: e.reason() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_survives_the_wire() {
        let all = [
            BpciError::invalid("bundle.merkle_root", "does not match the transactions"),
            BpciError::not_found("wallet w:00"),
            BpciError::Conflict { reason: "transfer nonce 3 was used with another body".into() },
            BpciError::NotFinal { state: BundleState::Validated },
            BpciError::NoReceipt { state: BundleState::Expired },
            BpciError::CursorExpired { first: 1234 },
            BpciError::RateLimited { retry_after_ms: 250, reason: "node queue full (64)".into() },
            BpciError::Unauthorized { reason: "no node identity".into() },
            BpciError::Forbidden { reason: "needs ReadBalance".into() },
            BpciError::InsufficientFunds { balance: 5, amount: 9 },
            BpciError::Internal { reason: "store: disk full".into() },
        ];
        for e in all {
            assert_eq!(BpciError::from_wire(e.code(), &e.reason()), e, "{e}");
        }
        assert_eq!(
            BpciError::from_wire(ErrorCode(0x1ff), "new"),
            BpciError::Other { code: 0x1ff, reason: "new".into() }
        );
    }
}
