#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use proptest::prelude::*;
use sha2::{Digest, Sha256, Sha512};

use super::scram::{MAX_ITERATIONS, MIN_ITERATIONS};
use super::*;

const SECRET: [u8; 32] = [7; 32];

/// Credentials in a map, as a broker's store would hand them out.
#[derive(Default)]
struct Store(HashMap<(Mechanism, String), ScramCredential>);

impl CredentialLookup for Store {
    fn scram(&self, mechanism: Mechanism, user: &str) -> Option<ScramCredential> {
        self.0.get(&(mechanism, user.to_string())).cloned()
    }
}

impl Store {
    fn with(mut self, mechanism: Mechanism, user: &str, password: &str) -> Store {
        let credential =
            ScramCredential::generate(mechanism, password.as_bytes(), MIN_ITERATIONS).unwrap();
        self.0.insert((mechanism, user.to_string()), credential);
        self
    }
}

/// Both SCRAM credentials of "user" with password "pencil".
fn pencil_store() -> Store {
    Store::default()
        .with(Mechanism::ScramSha256, "user", "pencil")
        .with(Mechanism::ScramSha512, "user", "pencil")
}

// A SCRAM client written straight from RFC 5802's formulas, independent of the server's code.

fn h(mechanism: Mechanism, data: &[u8]) -> Vec<u8> {
    match mechanism {
        Mechanism::ScramSha512 => Sha512::digest(data).to_vec(),
        _ => Sha256::digest(data).to_vec(),
    }
}

fn hmac(mechanism: Mechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    match mechanism {
        Mechanism::ScramSha512 => {
            let mut mac = Hmac::<Sha512>::new_from_slice(key).unwrap();
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        _ => {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
    }
}

/// Hi(str, salt, i) computed as the RFC writes it: U1 = HMAC(str, salt + INT(1)), Ui =
/// HMAC(str, Ui-1), the XOR of all.
fn hi(mechanism: Mechanism, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(mechanism, password, &first);
    let mut out = u.clone();
    for _ in 1..iterations {
        u = hmac(mechanism, password, &u);
        out.iter_mut().zip(&u).for_each(|(o, u)| *o ^= u);
    }
    out
}

fn attribute<'a>(message: &'a str, name: &str) -> &'a str {
    message
        .split(',')
        .find_map(|a| a.strip_prefix(name).and_then(|a| a.strip_prefix('=')))
        .unwrap()
}

/// client-final for `server_first`, and the server-final the client expects back.
fn client_final(
    mechanism: Mechanism,
    password: &str,
    gs2_header: &str,
    client_first_bare: &str,
    server_first: &str,
) -> (String, String) {
    let nonce = attribute(server_first, "r");
    client_final_echoing(
        mechanism,
        password,
        gs2_header,
        client_first_bare,
        server_first,
        nonce,
    )
}

