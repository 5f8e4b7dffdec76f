//! SASL/SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka serves them, and the
//! salted credentials they check (never the password itself).
//!
//! Server side of one exchange: client-first (`n,,n=user,r=nonce`) → server-first
//! (`r=nonce+ours,s=salt,i=iterations`) → client-final (`c=biws,r=...,p=proof`) → server-final
//! (`v=signature`). The client proves it knows the salted password without sending it.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

/// Kafka's lower bound on SCRAM iterations (and ours).
pub const MIN_ITERATIONS: i32 = 4096;
/// Upper bound: a PLAIN login recomputes the salted password, so iterations are CPU per login.
pub const MAX_ITERATIONS: i32 = 16384;
/// Longest client message accepted (RFC 5802 messages are short).
pub const MAX_MESSAGE_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Hash)]
pub enum Mechanism {
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl Mechanism {
    pub const ALL: [Mechanism; 2] = [Mechanism::ScramSha256, Mechanism::ScramSha512];

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Kafka's ScramMechanism enum in the Describe/AlterUserScramCredentials APIs.
    pub fn kafka_type(self) -> i8 {
        match self {
            Mechanism::ScramSha256 => 1,
            Mechanism::ScramSha512 => 2,
        }
    }

    pub fn from_kafka_type(value: i8) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.kafka_type() == value)
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::ScramSha256 => {
                let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
            Mechanism::ScramSha512 => {
                let mut mac = Hmac::<Sha512>::new_from_slice(key).expect("any key length");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::ScramSha256 => Sha256::digest(data).to_vec(),
            Mechanism::ScramSha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// Hi(password, salt, iterations) of RFC 5802: PBKDF2 with this mechanism's HMAC.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: i32) -> Vec<u8> {
        let rounds = u32::try_from(iterations).expect("validated iterations");
        match self {
            Mechanism::ScramSha256 => {
                let mut out = vec![0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, rounds, &mut out);
                out
            }
            Mechanism::ScramSha512 => {
                let mut out = vec![0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, rounds, &mut out);
                out
            }
        }
    }
}

/// What the broker keeps of a user's password for one mechanism (Kafka's ScramCredential).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub iterations: i32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl ScramCredential {
    /// From the salted password AlterUserScramCredentials carries (the client salts it).
    pub fn from_salted_password(
        mechanism: Mechanism,
        salt: &[u8],
        iterations: i32,
        salted_password: &[u8],
    ) -> ScramCredential {
        let client_key = mechanism.hmac(salted_password, b"Client Key");
        ScramCredential {
            salt: salt.to_vec(),
            iterations,
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(salted_password, b"Server Key"),
        }
    }

    pub fn from_password(
        mechanism: Mechanism,
        password: &str,
        salt: &[u8],
        iterations: i32,
    ) -> ScramCredential {
        let salted = mechanism.salted_password(password.as_bytes(), salt, iterations);
        ScramCredential::from_salted_password(mechanism, salt, iterations, &salted)
    }

    /// Whether `password` is this credential's (SASL/PLAIN against SCRAM credentials).
    pub fn matches_password(&self, mechanism: Mechanism, password: &str) -> bool {
        let candidate =
            ScramCredential::from_password(mechanism, password, &self.salt, self.iterations);
        constant_time_eq(&candidate.stored_key, &self.stored_key)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Usernames in SCRAM messages escape ',' and '=' (RFC 5802 saslname).
fn decode_saslname(name: &str) -> Result<String, String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err("invalid escape in username".into()),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Where one server-side SCRAM exchange stands.
#[derive(Debug)]
pub enum ScramServer {
    /// Waiting for client-first.
    Start {
        mechanism: Mechanism,
    },
    /// Sent server-first; waiting for client-final.
    SentFirst {
        mechanism: Mechanism,
        user: String,
        credential: ScramCredential,
        client_first_bare: String,
        server_first: String,
        nonce: String,
        /// The client's part of `nonce` (its first bytes).
        client_nonce_size_bytes: usize,
    },
    Done,
}

/// The outcome of one step.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this and wait for the client's next message.
    Continue(Vec<u8>),
    /// Authenticated as this user; send the final message.
    Authenticated {
        user: String,
        last: Vec<u8>,
    },
    Failed(String),
}

impl ScramServer {
    pub fn new(mechanism: Mechanism) -> ScramServer {
        ScramServer::Start { mechanism }
    }

