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
}

/// Kafka's principal of unauthenticated listeners.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

impl Session {
    pub fn new(listener: Rc<Listener>) -> Rc<Session> {
        let principal = (!listener.protocol.requires_sasl()).then(|| ANONYMOUS.to_string());
        Rc::new(Session {
            listener,
            principal: RefCell::new(principal),
            sasl: RefCell::new(SaslState::Start),
        })
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

    pub fn authenticated_as(&self, user: &str) {
        *self.principal.borrow_mut() = Some(format!("User:{user}"));
        *self.sasl.borrow_mut() = SaslState::Done;
    }
}