/// client-final for `server_first` echoing `nonce`, and the server-final it expects back.
fn client_final_echoing(
    mechanism: Mechanism,
    password: &str,
    gs2_header: &str,
    client_first_bare: &str,
    server_first: &str,
    nonce: &str,
) -> (String, String) {
    let salt = BASE64.decode(attribute(server_first, "s")).unwrap();
    let iterations: u32 = attribute(server_first, "i").parse().unwrap();
    let salted = hi(mechanism, password.as_bytes(), &salt, iterations);
    let client_key = hmac(mechanism, &salted, b"Client Key");
    let stored_key = h(mechanism, &client_key);
    let server_key = hmac(mechanism, &salted, b"Server Key");
    let without_proof = format!("c={},r={nonce}", BASE64.encode(gs2_header));
    let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
    let signature = hmac(mechanism, &stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(&signature)
        .map(|(k, s)| k ^ s)
        .collect();
    let server_signature = hmac(mechanism, &server_key, auth_message.as_bytes());
    (
        format!("{without_proof},p={}", BASE64.encode(proof)),
        format!("v={}", BASE64.encode(server_signature)),
    )
}

fn continued(step: Step) -> String {
    match step {
        Step::Continue(bytes) => String::from_utf8(bytes).unwrap(),
        other => panic!("expected Continue, got {other:?}"),
    }
}

fn failed(step: Step) -> String {
    match step {
        Step::Failed(reason) => reason,
        other => panic!("expected Failed, got {other:?}"),
    }
}

/// Runs a whole SCRAM exchange with the test client; returns the last step.
fn scram_login(
    mechanism: Mechanism,
    store: &Store,
    gs2_header: &str,
    user: &str,
    password: &str,
) -> Step {
    let mut server = Authenticator::with_secret(mechanism, SECRET);
    let bare = format!("n={user},r=fyko+d2lbbFgONRv9qkxdawL");
    let server_first = continued(server.step(format!("{gs2_header}{bare}").as_bytes(), store));
    let (final_message, _) = client_final(mechanism, password, gs2_header, &bare, &server_first);
    server.step(final_message.as_bytes(), store)
}

const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const RFC_SERVER_FIRST: &str =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

fn rfc_store() -> Store {
    let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    let credential =
        ScramCredential::derive(Mechanism::ScramSha256, b"pencil", &salt, 4096).unwrap();
    let mut store = Store::default();
    store
        .0
        .insert((Mechanism::ScramSha256, "user".to_string()), credential);
    store
}

fn rfc_server() -> Authenticator {
    Authenticator::with_server_nonce(Mechanism::ScramSha256, SECRET, RFC_SERVER_NONCE)
}

#[test]
fn rfc_7677_example_is_accepted_and_answered() {
    let store = rfc_store();
    let mut server = rfc_server();
    assert_eq!(
        continued(server.step(RFC_CLIENT_FIRST.as_bytes(), &store)),
        RFC_SERVER_FIRST
    );
    assert_eq!(
        server.step(RFC_CLIENT_FINAL.as_bytes(), &store),
        Step::Done {
            principal: "user".to_string(),
            response: RFC_SERVER_FINAL.as_bytes().to_vec(),
        }
    );
    // The test client agrees with the RFC, so the round trips below test against the RFC too.
    let (final_message, server_final) = client_final(
        Mechanism::ScramSha256,
        "pencil",
        "n,,",
        "n=user,r=rOprNGfwEbeRWgbNEkqO",
        RFC_SERVER_FIRST,
    );
    assert_eq!(final_message, RFC_CLIENT_FINAL);
    assert_eq!(server_final, RFC_SERVER_FINAL);
}

#[test]
fn scram_round_trips_with_both_hashes() {
    let store = pencil_store();
    for mechanism in [Mechanism::ScramSha256, Mechanism::ScramSha512] {
        let mut server = Authenticator::new(mechanism);
        let bare = "n=user,r=clientnonce123";
        let server_first = continued(server.step(format!("n,,{bare}").as_bytes(), &store));
        assert!(server_first.starts_with("r=clientnonce123"));
        let (final_message, server_final) =
            client_final(mechanism, "pencil", "n,,", bare, &server_first);
        assert_eq!(
            server.step(final_message.as_bytes(), &store),
            Step::Done {
                principal: "user".to_string(),
                response: server_final.into_bytes(),
            },
            "{mechanism:?}"
        );
    }
}

#[test]
fn server_nonces_differ_between_exchanges() {
    let store = pencil_store();
    let first = continued(
        Authenticator::new(Mechanism::ScramSha256).step(RFC_CLIENT_FIRST.as_bytes(), &store),
    );
    let second = continued(
        Authenticator::new(Mechanism::ScramSha256).step(RFC_CLIENT_FIRST.as_bytes(), &store),
    );
    assert_ne!(attribute(&first, "r"), attribute(&second, "r"));
}

#[test]
fn wrong_password_fails_at_the_final_step() {
    let store = pencil_store();
    for mechanism in [Mechanism::ScramSha256, Mechanism::ScramSha512] {
        let reason = failed(scram_login(mechanism, &store, "n,,", "user", "pencil2"));
        assert!(reason.contains("wrong password"), "{reason}");
    }
}

#[test]
fn unknown_user_gets_a_plausible_stable_server_first_and_fails_at_the_end() {
    let store = pencil_store();
    let first_of = |user: &str| {
        let mut server = Authenticator::with_secret(Mechanism::ScramSha512, SECRET);
        continued(server.step(format!("n,,n={user},r=abc").as_bytes(), &store))
    };
    let real = first_of("user");
    let ghost = first_of("ghost");
    let shape = |message: &str| {
        let names: Vec<String> = message.split(',').map(|a| a[..2].to_string()).collect();
        let salt = BASE64.decode(attribute(message, "s")).unwrap().len();
        (names, salt, attribute(message, "i").to_string())
    };
    assert_eq!(shape(&real), shape(&ghost));
    assert_eq!(attribute(&ghost, "s"), attribute(&first_of("ghost"), "s"));
    assert_ne!(attribute(&ghost, "s"), attribute(&first_of("phantom"), "s"));
    // Another secret, another fake salt.
    let mut other = Authenticator::with_secret(Mechanism::ScramSha512, [8; 32]);
    let other = continued(other.step(b"n,,n=ghost,r=abc", &store));
    assert_ne!(attribute(&ghost, "s"), attribute(&other, "s"));

    let reason = failed(scram_login(
        Mechanism::ScramSha512,
        &store,
        "n,,",
        "ghost",
        "pencil",
    ));
    assert!(reason.contains("unknown user"), "{reason}");
}

#[test]
fn a_user_with_only_the_other_hash_is_unknown_for_this_one() {
    let store = Store::default().with(Mechanism::ScramSha256, "user", "pencil");
    failed(scram_login(
        Mechanism::ScramSha512,
        &store,
        "n,,",
        "user",
        "pencil",
    ));
}

#[test]
fn client_final_must_echo_the_nonce_and_the_gs2_header() {
    let store = rfc_store();
    let wrong_nonce = RFC_CLIENT_FINAL.replace("$k0,", "$k1,");
    let mut server = rfc_server();
    continued(server.step(RFC_CLIENT_FIRST.as_bytes(), &store));
    assert!(failed(server.step(wrong_nonce.as_bytes(), &store)).contains("nonce"));

    // c= of "n,a=user," while client-first said "n,,".
    let wrong_binding = RFC_CLIENT_FINAL.replace("c=biws", "c=bixhPXVzZXIs");
    let mut server = rfc_server();
    continued(server.step(RFC_CLIENT_FIRST.as_bytes(), &store));
    assert!(failed(server.step(wrong_binding.as_bytes(), &store)).contains("gs2"));
}

/// librdkafka before 2.6.1 (Debian's kcat) echoes its own nonce before the combined one
/// (confluentinc/librdkafka#4895); that exact form is taken, a nonce with anything else around
/// the combined one is not.
#[test]
fn the_nonce_of_old_librdkafka_is_accepted_and_nothing_looser() {
    let store = pencil_store();
    let client_nonce = "fyko+d2lbbFgONRv9qkxdawL";
    let bare = format!("n=user,r={client_nonce}");
    for (prefix, accepted) in [(client_nonce, true), ("x", false), ("", true)] {
        let mut server = Authenticator::new(Mechanism::ScramSha512);
        let server_first = continued(server.step(format!("n,,{bare}").as_bytes(), &store));
        let echoed = format!("{prefix}{}", attribute(&server_first, "r"));
        // The proof covers client-final as sent, echoed nonce included.
        let (final_message, _) = client_final_echoing(
            Mechanism::ScramSha512,
            "pencil",
            "n,,",
            &bare,
            &server_first,
            &echoed,
        );
        let step = server.step(final_message.as_bytes(), &store);
        assert_eq!(
            matches!(step, Step::Done { .. }),
            accepted,
            "prefix {prefix:?}: {step:?}"
        );
    }
}

#[test]
fn authzid_must_be_the_user_or_empty() {
    let store = pencil_store();
    for header in ["n,a=user,", "n,a=,"] {
        let step = scram_login(Mechanism::ScramSha256, &store, header, "user", "pencil");
        assert!(matches!(step, Step::Done { .. }), "{header}: {step:?}");
    }
    let mut server = Authenticator::new(Mechanism::ScramSha256);
    let reason = failed(server.step(b"n,a=admin,n=user,r=abc", &store));
    assert!(reason.contains("authzid"), "{reason}");
}

#[test]
fn gs2_headers_other_than_n_are_refused() {
    let store = pencil_store();
    for message in [
        "y,,n=user,r=abc",
        "p=tls-unique,,n=user,r=abc",
        "x,,n=user,r=abc",
        "n,b=user,n=user,r=abc",
        "n,,m=ext,n=user,r=abc",
        "n=user,r=abc",
    ] {
        let mut server = Authenticator::new(Mechanism::ScramSha256);
        failed(server.step(message.as_bytes(), &store));
    }
}

#[test]
fn extensions_tokenauth_is_refused_and_unknown_ones_too() {
    let store = pencil_store();
    let first =
        |message: &str| Authenticator::new(Mechanism::ScramSha256).step(message.as_bytes(), &store);
    assert!(failed(first("n,,n=user,r=abc,tokenauth=true")).contains("delegation"));
    assert!(failed(first("n,,n=user,r=abc,tokenauth=TRUE")).contains("delegation"));
    assert!(failed(first("n,,n=user,r=abc,other=1")).contains("unsupported"));
    continued(first("n,,n=user,r=abc,tokenauth=false"));
}

#[test]
fn escaped_user_names_are_unescaped_and_bad_escapes_refused() {
    let store = Store::default().with(Mechanism::ScramSha256, "a,b=c", "pw");
    let step = scram_login(Mechanism::ScramSha256, &store, "n,,", "a=2Cb=3Dc", "pw");
    assert_eq!(
        match step {
            Step::Done { principal, .. } => principal,
            other => panic!("{other:?}"),
        },
        "a,b=c"
    );
    for user in ["a=2", "a=", "a=2X", "a=3d"] {
        let mut server = Authenticator::new(Mechanism::ScramSha256);
        failed(server.step(format!("n,,n={user},r=abc").as_bytes(), &store));
    }
}

#[test]
fn lengths_are_bounded() {
    let store = pencil_store();
    let long_user = "u".repeat(MAX_USERNAME_BYTES + 1);
    let mut server = Authenticator::new(Mechanism::ScramSha256);
    failed(server.step(format!("n,,n={long_user},r=abc").as_bytes(), &store));
    let long_nonce = "r".repeat(MAX_MESSAGE_BYTES);
    let mut server = Authenticator::new(Mechanism::ScramSha256);
    assert!(
        failed(server.step(format!("n,,n=user,r={long_nonce}").as_bytes(), &store))
            .contains("bytes")
    );
    let mut server = Authenticator::new(Mechanism::Plain);
    let mut big = b"\0user\0".to_vec();
    big.resize(MAX_MESSAGE_BYTES + 1, b'p');
    failed(server.step(&big, &store));
    let mut server = Authenticator::new(Mechanism::Plain);
    failed(server.step(format!("\0{long_user}\0pencil").as_bytes(), &store));
}

#[test]
fn nothing_is_accepted_after_done_or_failed() {
    let store = rfc_store();
    let mut server = rfc_server();
    continued(server.step(RFC_CLIENT_FIRST.as_bytes(), &store));
    assert!(matches!(
        server.step(RFC_CLIENT_FINAL.as_bytes(), &store),
        Step::Done { .. }
    ));
    failed(server.step(RFC_CLIENT_FINAL.as_bytes(), &store));
    failed(server.step(RFC_CLIENT_FIRST.as_bytes(), &store));

    let mut server = rfc_server();
    failed(server.step(b"garbage", &store));
    failed(server.step(RFC_CLIENT_FIRST.as_bytes(), &store));

    let store = pencil_store();
    let mut plain = Authenticator::new(Mechanism::Plain);
    assert!(matches!(
        plain.step(b"\0user\0pencil", &store),
        Step::Done { .. }
    ));
    failed(plain.step(b"\0user\0pencil", &store));
}

#[test]
fn iterations_and_salt_are_bounded() {
    let derive = |iterations, salt: &[u8]| {
        ScramCredential::derive(Mechanism::ScramSha256, b"pw", salt, iterations)
    };
    assert!(derive(MIN_ITERATIONS - 1, b"salt").is_err());
    assert!(derive(MIN_ITERATIONS, b"salt").is_ok());
    assert!(derive(MAX_ITERATIONS, b"salt").is_ok());
    assert!(derive(MAX_ITERATIONS + 1, b"salt").is_err());
    assert!(derive(0, b"salt").is_err());
    assert!(derive(MIN_ITERATIONS, b"").is_err());
    assert!(derive(MIN_ITERATIONS, &[1; 256]).is_err());
    assert!(ScramCredential::derive(Mechanism::Plain, b"pw", b"salt", 4096).is_err());
    assert!(ScramCredential::generate(Mechanism::ScramSha512, b"pw", 1000).is_err());
}

#[test]
fn a_stored_credential_that_does_not_fit_the_mechanism_fails_cleanly() {
    let mut store = Store::default();
    let sha256 = ScramCredential::generate(Mechanism::ScramSha256, b"pw", 4096).unwrap();
    store
        .0
        .insert((Mechanism::ScramSha512, "user".to_string()), sha256);
    let mut server = Authenticator::new(Mechanism::ScramSha512);
    assert!(failed(server.step(b"n,,n=user,r=abc", &store)).contains("stored credential"));
}

#[test]
fn derive_matches_the_rfc_formulas() {
    for mechanism in [Mechanism::ScramSha256, Mechanism::ScramSha512] {
        let credential = ScramCredential::derive(mechanism, b"pencil", b"NaCl", 4096).unwrap();
        let salted = hi(mechanism, b"pencil", b"NaCl", 4096);
        assert_eq!(
            credential.stored_key,
            h(mechanism, &hmac(mechanism, &salted, b"Client Key"))
        );
        assert_eq!(
            credential.server_key,
            hmac(mechanism, &salted, b"Server Key")
        );
    }
}

#[test]
fn every_truncation_of_valid_messages_fails_without_panicking() {
    let store = rfc_store();
    for end in 0..RFC_CLIENT_FIRST.len() {
        let step = rfc_server().step(&RFC_CLIENT_FIRST.as_bytes()[..end], &store);
        // "n,,n=user,r=rOpr" is still a valid client-first, with a shorter nonce.
        assert!(!matches!(step, Step::Done { .. }), "{end}");
    }
    for end in 0..RFC_CLIENT_FINAL.len() {
        let mut server = rfc_server();
        continued(server.step(RFC_CLIENT_FIRST.as_bytes(), &store));
        failed(server.step(&RFC_CLIENT_FINAL.as_bytes()[..end], &store));
    }
    let store = pencil_store();
    let plain = b"user\0user\0pencil";
    for end in 0..plain.len() {
        failed(Authenticator::new(Mechanism::Plain).step(&plain[..end], &store));
    }
}

#[test]
fn mechanism_names_are_kafkas() {
    let names: Vec<&str> = Mechanism::ALL.iter().map(|m| m.name()).collect();
    assert_eq!(names, ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]);
    for mechanism in Mechanism::ALL {
        assert_eq!(Mechanism::from_name(mechanism.name()), Some(mechanism));
    }
    assert_eq!(Mechanism::from_name("plain"), None);
    assert_eq!(Mechanism::from_name("SCRAM-SHA-1"), None);
}

