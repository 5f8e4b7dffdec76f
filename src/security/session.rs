//! One client connection's security state: the listener it came in on and who it authenticated
//! as. Requests of a connection read it through their `RequestContext`.

use std::cell::RefCell;
use std::rc::Rc;

use super::scram::ScramServer;
use crate::config::{Listener, SaslMechanism};

/// Where a connection's SASL exchange stands.
#[derive(Debug, Default)]
pub enum SaslState {
    /// No SaslHandshake yet.
    #[default]
    Start,
    /// Handshake done; SaslAuthenticate comes next.
    Handshaken(SaslMechanism),
    /// Mid-way through a SCRAM exchange.
    Scram(ScramServer),
    /// Authenticated, or failed (the connection is closing).
    Done,
}

#[derive(Debug)]
pub struct Session {
    pub listener: Rc<Listener>,
    /// `User:<name>` once authenticated; `User:ANONYMOUS` on listeners without SASL.
    principal: RefCell<Option<String>>,
    pub sasl: RefCell<SaslState>,
    /// SaslHandshake v0 was used: the exchange's tokens come as raw size-prefixed frames, not
    /// in SaslAuthenticate requests (Kafka's protocol before KIP-152).
    raw_sasl_tokens: std::cell::Cell<bool>,
    /// When the SASL session ends (KIP-368): past it, only a re-authentication may come.
    session_expires_at: std::cell::Cell<Option<std::time::Instant>>,
    /// A quota throttled the connection: no request is handled before then (Kafka mutes the
    /// channel for the throttle time once the response is sent).
    throttled_until: std::cell::Cell<Option<std::time::Instant>>,
    /// A client quota applied to a request of this connection: from then on its requests
    /// run one at a time, each after the previous one's throttle (Kafka handles a connection's
    /// requests one at a time; pipelined requests would otherwise all start before the first
    /// throttle is known).
    quota_applies: std::cell::Cell<bool>,
    /// The turn of the connection's requests while `quota_applies` (first come, first served).
    quota_turn: glommio::sync::Semaphore,
}

/// Kafka's principal of unauthenticated listeners.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

impl Session {
    /// `certificate_principal`: the client certificate's subject on a TLS listener that asked
    /// for one. SASL listeners take the principal from SASL instead, as Kafka does.
    pub fn new(listener: Rc<Listener>, certificate_principal: Option<String>) -> Rc<Session> {
        let principal = (!listener.protocol.requires_sasl())
            .then(|| certificate_principal.unwrap_or_else(|| ANONYMOUS.to_string()));
        Rc::new(Session {
            listener,
            principal: RefCell::new(principal),
            sasl: RefCell::new(SaslState::Start),
            raw_sasl_tokens: std::cell::Cell::new(false),
            session_expires_at: std::cell::Cell::new(None),
            throttled_until: std::cell::Cell::new(None),
            quota_applies: std::cell::Cell::new(false),
            quota_turn: glommio::sync::Semaphore::new(1),
        })
    }

    /// Record data may be sent from page cache to the socket directly (splice): only on
    /// plaintext connections, as TLS encrypts in user space.
    pub fn zero_copy_allowed(&self) -> bool {
        !self.listener.protocol.uses_tls()
    }

    /// After a SaslHandshake v0, the SASL tokens come as raw frames.
    pub fn use_raw_sasl_tokens(&self) {
        self.raw_sasl_tokens.set(true);
    }

    /// The next frame is a raw SASL token, not a Kafka request.
    pub fn expects_raw_sasl_token(&self) -> bool {
        self.raw_sasl_tokens.get()
            && matches!(
                *self.sasl.borrow(),
                SaslState::Handshaken(_) | SaslState::Scram(_)
            )
    }

    pub fn is_authenticated(&self) -> bool {
        self.principal.borrow().is_some()
    }

    pub fn principal(&self) -> Option<String> {
        self.principal.borrow().clone()
    }

    /// Runs `f` on the principal without copying it (authorization checks run per request);
    /// `None` before authentication.
    pub fn with_principal<R>(&self, f: impl FnOnce(&str) -> R) -> Option<R> {
        self.principal.borrow().as_deref().map(f)
    }

    /// Records a successful SASL exchange, lasting `lifetime` (`None`: for ever). A
    /// re-authentication must name the principal already authenticated (KIP-368); `Err` if not.
    pub fn authenticated_as(
        &self,
        user: &str,
        lifetime: Option<std::time::Duration>,
    ) -> Result<(), String> {
        let principal = format!("User:{user}");
        *self.sasl.borrow_mut() = SaslState::Done;
        let mut current = self.principal.borrow_mut();
        if let Some(current) = current
            .as_ref()
            .filter(|_| self.listener.protocol.requires_sasl())
        {
            if *current != principal {
                return Err(format!(
                    "re-authentication as {principal} on a connection of {current}"
                ));
            }
        }
        *current = Some(principal);
        self.session_expires_at
            .set(lifetime.map(|lifetime| std::time::Instant::now() + lifetime));
        Ok(())
    }

    /// The SASL session has expired: the connection may only re-authenticate.
    pub fn session_expired(&self) -> bool {
        self.session_expires_at
            .get()
            .is_some_and(|at| std::time::Instant::now() >= at)
    }

    /// Holds back the connection's next requests for `throttle` from now (the latest of
    /// several throttles wins).
    pub fn throttle(&self, throttle: std::time::Duration) {
        let until = std::time::Instant::now() + throttle;
        if self
            .throttled_until
            .get()
            .is_none_or(|current| current < until)
        {
            self.throttled_until.set(Some(until));
        }
    }

    /// A client quota applies to this connection's requests: they run one at a time.
    pub fn mark_quota_applies(&self) {
        self.quota_applies.set(true);
    }

    /// While a quota applies, waits for the turn of this request (the previous ones have run
    /// and their throttle is set); `None` at once otherwise.
    pub async fn quota_turn(&self) -> Option<glommio::sync::Permit<'_>> {
        if !self.quota_applies.get() {
            return None;
        }
        self.quota_turn.acquire_permit(1).await.ok()
    }

    /// How long the connection stays throttled, if it is.
    pub fn throttle_remaining(&self) -> Option<std::time::Duration> {
        let until = self.throttled_until.get()?;
        let remaining = until.saturating_duration_since(std::time::Instant::now());
        if remaining.is_zero() {
            self.throttled_until.set(None);
            return None;
        }
        Some(remaining)
    }

    /// A new SaslHandshake may start: before any, or to re-authenticate (KIP-368) once the
    /// previous exchange finished.
    pub fn may_start_sasl(&self) -> bool {
        match *self.sasl.borrow() {
            SaslState::Start => true,
            SaslState::Done => self.is_authenticated() && !self.raw_sasl_tokens.get(),
            _ => false,
        }
    }
}