    /// One client message. `lookup` finds a user's credential for the mechanism.
    pub fn step(
        &mut self,
        message: &[u8],
        lookup: &dyn Fn(&str, Mechanism) -> Option<ScramCredential>,
        server_nonce: &str,
    ) -> Step {
        if message.len() > MAX_MESSAGE_BYTES {
            *self = ScramServer::Done;
            return Step::Failed("SCRAM message too long".into());
        }
        let Ok(text) = std::str::from_utf8(message) else {
            *self = ScramServer::Done;
            return Step::Failed("SCRAM message is not UTF-8".into());
        };
        match std::mem::replace(self, ScramServer::Done) {
            ScramServer::Start { mechanism } => {
                self.client_first(mechanism, text, lookup, server_nonce)
            }
            ScramServer::SentFirst {
                mechanism,
                user,
                credential,
                client_first_bare,
                server_first,
                nonce,
                client_nonce_size_bytes,
            } => {
                // librdkafka 2.0.0-2.0.2 (Debian 12's kcat among its users) sends its own
                // nonce again before the combined one. Still bound to this exchange's server
                // nonce, so accepting it keeps SCRAM's replay protection.
                let repeated = format!("{}{nonce}", &nonce[..client_nonce_size_bytes]);
                client_final(
                    mechanism,
                    text,
                    &user,
                    &credential,
                    &client_first_bare,
                    &server_first,
                    &[&nonce, &repeated],
                )
            }
            ScramServer::Done => Step::Failed("SCRAM exchange already finished".into()),
        }
    }

    fn client_first(
        &mut self,
        mechanism: Mechanism,
        text: &str,
        lookup: &dyn Fn(&str, Mechanism) -> Option<ScramCredential>,
        server_nonce: &str,
    ) -> Step {
        // gs2-header: "n,," or "y,," (no channel binding), optional "a=authzid".
        let mut parts = text.splitn(3, ',');
        let (Some(cbind), Some(authzid), Some(bare)) = (parts.next(), parts.next(), parts.next())
        else {
            return Step::Failed("malformed SCRAM client-first message".into());
        };
        if cbind != "n" && cbind != "y" {
            return Step::Failed("SCRAM channel binding is not supported".into());
        }
        let mut user = None;
        let mut client_nonce = None;
        for attribute in bare.split(',') {
            if let Some(value) = attribute.strip_prefix("n=") {
                user = Some(value);
            } else if let Some(value) = attribute.strip_prefix("r=") {
                client_nonce = Some(value);
            } else if attribute.starts_with("m=") {
                return Step::Failed("SCRAM extensions are not supported".into());
            }
            // Other attributes (Kafka's tokenauth extension among them) are ignored.
        }
        let (Some(user), Some(client_nonce)) = (user, client_nonce) else {
            return Step::Failed("SCRAM client-first message lacks n= or r=".into());
        };
        if client_nonce.is_empty() {
            return Step::Failed("empty SCRAM client nonce".into());
        }
        let user = match decode_saslname(user) {
            Ok(user) => user,
            Err(error) => return Step::Failed(error),
        };
        if let Some(authzid) = authzid.strip_prefix("a=") {
            if decode_saslname(authzid).ok().as_deref() != Some(user.as_str()) {
                return Step::Failed("authorization id differs from the username".into());
            }
        }
        let Some(credential) = lookup(&user, mechanism) else {
            return Step::Failed(format!("unknown user {user} for {}", mechanism.name()));
        };
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&credential.salt),
            credential.iterations
        );
        *self = ScramServer::SentFirst {
            mechanism,
            user,
            credential,
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
            client_nonce_size_bytes: client_nonce.len(),
        };
        Step::Continue(server_first.into_bytes())
    }
}

