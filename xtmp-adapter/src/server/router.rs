//! Handlers by message type: requests and one-way messages get a
//! [`Request`], subscriptions a [`Request`] and a [`Publisher`].

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use xtmp_core::endpoint::SessionHandle;
use xtmp_core::handshake::PublicIdentity;
use xtmp_core::session::{ErrorCode, Message};
use xtmp_core::wire::MessageType;

use super::publisher::Publisher;
use crate::resolve::BoxFuture;

/// Who sent a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The session, as the endpoint names it.
    pub session: SessionHandle,
    /// The address the session was accepted from.
    pub addr: SocketAddr,
    /// The client's identity, if it authenticated with one.
    pub identity: Option<PublicIdentity>,
    /// The session's channel binding (SPEC.md 2.4.1, RFC 9266): a value
    /// only this session's two ends can compute. An application binds a
    /// statement to the session by having the client sign it.
    pub channel_binding: [u8; xtmp_core::session::CHANNEL_BINDING_LEN],
}

/// A message handed to a handler.
#[derive(Clone, Debug)]
pub struct Request {
    /// Who sent it.
    pub peer: Peer,
    /// The message itself (type, kind, priority, body); a subscription's
    /// body is its filter.
    pub message: Message,
}

/// A handler's answer to a request (ignored for a one-way message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The response's type.
    pub message_type: MessageType,
    /// The response's body.
    pub body: Bytes,
}

impl Reply {
    /// A response of type `message_type` carrying `body`.
    pub fn new(message_type: MessageType, body: impl Into<Bytes>) -> Reply {
        Reply { message_type, body: body.into() }
    }
}

/// A handler's refusal: sent to the client as an Error (`FE`) response
/// (or, for a subscription already accepted, as its end).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The error code.
    pub code: ErrorCode,
    /// Why, for people.
    pub reason: String,
}

impl Rejection {
    /// A refusal (`ErrorCode::REFUSED`) with `reason`.
    pub fn refused(reason: impl Into<String>) -> Rejection {
        Rejection { code: ErrorCode::REFUSED, reason: reason.into() }
    }
}

pub(crate) type Handler = Arc<dyn Fn(Request) -> BoxFuture<'static, Result<Reply, Rejection>> + Send + Sync>;
pub(crate) type StreamHandler =
    Arc<dyn Fn(Request, Publisher) -> BoxFuture<'static, Result<(), Rejection>> + Send + Sync>;

/// Handlers by message type. A request (or a subscription) of a type with
/// no handler gets an Error response `UNKNOWN_TYPE`; a one-way message of
/// such a type is dropped.
#[derive(Clone, Default)]
pub struct Router {
    pub(crate) routes: HashMap<MessageType, Handler>,
    pub(crate) streams: HashMap<MessageType, StreamHandler>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("routes", &self.routes.keys().collect::<Vec<_>>())
            .field("streams", &self.streams.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Router {
    /// A router with no routes.
    pub fn new() -> Router {
        Router::default()
    }

    /// Runs `handler` for every request and one-way message of
    /// `message_type`. A request's client gets the handler's [`Reply`] or
    /// [`Rejection`].
    ///
    /// The handler's future is polled first on the server's driver, the
    /// task that serves every session: one that answers at once (a lookup,
    /// an echo) costs no task and no wake-up, which takes about a fifth off
    /// a request's round trip. One that is not ready then moves to a task
    /// of its own. So do no long or blocking work before the first
    /// `.await`: it would hold up every session, not just this request.
    /// Hand such work to a blocking pool, or start the future with the
    /// runtime's `yield_now().await`.
    pub fn route<F, Fut>(mut self, message_type: MessageType, handler: F) -> Router
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Reply, Rejection>> + Send + 'static,
    {
        self.routes.insert(message_type, Arc::new(move |r| Box::pin(handler(r))));
        self
    }

    /// Runs `handler` (in its own task) for every subscription to
    /// `message_type` (the request's body is the filter). The handler
    /// pushes items through the [`Publisher`]; the subscription is
    /// accepted by its first push (or [`Publisher::accept`]). Returning
    /// `Ok(())` ends the stream (code 0); returning a [`Rejection`] refuses
    /// the subscription if it was not accepted yet, and ends it with that
    /// code and reason otherwise.
    pub fn subscription<F, Fut>(mut self, message_type: MessageType, handler: F) -> Router
    where
        F: Fn(Request, Publisher) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Rejection>> + Send + 'static,
    {
        self.streams.insert(message_type, Arc::new(move |r, p| Box::pin(handler(r, p))));
        self
    }
}
