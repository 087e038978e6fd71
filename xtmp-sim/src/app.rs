//! An application hosted by the simulator: the server's services and the
//! clients' application, above the sessions, under the simulator's faults.
//!
//! Without one, the simulator's server answers every request with the
//! request's digest and its clients send the workload's synthetic
//! messages. With one ([`Scenario::app`](crate::Scenario::app)), each
//! request a client's application makes ([`Application::next_request`]) is
//! sent as a reliable request on the client's current session; the server
//! hands it to [`Application::serve`], whose answer (a body, or an Error
//! response's code and reason) goes back; the answer reaches
//! [`Application::answered`], or, when the session ends first,
//! [`Application::unanswered`]. Crashes reach the application too: a
//! crashed server or client keeps only what the application keeps
//! durably. The run settles only when every client's application says it
//! is [done](Application::done), and [`Application::check`] holds the
//! application's invariants during and at the end of the run.
//!
//! Time is the simulator's, in milliseconds since the run started: the
//! application has no clock of its own, so every run replays.

use std::fmt;
use std::sync::Arc;

use xtmp_core::session::ErrorCode;
use xtmp_core::wire::MessageType;

/// A request a client's application makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppRequest {
    /// Its message type.
    pub message_type: MessageType,
    /// Its body.
    pub body: Vec<u8>,
    /// The application's own reference, given back with the answer.
    pub tag: u64,
}

/// An Error response: its code and reason.
pub type AppError = (ErrorCode, String);

/// The application: the server's side and every client's side.
pub trait Application: Send {
    /// The server: a request arrived on the session `session`, whose
    /// channel binding (SPEC.md 2.4.1) is `binding`. Returns the response
    /// body, or an Error response's code and reason.
    fn serve(
        &mut self,
        now_ms: u64,
        session: u64,
        binding: &[u8; 32],
        message_type: MessageType,
        body: &[u8],
    ) -> Result<Vec<u8>, AppError>;

    /// The server's background work (every [`Application::tick_ms`] while
    /// it runs): checks, transitions, blocks.
    fn server_tick(&mut self, now_ms: u64);

    /// The server's process died: what it kept only in memory is gone.
    fn server_crashed(&mut self);

    /// Client `client`'s next request, if it has one now; asked again
    /// until it answers `None`, and then every [`Application::tick_ms`].
    /// `session` counts the client's sessions; `binding` is the current
    /// session's channel binding.
    fn next_request(&mut self, client: usize, now_ms: u64, session: u32, binding: &[u8; 32]) -> Option<AppRequest>;

    /// The answer to the request tagged `tag`.
    fn answered(&mut self, client: usize, now_ms: u64, tag: u64, answer: Result<&[u8], AppError>);

    /// The request tagged `tag` will get no answer (its session ended or
    /// the request failed): the application may make it again.
    fn unanswered(&mut self, client: usize, tag: u64);

    /// The client's process died: what it kept only in memory is gone
    /// (its requests in flight were [`Application::unanswered`] first).
    fn client_crashed(&mut self, client: usize);

    /// Whether the client's application has finished its work.
    fn done(&self, client: usize) -> bool;

    /// The application's invariants; `end` at the end of a run (when
    /// every client is [done](Application::done)). An `Err` is a
    /// violation.
    fn check(&self, end: bool) -> Result<(), String>;

    /// What the run did, for its report.
    fn summary(&self) -> String {
        String::new()
    }

    /// How often the server ticks and idle clients are asked again
    /// (default 5 ms).
    fn tick_ms(&self) -> u64 {
        5
    }
}

/// Makes a run's application from the run's seed.
#[derive(Clone)]
pub struct AppSpec {
    /// Its name, for reports.
    pub name: String,
    make: Arc<dyn Fn(u64, usize) -> Box<dyn Application> + Send + Sync>,
}

impl AppSpec {
    /// An application named `name`, made by `make(seed, clients)`.
    pub fn new(
        name: impl Into<String>,
        make: impl Fn(u64, usize) -> Box<dyn Application> + Send + Sync + 'static,
    ) -> AppSpec {
        AppSpec { name: name.into(), make: Arc::new(make) }
    }

    pub(crate) fn make(&self, seed: u64, clients: usize) -> Box<dyn Application> {
        (self.make)(seed, clients)
    }
}

impl fmt::Debug for AppSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppSpec").field("name", &self.name).finish_non_exhaustive()
    }
}

/// An Error response's body (SPEC.md 4.3: `code u16 ‖ reason length u16 ‖
/// reason`).
pub(crate) fn error_body(code: ErrorCode, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(1024);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason[..end];
    let mut out = Vec::with_capacity(4 + reason.len());
    out.extend_from_slice(&code.0.to_be_bytes());
    out.extend_from_slice(&(reason.len() as u16).to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
    out
}
