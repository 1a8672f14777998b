//! The client side of SASL, for the `causeway` admin commands: PLAIN's single message, and
//! SCRAM's client-first, client-final and the check of the server's signature (RFC 5802), so an
//! admin command can log in to a broker whose listeners require SASL without trusting a broker
//! that does not know the password.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use subtle::ConstantTimeEq;

use super::scram::{check_iterations, random_nonce, Hash};
use super::Mechanism;

/// The GS2 header of a client without channel binding or authzid.
const GS2_HEADER: &str = "n,,";

/// PLAIN's message: no authzid, the user, the password.
pub fn plain_message(user: &str, password: &str) -> Vec<u8> {
    format!("\0{user}\0{password}").into_bytes()
}

/// A SCRAM exchange in progress on the client.
pub struct ScramClient {
    hash: Hash,
    password: String,
    client_first_bare: String,
    nonce: String,
    /// What the server must sign, once client-final is built.
    expected_server_signature: Option<Vec<u8>>,
}

impl ScramClient {
    /// Starts an exchange as `user`; `Err` for PLAIN or without randomness.
    pub fn new(mechanism: Mechanism, user: &str, password: &str) -> Result<ScramClient, String> {
        let hash = Hash::of(mechanism)?;
        let nonce = random_nonce()?;
        let name = user.replace('=', "=3D").replace(',', "=2C");
        Ok(ScramClient {
            hash,
            password: password.to_owned(),
            client_first_bare: format!("n={name},r={nonce}"),
            nonce,
            expected_server_signature: None,
        })
    }

    /// The client-first message.
    pub fn client_first(&self) -> Vec<u8> {
        format!("{GS2_HEADER}{}", self.client_first_bare).into_bytes()
    }

    /// The client-final message answering `server_first`; refuses a server nonce that does not
    /// extend the client's, and iterations or salts outside Kafka's bounds (a hostile server
    /// could otherwise make the client run PBKDF2 for as long as it likes).
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, String> {
        let server_first = std::str::from_utf8(server_first)
            .map_err(|_| "server-first is not UTF-8".to_owned())?;
        let nonce = attribute(server_first, "r")?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err("the server's nonce does not extend the client's".to_owned());
        }
        let salt = BASE64
            .decode(attribute(server_first, "s")?)
            .map_err(|_| "the salt is not base64".to_owned())?;
        if salt.is_empty() || salt.len() > super::scram::MAX_SALT_BYTES {
            return Err(format!("a salt of {} bytes", salt.len()));
        }
        let iterations: u32 = attribute(server_first, "i")?
            .parse()
            .map_err(|_| "the iteration count is not a number".to_owned())?;
        check_iterations(iterations)?;
        let hash = self.hash;
        let salted = hash.hi(self.password.as_bytes(), &salt, iterations);
        let client_key = hash.hmac(&salted, &[b"Client Key"])?;
        let stored_key = hash.digest(&client_key);
        let server_key = hash.hmac(&salted, &[b"Server Key"])?;
        let without_proof = format!("c={},r={nonce}", BASE64.encode(GS2_HEADER));
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = hash.hmac(&stored_key, &[auth_message.as_bytes()])?;
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(key, sig)| key ^ sig)
            .collect();
        self.expected_server_signature = Some(hash.hmac(&server_key, &[auth_message.as_bytes()])?);
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes())
    }

    /// Checks server-final: the server proved it holds the user's credential.
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), String> {
        let server_final = std::str::from_utf8(server_final)
            .map_err(|_| "server-final is not UTF-8".to_owned())?;
        if let Ok(error) = attribute(server_final, "e") {
            return Err(format!("the server refused: {error}"));
        }
        let signature = BASE64
            .decode(attribute(server_final, "v")?)
            .map_err(|_| "the server signature is not base64".to_owned())?;
        let expected = self
            .expected_server_signature
            .as_deref()
            .ok_or_else(|| "server-final before client-final".to_owned())?;
        if bool::from(signature.as_slice().ct_eq(expected)) {
            Ok(())
        } else {
            Err("the server's signature is wrong: it does not know the password".to_owned())
        }
    }
}

/// The value of attribute `name` (`r`, `s`, `i`, `v`, `e`) of a SCRAM message.
fn attribute<'a>(message: &'a str, name: &str) -> Result<&'a str, String> {
    message
        .split(',')
        .find_map(|part| {
            part.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('='))
        })
        .ok_or_else(|| format!("no {name}= in the server's message"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::scram::ScramCredential;
    use crate::sasl::{Authenticator, CredentialLookup, Step};

    struct OneUser(ScramCredential);

    impl CredentialLookup for OneUser {
        fn scram(&self, mechanism: Mechanism, user: &str) -> Option<ScramCredential> {
            (user == "ad,min" && mechanism == Mechanism::ScramSha512).then(|| self.0.clone())
        }
    }

    fn exchange(password: &str) -> Result<(), String> {
        let store = OneUser(
            ScramCredential::derive(Mechanism::ScramSha512, b"s3cret", b"salty-salt", 4096)
                .expect("credential"),
        );
        let mut server = Authenticator::new(Mechanism::ScramSha512);
        let mut client = ScramClient::new(Mechanism::ScramSha512, "ad,min", password)?;
        let Step::Continue(server_first) = server.step(&client.client_first(), &store) else {
            return Err("no server-first".to_owned());
        };
        let client_final = client.client_final(&server_first)?;
        match server.step(&client_final, &store) {
            Step::Done { response, .. } => client.verify_server_final(&response),
            _ => Err("refused".to_owned()),
        }
    }

    #[test]
    fn the_client_logs_in_against_the_server_side_and_checks_its_signature() {
        exchange("s3cret").expect("login");
        assert!(exchange("wrong").is_err());
    }

    #[test]
    fn a_server_without_the_credential_or_with_a_foreign_nonce_is_refused() {
        let mut client = ScramClient::new(Mechanism::ScramSha256, "u", "p").expect("client");
        assert!(client.client_final(b"r=other,s=c2FsdA==,i=4096").is_err());
        let first = String::from_utf8(client.client_first()).expect("utf-8");
        let nonce = attribute(&first, "r").expect("nonce");
        let too_many = format!("r={nonce}x,s=c2FsdA==,i=100000000");
        assert!(client.client_final(too_many.as_bytes()).is_err());
        let fine = format!("r={nonce}x,s=c2FsdA==,i=4096");
        client.client_final(fine.as_bytes()).expect("client-final");
        assert!(client.verify_server_final(b"v=AAAA").is_err());
        assert!(client.verify_server_final(b"e=invalid-proof").is_err());
    }
}