#[test]
fn plain_accepts_the_right_password() {
    let store = pencil_store();
    for message in [&b"\0user\0pencil"[..], b"user\0user\0pencil"] {
        assert_eq!(
            Authenticator::new(Mechanism::Plain).step(message, &store),
            Step::Done {
                principal: "user".to_string(),
                response: Vec::new(),
            }
        );
    }
    // Either hash's credential will do.
    let store = Store::default().with(Mechanism::ScramSha512, "user", "pencil");
    assert!(matches!(
        Authenticator::new(Mechanism::Plain).step(b"\0user\0pencil", &store),
        Step::Done { .. }
    ));
}

#[test]
fn plain_refuses_wrong_passwords_unknown_users_and_malformed_messages() {
    let store = pencil_store();
    for message in [
        &b"\0user\0pencil2"[..],
        b"\0user\0",
        b"\0ghost\0pencil",
        b"admin\0user\0pencil",
        b"user\0pencil",
        b"userpencil",
        b"\0user\0pencil\0",
        b"\0\0pencil",
        b"",
        b"\0us\xffer\0pencil",
    ] {
        failed(Authenticator::new(Mechanism::Plain).step(message, &store));
    }
    assert!(
        failed(Authenticator::new(Mechanism::Plain).step(b"admin\0user\0pencil", &store))
            .contains("authzid")
    );
}