fn client_final(
    mechanism: Mechanism,
    text: &str,
    user: &str,
    credential: &ScramCredential,
    client_first_bare: &str,
    server_first: &str,
    accepted_nonces: &[&str],
) -> Step {
    let Some((without_proof, proof)) = text.rsplit_once(",p=") else {
        return Step::Failed("SCRAM client-final message lacks a proof".into());
    };
    let mut channel_binding = None;
    let mut final_nonce = None;
    for attribute in without_proof.split(',') {
        if let Some(value) = attribute.strip_prefix("c=") {
            channel_binding = Some(value);
        } else if let Some(value) = attribute.strip_prefix("r=") {
            final_nonce = Some(value);
        }
    }
    // "biws" is base64("n,,"); "eSws" base64("y,,").
    if !matches!(channel_binding, Some("biws") | Some("eSws")) {
        return Step::Failed("unexpected SCRAM channel binding".into());
    }
    if !final_nonce.is_some_and(|got| accepted_nonces.contains(&got)) {
        return Step::Failed("SCRAM nonce mismatch".into());
    }
    let Ok(proof) = BASE64.decode(proof) else {
        return Step::Failed("SCRAM proof is not base64".into());
    };
    let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
    let client_signature = mechanism.hmac(&credential.stored_key, auth_message.as_bytes());
    if proof.len() != client_signature.len() {
        return Step::Failed(format!("authentication failed for user {user}"));
    }
    let client_key: Vec<u8> = proof
        .iter()
        .zip(&client_signature)
        .map(|(p, s)| p ^ s)
        .collect();
    if !constant_time_eq(&mechanism.hash(&client_key), &credential.stored_key) {
        return Step::Failed(format!("authentication failed for user {user}"));
    }
    let server_signature = mechanism.hmac(&credential.server_key, auth_message.as_bytes());
    Step::Authenticated {
        user: user.to_string(),
        last: format!("v={}", BASE64.encode(server_signature)).into_bytes(),
    }
}

/// A fresh server nonce (printable, no ',').
pub fn server_nonce() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::thread_rng().gen();
    BASE64.encode(bytes)
}

/// A fresh salt for a new credential.
pub fn new_salt() -> Vec<u8> {
    use rand::Rng;
    rand::thread_rng().gen::<[u8; 16]>().to_vec()
}

/// SASL/PLAIN (RFC 4616): `authzid NUL authcid NUL password`. Returns (user, password).
pub fn parse_plain(message: &[u8]) -> Result<(String, String), String> {
    if message.len() > MAX_MESSAGE_BYTES {
        return Err("PLAIN message too long".into());
    }
    let text = std::str::from_utf8(message).map_err(|_| "PLAIN message is not UTF-8")?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed PLAIN message".into());
    };
    if user.is_empty() || password.is_empty() {
        return Err("PLAIN username and password must not be empty".into());
    }
    if !authzid.is_empty() && authzid != user {
        return Err("authorization id differs from the username".into());
    }
    Ok((user.to_string(), password.to_string()))
}

/// Client side of one exchange, for brokers logging in to each other.
#[derive(Debug)]
pub struct ScramClient {
    mechanism: Mechanism,
    password: String,
    client_first_bare: String,
    client_nonce: String,
    /// Set by [`ScramClient::client_final`]: the signature the server must answer with.
    expected_server_signature: Option<Vec<u8>>,
}

