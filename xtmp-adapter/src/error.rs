//! The adapter's error type.

use std::fmt;
use std::io;

use xtmp_core::session::{CloseReason, ErrorCode, FailReason, SendError};

/// What went wrong with a connection, a request or a send.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A socket operation failed.
    Io(io::Error),
    /// The core refused the configuration or the connection attempt.
    Config(String),
    /// The session ended (or never started): why.
    Closed(CloseReason),
    /// The core refused to queue the message.
    Send(SendError),
    /// The message was not acknowledged: given up or the session closed.
    NotDelivered(FailReason),
    /// The peer answered the request (or refused the subscription) with
    /// an Error response.
    Remote {
        /// The error code the peer chose.
        code: ErrorCode,
        /// The peer's reason, for people.
        reason: String,
    },
    /// No answer within the request timeout.
    Timeout,
    /// The endpoint could not be resolved, or its server is not trusted.
    Connect(crate::ConnectError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "socket error: {e}"),
            Error::Config(e) => write!(f, "configuration refused: {e}"),
            Error::Closed(r) => write!(f, "session closed: {r}"),
            Error::Send(e) => write!(f, "message refused: {e}"),
            Error::NotDelivered(r) => write!(f, "message not delivered: {r}"),
            Error::Remote { code, reason } => write!(f, "peer answered with error 0x{:04x}: {reason}", code.0),
            Error::Timeout => f.write_str("no answer within the request timeout"),
            Error::Connect(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Connect(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

impl From<crate::ConnectError> for Error {
    fn from(e: crate::ConnectError) -> Error {
        Error::Connect(e)
    }
}