#[test]
fn plain_parse_takes_the_three_parts() {
    assert_eq!(
        plain::parse(b"user\0user\0p\xffw").unwrap(),
        plain::PlainMessage {
            authzid: "user",
            authcid: "user",
            password: b"p\xffw",
        }
    );
}

#[test]
fn credential_encoding_round_trips_and_refuses_damage() {
    for mechanism in [Mechanism::ScramSha256, Mechanism::ScramSha512] {
        let credential = ScramCredential::generate(mechanism, b"pw", 8192).unwrap();
        let bytes = credential.encode().unwrap();
        assert_eq!(bytes[0], 1, "version byte");
        assert_eq!(ScramCredential::decode(&bytes).unwrap(), credential);
        for end in 0..bytes.len() {
            assert!(ScramCredential::decode(&bytes[..end]).is_err(), "{end}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(ScramCredential::decode(&longer).is_err());
        let mut version = bytes.clone();
        version[0] = 2;
        assert!(ScramCredential::decode(&version).is_err());
        let mut iterations = bytes.clone();
        iterations[1..5].copy_from_slice(&100u32.to_be_bytes());
        assert!(ScramCredential::decode(&iterations).is_err());
    }
    let mut odd = ScramCredential::generate(Mechanism::ScramSha256, b"pw", 4096).unwrap();
    odd.server_key.pop();
    assert!(odd.encode().is_err());
}

#[test]
fn credential_debug_does_not_show_keys() {
    let credential = ScramCredential::generate(Mechanism::ScramSha256, b"pw", 4096).unwrap();
    let shown = format!("{credential:?}");
    assert!(!shown.contains(&format!("{:?}", credential.stored_key)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_first_messages_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        which in 0usize..3,
    ) {
        let store = pencil_store_cached();
        let step = Authenticator::new(Mechanism::ALL[which]).step(&bytes, store);
        let done = matches!(step, Step::Done { .. });
        prop_assert!(!done);
    }

    #[test]
    fn random_final_messages_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        sha512 in any::<bool>(),
    ) {
        let mechanism = if sha512 { Mechanism::ScramSha512 } else { Mechanism::ScramSha256 };
        let store = pencil_store_cached();
        let mut server = Authenticator::new(mechanism);
        prop_assert!(matches!(server.step(b"n,,n=user,r=abc", store), Step::Continue(_)));
        prop_assert!(matches!(server.step(&bytes, store), Step::Failed(_)));
    }

    #[test]
    fn scram_like_final_messages_never_panic(
        parts in proptest::collection::vec("[a-z=,]{0,3}|c=biws|r=abc|p=[A-Za-z0-9+/=]{0,90}", 0..6),
    ) {
        let store = pencil_store_cached();
        let mut server = Authenticator::new(Mechanism::ScramSha256);
        prop_assert!(matches!(server.step(b"n,,n=user,r=abc", store), Step::Continue(_)));
        let message = parts.join(",");
        prop_assert!(matches!(server.step(message.as_bytes(), store), Step::Failed(_)));
    }

    #[test]
    fn random_credential_encodings_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let _ = ScramCredential::decode(&bytes);
    }
}

/// One store for all proptest cases, so cases do not each pay for PBKDF2.
fn pencil_store_cached() -> &'static Store {
    static STORE: std::sync::OnceLock<Store> = std::sync::OnceLock::new();
    STORE.get_or_init(pencil_store)
}