impl ScramClient {
    pub fn new(mechanism: Mechanism, user: &str, password: &str) -> ScramClient {
        let client_nonce = server_nonce();
        let escaped = user.replace('=', "=3D").replace(',', "=2C");
        ScramClient {
            mechanism,
            password: password.to_string(),
            client_first_bare: format!("n={escaped},r={client_nonce}"),
            client_nonce,
            expected_server_signature: None,
        }
    }

    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// The client-final message for the server's first message. Refuses a server nonce that
    /// does not extend ours and iterations outside Kafka's bounds (a hostile peer could
    /// otherwise make the login burn CPU).
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, String> {
        let text = std::str::from_utf8(server_first).map_err(|_| "server-first is not UTF-8")?;
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for attribute in text.split(',') {
            if let Some(value) = attribute.strip_prefix("r=") {
                nonce = Some(value);
            } else if let Some(value) = attribute.strip_prefix("s=") {
                salt = BASE64.decode(value).ok();
            } else if let Some(value) = attribute.strip_prefix("i=") {
                iterations = value.parse::<i32>().ok();
            } else if let Some(value) = attribute.strip_prefix("e=") {
                return Err(format!("server refused the login: {value}"));
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err(format!("malformed SCRAM server-first message {text:?}"));
        };
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            return Err("SCRAM server nonce does not extend ours".into());
        }
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(format!("SCRAM iterations {iterations} out of bounds"));
        }
        let mechanism = self.mechanism;
        let salted = mechanism.salted_password(self.password.as_bytes(), &salt, iterations);
        let client_key = mechanism.hmac(&salted, b"Client Key");
        let stored_key = mechanism.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let signature = mechanism.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = mechanism.hmac(&salted, b"Server Key");
        self.expected_server_signature = Some(mechanism.hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes())
    }

    /// Checks the server-final message: the server proves it holds our credential.
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), String> {
        let expected = self
            .expected_server_signature
            .as_ref()
            .ok_or("server-final before client-final")?;
        let text = std::str::from_utf8(server_final).map_err(|_| "server-final is not UTF-8")?;
        if let Some(error) = text.strip_prefix("e=") {
            return Err(format!("server refused the login: {error}"));
        }
        let signature = text
            .strip_prefix("v=")
            .and_then(|value| BASE64.decode(value).ok())
            .ok_or_else(|| format!("malformed SCRAM server-final message {text:?}"))?;
        if constant_time_eq(&signature, expected) {
            Ok(())
        } else {
            Err("SCRAM server signature does not match: the server lacks our credential".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client side, as RFC 5802 describes it, to drive the server.
    /// The client-final message; `nonce_prefix` goes before the nonce (librdkafka 2.0.2 sends
    /// its own nonce there again).
    fn client_final_for(
        mechanism: Mechanism,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
        nonce_prefix: &str,
    ) -> (String, Vec<u8>) {
        let mut salt = None;
        let mut iterations = 0;
        let mut nonce = "";
        for attribute in server_first.split(',') {
            if let Some(v) = attribute.strip_prefix("s=") {
                salt = Some(BASE64.decode(v).unwrap());
            } else if let Some(v) = attribute.strip_prefix("i=") {
                iterations = v.parse().unwrap();
            } else if let Some(v) = attribute.strip_prefix("r=") {
                nonce = v;
            }
        }
        let salted = mechanism.salted_password(password.as_bytes(), &salt.unwrap(), iterations);
        let client_key = mechanism.hmac(&salted, b"Client Key");
        let stored_key = mechanism.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce_prefix}{nonce}");
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = mechanism.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = mechanism.hmac(&salted, b"Server Key");
        let expected_server = mechanism.hmac(&server_key, auth_message.as_bytes());
        (
            format!("{without_proof},p={}", BASE64.encode(proof)),
            format!("v={}", BASE64.encode(expected_server)).into_bytes(),
        )
    }

    fn exchange(mechanism: Mechanism, stored_password: &str, tried_password: &str) -> Step {
        exchange_with_prefix(mechanism, stored_password, tried_password, "")
    }

    fn exchange_with_prefix(
        mechanism: Mechanism,
        stored_password: &str,
        tried_password: &str,
        nonce_prefix: &str,
    ) -> Step {
        let credential =
            ScramCredential::from_password(mechanism, stored_password, b"saltsalt", 4096);
        let lookup = move |user: &str, m: Mechanism| {
            (user == "alice" && m == mechanism).then(|| credential.clone())
        };
        let mut server = ScramServer::new(mechanism);
        let bare = "n=alice,r=clientnonce";
        let Step::Continue(server_first) =
            server.step(format!("n,,{bare}").as_bytes(), &lookup, "servernonce")
        else {
            panic!("server-first expected");
        };
        let server_first = String::from_utf8(server_first).unwrap();
        assert!(server_first.starts_with("r=clientnonceservernonce,s="));
        let (client_final, expected_last) =
            client_final_for(mechanism, tried_password, bare, &server_first, nonce_prefix);
        let step = server.step(client_final.as_bytes(), &lookup, "unused");
        if let Step::Authenticated { last, .. } = &step {
            assert_eq!(last, &expected_last, "server signature");
        }
        step
    }

    #[test]
    fn scram_accepts_the_password_and_refuses_others() {
        for mechanism in Mechanism::ALL {
            assert!(matches!(
                exchange(mechanism, "secret", "secret"),
                Step::Authenticated { ref user, .. } if user == "alice"
            ));
            assert!(matches!(
                exchange(mechanism, "secret", "wrong"),
                Step::Failed(_)
            ));
        }
    }

    #[test]
    fn scram_accepts_librdkafka_2_0_repeated_client_nonce_only() {
        let mechanism = Mechanism::ScramSha256;
        assert!(matches!(
            exchange_with_prefix(mechanism, "secret", "secret", "clientnonce"),
            Step::Authenticated { .. }
        ));
        for prefix in ["other", "client", "servernonce"] {
            assert!(matches!(
                exchange_with_prefix(mechanism, "secret", "secret", prefix),
                Step::Failed(_)
            ));
        }
    }

    #[test]
    fn scram_refuses_unknown_users_and_garbage() {
        let lookup = |_: &str, _: Mechanism| None;
        let mut server = ScramServer::new(Mechanism::ScramSha256);
        assert!(matches!(
            server.step(b"n,,n=bob,r=x", &lookup, "s"),
            Step::Failed(_)
        ));
        for garbage in [&b""[..], b"n,", b"p=tls,,n=a,r=b", b"\xff\xfe", b"n,,r=x"] {
            let mut server = ScramServer::new(Mechanism::ScramSha512);
            assert!(matches!(
                server.step(garbage, &lookup, "s"),
                Step::Failed(_)
            ));
        }
    }

    #[test]
    fn rfc7677_test_vector() {
        // RFC 7677 section 3: user "user", password "pencil".
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let credential =
            ScramCredential::from_password(Mechanism::ScramSha256, "pencil", &salt, 4096);
        let lookup = move |_: &str, _: Mechanism| Some(credential.clone());
        let mut server = ScramServer::new(Mechanism::ScramSha256);
        let first = server.step(
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            &lookup,
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        );
        assert_eq!(
            first,
            Step::Continue(
                b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
                    .to_vec()
            )
        );
        let last = server.step(
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            &lookup,
            "",
        );
        assert_eq!(
            last,
            Step::Authenticated {
                user: "user".into(),
                last: b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec()
            }
        );
    }

    #[test]
    fn plain_messages() {
        assert_eq!(
            parse_plain(b"\0alice\0secret").unwrap(),
            ("alice".into(), "secret".into())
        );
        assert_eq!(
            parse_plain(b"alice\0alice\0secret").unwrap(),
            ("alice".into(), "secret".into())
        );
        assert!(parse_plain(b"bob\0alice\0secret").is_err());
        assert!(parse_plain(b"\0alice").is_err());
        assert!(parse_plain(b"\0alice\0").is_err());
        let credential =
            ScramCredential::from_password(Mechanism::ScramSha512, "secret", b"salt", 4096);
        assert!(credential.matches_password(Mechanism::ScramSha512, "secret"));
        assert!(!credential.matches_password(Mechanism::ScramSha512, "secreT"));
    }

    #[test]
    fn scram_client_logs_in_to_the_server_and_checks_its_signature() {
        for mechanism in Mechanism::ALL {
            let credential = ScramCredential::from_password(mechanism, "secret", b"salty", 4096);
            let lookup = |user: &str, _: Mechanism| (user == "broker").then(|| credential.clone());
            let mut server = ScramServer::new(mechanism);
            let mut client = ScramClient::new(mechanism, "broker", "secret");
            let Step::Continue(server_first) =
                server.step(&client.client_first(), &lookup, &server_nonce())
            else {
                panic!("server refused client-first");
            };
            let client_final = client.client_final(&server_first).unwrap();
            let Step::Authenticated { user, last } = server.step(&client_final, &lookup, "unused")
            else {
                panic!("server refused client-final");
            };
            assert_eq!(user, "broker");
            client.verify_server_final(&last).unwrap();
            // A server that answers with another signature is not trusted.
            assert!(client.verify_server_final(b"v=AAAA").is_err());
        }
    }

    #[test]
    fn scram_client_refuses_a_nonce_it_did_not_start_and_costly_iterations() {
        let mut client = ScramClient::new(Mechanism::ScramSha256, "broker", "secret");
        assert!(client.client_final(b"r=other,s=c2FsdA==,i=4096").is_err());
        let ours = client.client_nonce.clone();
        let costly = format!("r={ours}xyz,s=c2FsdA==,i=100000000");
        assert!(client.client_final(costly.as_bytes()).is_err());
        let fine = format!("r={ours}xyz,s=c2FsdA==,i=4096");
        assert!(client.client_final(fine.as_bytes()).is_ok());
    }
}
