//! Token round trip, every rejection, rotation, replay and key hygiene.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use warden_proof::*;

const NOW: u64 = 1_800_000_000;

fn setup() -> (Arc<SoftwareKeyProvider>, TokenIssuer) {
    let provider = Arc::new(SoftwareKeyProvider::new(Ed25519Key::generate().unwrap()));
    let issuer = TokenIssuer::new(provider.clone(), "warden-test");
    (provider, issuer)
}

fn args() -> Value {
    json!({"to": "alice@corp.test", "subject": "hi", "n": [1, 2.5]})
}

fn mint(issuer: &TokenIssuer, args: &Value, now: u64) -> String {
    issuer
        .mint(
            &Grant {
                principal: Some("agent-7"),
                session: Some("s-1"),
                tool: "send_email",
                args,
                policy_digest: "sha256:abcd",
            },
            now,
        )
        .unwrap()
}

fn part(token: &str, i: usize) -> Value {
    let p = token.split('.').nth(i).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
}

#[test]
fn round_trip_and_claims() {
    let (provider, issuer) = setup();
    let token = mint(&issuer, &args(), NOW);
    let header = part(&token, 0);
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["typ"], "JWT");
    let kid = header["kid"].as_str().unwrap().to_owned();
    let jwks = provider.jwks(NOW);
    assert_eq!(jwks.keys.len(), 1);
    assert_eq!(jwks.keys[0].kid, kid);
    assert_eq!(jwks.keys[0].kty, "OKP");
    assert_eq!(jwks.keys[0].crv, "Ed25519");

    // Same arguments spelled differently still verify (RFC 8785 hash).
    let respelled: Value =
        serde_json::from_str(r#"{"n":[1.0,2.50],"subject":"hi","to":"alice@corp.test"}"#).unwrap();
    let claims = verify(&token, &jwks, "send_email", &respelled, NOW + 1).unwrap();
    assert_eq!(claims.iss, "warden-test");
    assert_eq!(claims.sub.as_deref(), Some("agent-7"));
    assert_eq!(claims.sid.as_deref(), Some("s-1"));
    assert_eq!(claims.tool, "send_email");
    assert_eq!(claims.args_hash, args_hash(&args()).unwrap());
    assert_eq!(claims.policy, "sha256:abcd");
    assert_eq!(claims.iat, NOW);
    assert_eq!(claims.exp, NOW + DEFAULT_TTL_SECS);
    assert_eq!(URL_SAFE_NO_PAD.decode(&claims.jti).unwrap().len(), 16);
    let payload = part(&token, 1);
    for k in [
        "iss",
        "sub",
        "sid",
        "tool",
        "args_hash",
        "policy",
        "iat",
        "exp",
        "jti",
    ] {
        assert!(payload.get(k).is_some(), "claim {k} missing");
    }
    // jti is unique.
    let other = mint(&issuer, &args(), NOW);
    assert_ne!(part(&other, 1)["jti"], payload["jti"]);
    // The provider verifies its own signature too.
    let (signing_input, sig) = token.rsplit_once('.').unwrap();
    provider
        .verify(
            &kid,
            signing_input.as_bytes(),
            &URL_SAFE_NO_PAD.decode(sig).unwrap(),
        )
        .unwrap();
}

#[test]
fn configurable_ttl() {
    let (provider, issuer) = setup();
    let issuer = issuer.with_ttl_secs(120);
    let token = mint(&issuer, &args(), NOW);
    let v = TokenVerifier::new(provider.jwks(NOW)).with_leeway_secs(0);
    assert_eq!(
        v.verify(&token, "send_email", &args(), NOW + 119)
            .unwrap()
            .exp,
        NOW + 120
    );
    assert!(matches!(
        v.verify(&token, "send_email", &args(), NOW + 120),
        Err(VerifyError::Expired { .. })
    ));
}

#[test]
fn rejects_expired() {
    let (provider, issuer) = setup();
    let token = mint(&issuer, &args(), NOW);
    let v = TokenVerifier::new(provider.jwks(NOW));
    assert!(
        v.verify(
            &token,
            "send_email",
            &args(),
            NOW + 30 + DEFAULT_LEEWAY_SECS - 1
        )
        .is_ok()
    );
    let err = v
        .verify(
            &token,
            "send_email",
            &args(),
            NOW + 30 + DEFAULT_LEEWAY_SECS,
        )
        .unwrap_err();
    assert!(matches!(err, VerifyError::Expired { .. }), "{err}");
}

#[test]
fn rejects_future_iat() {
    let (provider, issuer) = setup();
    let token = mint(&issuer, &args(), NOW + 60);
    let err = TokenVerifier::new(provider.jwks(NOW))
        .verify(&token, "send_email", &args(), NOW)
        .unwrap_err();
    assert!(matches!(err, VerifyError::NotYetValid { .. }), "{err}");
}

#[test]
fn rejects_other_args_and_other_tool() {
    let (provider, issuer) = setup();
    let token = mint(&issuer, &args(), NOW);
    let jwks = provider.jwks(NOW);
    let mut other = args();
    other["to"] = json!("mallory@evil.test");
    assert_eq!(
        verify(&token, &jwks, "send_email", &other, NOW).unwrap_err(),
        VerifyError::Args
    );
    assert_eq!(
        verify(&token, &jwks, "send_email", &json!(null), NOW).unwrap_err(),
        VerifyError::Args
    );
    let err = verify(&token, &jwks, "http_post", &args(), NOW).unwrap_err();
    assert!(matches!(err, VerifyError::Tool { .. }), "{err}");
}

#[test]
fn rejects_wrong_signature_and_tampering() {
    let (_provider, issuer) = setup();
    let token = mint(&issuer, &args(), NOW);
    // A different key set with a key of the same kid is impossible (kid is a thumbprint), so a
    // foreign key set does not know the kid.
    let (other_provider, other_issuer) = setup();
    let foreign = other_provider.jwks(NOW);
    assert!(matches!(
        verify(&token, &foreign, "send_email", &args(), NOW),
        Err(VerifyError::UnknownKey(_))
    ));
    // Right kid, wrong public key: a forged JWKS entry.
    let mut forged = _provider.jwks(NOW);
    forged.keys[0].x = foreign.keys[0].x.clone();
    assert_eq!(
        verify(&token, &forged, "send_email", &args(), NOW).unwrap_err(),
        VerifyError::BadSignature
    );
    let jwks = _provider.jwks(NOW);
    // Flip one signature bit.
    let (head, sig) = token.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    sig[10] ^= 1;
    let flipped = format!("{head}.{}", URL_SAFE_NO_PAD.encode(&sig));
    assert_eq!(
        verify(&flipped, &jwks, "send_email", &args(), NOW).unwrap_err(),
        VerifyError::BadSignature
    );
    // Swap the payload for one naming other args (signature no longer matches).
    let mut claims: Value = part(&token, 1);
    claims["args_hash"] = json!(args_hash(&json!({"to": "mallory@evil.test"})).unwrap());
    let parts: Vec<&str> = token.split('.').collect();
    let swapped = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()),
        parts[2]
    );
    assert_eq!(
        verify(
            &swapped,
            &jwks,
            "send_email",
            &json!({"to": "mallory@evil.test"}),
            NOW
        )
        .unwrap_err(),
        VerifyError::BadSignature
    );
    // Signed by another key but claiming our kid.
    let other_token = mint(&other_issuer, &args(), NOW);
    let op: Vec<&str> = other_token.split('.').collect();
    let relabelled = format!("{}.{}.{}", parts[0], op[1], op[2]);
    assert_eq!(
        verify(&relabelled, &jwks, "send_email", &args(), NOW).unwrap_err(),
        VerifyError::BadSignature
    );
}

#[test]
fn rejects_malformed_and_other_algorithms() {
    let (provider, issuer) = setup();
    let jwks = provider.jwks(NOW);
    let token = mint(&issuer, &args(), NOW);
    let parts: Vec<&str> = token.split('.').collect();
    for bad in [
        "",
        "a.b",
        "a.b.c.d",
        &format!("{}.{}", parts[0], parts[1]),
        &format!("{token}="),
        &format!("{}.{}.{}.", parts[0], parts[1], parts[2]),
    ] {
        assert!(
            matches!(
                verify(bad, &jwks, "send_email", &args(), NOW),
                Err(VerifyError::Malformed(_))
            ),
            "{bad}"
        );
    }
    let kid = part(&token, 0)["kid"].as_str().unwrap().to_owned();
    for header in [
        json!({"alg": "none", "typ": "JWT", "kid": kid}),
        json!({"alg": "HS256", "typ": "JWT", "kid": kid}),
        json!({"alg": "EdDSA", "typ": "JOSE+JSON", "kid": kid}),
    ] {
        let h = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap());
        let t = format!("{h}.{}.{}", parts[1], parts[2]);
        assert!(
            matches!(
                verify(&t, &jwks, "send_email", &args(), NOW),
                Err(VerifyError::UnsupportedHeader(_))
            ),
            "{header}"
        );
    }
    // `crit` (or any unknown header member) is refused.
    let h = URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(&json!({"alg": "EdDSA", "typ": "JWT", "kid": kid, "crit": ["x"]}))
            .unwrap(),
    );
    assert!(matches!(
        verify(
            &format!("{h}.{}.{}", parts[1], parts[2]),
            &jwks,
            "send_email",
            &args(),
            NOW
        ),
        Err(VerifyError::Malformed(_))
    ));
    // alg:none with an empty signature.
    let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"x"}"#);
    assert!(
        verify(
            &format!("{h}.{}.", parts[1]),
            &jwks,
            "send_email",
            &args(),
            NOW
        )
        .is_err()
    );
    // Wrong issuer when one is required.
    let err = TokenVerifier::new(jwks)
        .with_issuer("someone-else")
        .verify(&token, "send_email", &args(), NOW)
        .unwrap_err();
    assert!(matches!(err, VerifyError::Issuer(_)));
}

#[test]
fn rotation_keeps_old_key_until_its_last_token_expired() {
    let (provider, issuer) = setup();
    let old_token = mint(&issuer, &args(), NOW);
    let old_kid = part(&old_token, 0)["kid"].as_str().unwrap().to_owned();
    issuer.rotate(&provider, Ed25519Key::generate().unwrap(), NOW);
    let new_token = mint(&issuer, &args(), NOW + 1);
    let new_kid = part(&new_token, 0)["kid"].as_str().unwrap().to_owned();
    assert_ne!(old_kid, new_kid);

    let jwks = provider.jwks(NOW + 1);
    let kids: Vec<&str> = jwks.keys.iter().map(|k| k.kid.as_str()).collect();
    assert_eq!(
        kids,
        [new_kid.as_str(), old_kid.as_str()],
        "current key first, old still published"
    );
    verify(&old_token, &jwks, "send_email", &args(), NOW + 2).unwrap();
    verify(&new_token, &jwks, "send_email", &args(), NOW + 2).unwrap();

    // Until the old key's last token expired (ttl + leeway after rotation), it stays published.
    let last_valid = NOW + DEFAULT_TTL_SECS + DEFAULT_LEEWAY_SECS - 1;
    assert_eq!(provider.jwks(last_valid).keys.len(), 2);
    let after = NOW + DEFAULT_TTL_SECS + DEFAULT_LEEWAY_SECS;
    let jwks = provider.jwks(after);
    assert_eq!(jwks.keys.len(), 1);
    assert_eq!(jwks.keys[0].kid, new_kid);
    provider.prune(after);
    assert!(matches!(
        provider.verify(&old_kid, b"x", &[0; 64]),
        Err(KeyError::UnknownKey(_))
    ));
}

#[test]
fn rotating_back_to_a_published_key_lists_each_kid_once() {
    let a = Ed25519Key::generate().unwrap();
    let a_pem = a.to_pkcs8_pem().unwrap();
    let a_kid = a.kid().to_owned();
    let provider = Arc::new(SoftwareKeyProvider::new(a));
    let issuer = TokenIssuer::new(provider.clone(), "warden-test");
    let b = Ed25519Key::generate().unwrap();
    let b_kid = b.kid().to_owned();
    issuer.rotate(&provider, b, NOW);
    // Back to A while A is still published as retired, then to B again.
    issuer.rotate(
        &provider,
        Ed25519Key::from_pkcs8_pem(&a_pem).unwrap(),
        NOW + 1,
    );
    let kids = |at: u64| -> Vec<String> {
        provider
            .jwks(at)
            .keys
            .iter()
            .map(|k| k.kid.clone())
            .collect()
    };
    assert_eq!(kids(NOW + 1), [a_kid.clone(), b_kid.clone()]);
    // Rotating to the key that is already current changes nothing.
    issuer.rotate(
        &provider,
        Ed25519Key::from_pkcs8_pem(&a_pem).unwrap(),
        NOW + 2,
    );
    assert_eq!(kids(NOW + 2), [a_kid.clone(), b_kid.clone()]);
    // B's window counts from the latest rotation away from it.
    let b_until = NOW + 1 + DEFAULT_TTL_SECS + DEFAULT_LEEWAY_SECS;
    assert_eq!(kids(b_until - 1).len(), 2);
    assert_eq!(kids(b_until), [a_kid]);
}

#[test]
fn pkcs8_pem_round_trip_and_bad_pem() {
    let key = Ed25519Key::generate().unwrap();
    let pem = key.to_pkcs8_pem().unwrap();
    assert!(
        pem.expose_secret()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    let back = Ed25519Key::from_pkcs8_pem(&pem).unwrap();
    assert_eq!(back.kid(), key.kid());
    assert_eq!(back.sign(b"m"), key.sign(b"m"));
    let err = Ed25519Key::from_pkcs8_pem(&SecretString::from(
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    ))
    .unwrap_err();
    assert_eq!(err, KeyError::InvalidSigningKey);
}

#[test]
fn known_pkcs8_key_gives_rfc8037_public_key() {
    // RFC 8037 appendix A.1 private key d, wrapped in PKCS#8 (RFC 8410 prefix).
    let d =
        hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60").unwrap();
    let mut der = hex::decode("302e020100300506032b657004220420").unwrap();
    der.extend_from_slice(&d);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
    let pem = format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n");
    let key = Ed25519Key::from_pkcs8_pem(&SecretString::from(pem)).unwrap();
    let jwk = key.public_jwk();
    assert_eq!(jwk.x, "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo");
    // RFC 8037 appendix A.3 thumbprint.
    assert_eq!(key.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
}

#[test]
fn keys_never_in_debug_or_errors() {
    let key = Ed25519Key::generate().unwrap();
    let pem = key.to_pkcs8_pem().unwrap();
    let body: String = pem
        .expose_secret()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let mac = MacKey::generate().unwrap();
    let mac_hex = mac.to_hex().expose_secret().to_owned();
    let provider =
        SoftwareKeyProvider::new(Ed25519Key::from_pkcs8_pem(&pem).unwrap()).with_mac_key(mac);
    let dumps = [
        format!("{key:?}"),
        format!("{provider:?}"),
        format!("{pem:?}"),
        format!(
            "{:?}",
            MacKey::from_hex(&SecretString::from(mac_hex.clone())).unwrap()
        ),
        format!(
            "{}",
            Ed25519Key::from_pkcs8_pem(&SecretString::from(body.clone())).unwrap_err()
        ),
    ];
    for d in &dumps {
        assert!(!d.contains(&body) && !d.contains(&body[..20]), "{d}");
        assert!(!d.contains(&mac_hex) && !d.contains(&mac_hex[..16]), "{d}");
    }
    assert!(dumps[0].contains(key.kid()));
}

#[test]
fn mac_key_rules() {
    assert!(matches!(
        MacKey::from_bytes(vec![1; 31]),
        Err(KeyError::InvalidMacKey(_))
    ));
    let k = MacKey::from_bytes(vec![7; 32]).unwrap();
    let tag = k.tag(b"entry").unwrap();
    assert!(k.check(b"entry", &tag).unwrap());
    assert!(!k.check(b"entrY", &tag).unwrap());
    let p = SoftwareKeyProvider::mac_only(k);
    assert_eq!(p.mac(b"entry").unwrap(), tag);
    assert_eq!(p.sign(b"x").unwrap_err(), KeyError::NoSigningKey);
    assert!(p.jwks(NOW).keys.is_empty());
    let (signing_only, _) = setup();
    assert_eq!(signing_only.mac(b"x").unwrap_err(), KeyError::NoMacKey);
}

#[test]
fn numbers_beyond_2_pow_53_are_refused_at_mint_and_verify() {
    let (provider, issuer) = setup();
    let grant = |args: &'static str| -> Value { serde_json::from_str(args).unwrap() };
    for bad in [
        r#"{"a": 9007199254740992}"#,
        r#"{"a": -9007199254740992}"#,
        r#"{"a": [1, {"b/c": 18446744073709551615}]}"#,
        r#"{"a": 1e300}"#,
    ] {
        let args = grant(bad);
        let err = issuer
            .mint(
                &Grant {
                    principal: None,
                    session: None,
                    tool: "t",
                    args: &args,
                    policy_digest: "sha256:00",
                },
                NOW,
            )
            .unwrap_err();
        assert!(matches!(err, MintError::UnsafeNumber(_)), "{bad}: {err}");
        assert!(err.to_string().contains("2^53"), "{err}");
    }
    let e =
        check_exact_numbers(&grant(r#"{"a": [1, {"b/c": 18446744073709551615}]}"#)).unwrap_err();
    assert_eq!(e.path, "/a/1/b~1c");
    // The bound itself is fine; a token over it does not verify for the next integer.
    let safe = grant(r#"{"a": 9007199254740991, "b": -9007199254740991, "c": 2.5}"#);
    let token = mint(&issuer, &safe, NOW);
    let verifier = TokenVerifier::new(provider.jwks(NOW));
    verifier.verify(&token, "send_email", &safe, NOW).unwrap();
    let next = grant(r#"{"a": 9007199254740992, "b": -9007199254740991, "c": 2.5}"#);
    assert!(matches!(
        verifier.verify(&token, "send_email", &next, NOW),
        Err(VerifyError::UnsafeNumber(_))
    ));
}

#[test]
fn audience_binds_tenant_and_policy() {
    let (provider, issuer) = setup();
    assert_eq!(audience("acme", "support"), "acme/support");
    assert_ne!(audience("a/b", "c"), audience("a", "b/c"));
    assert_ne!(audience("a%2Fb", "c"), audience("a/b", "c"));
    let args = args();
    let grant = Grant {
        principal: None,
        session: None,
        tool: "send_email",
        args: &args,
        policy_digest: "sha256:00",
    };
    let aud = audience("acme", "support");
    let token = issuer.mint_for(&grant, Some(&aud), NOW).unwrap();
    let verifier = TokenVerifier::new(provider.jwks(NOW));
    let claims = verifier
        .clone()
        .with_audience(aud.clone())
        .verify(&token, "send_email", &args, NOW)
        .unwrap();
    assert_eq!(claims.aud.as_deref(), Some(aud.as_str()));
    let other = verifier
        .clone()
        .with_audience(audience("globex", "support"))
        .verify(&token, "send_email", &args, NOW);
    assert!(
        matches!(other, Err(VerifyError::Audience { .. })),
        "{other:?}"
    );
    // A token without an audience fails a verifier that requires one.
    let bare = mint(&issuer, &args, NOW);
    assert!(matches!(
        verifier
            .with_audience(aud)
            .verify(&bare, "send_email", &args, NOW),
        Err(VerifyError::Audience { .. })
    ));
}

#[test]
fn mint_and_verify_limits_agree() {
    let (provider, issuer) = setup();
    let args = args();
    let verifier = TokenVerifier::new(provider.jwks(NOW));
    for len in [100, 6_000, 11_000, 12_000, 20_000] {
        let session = "s".repeat(len);
        let grant = Grant {
            principal: Some("p"),
            session: Some(&session),
            tool: "send_email",
            args: &args,
            policy_digest: "sha256:00",
        };
        let checked = issuer.check_mintable(&grant, Some("a/b"), NOW);
        match issuer.mint_for(&grant, Some("a/b"), NOW) {
            Ok(token) => {
                assert!(checked.is_ok(), "{len}");
                assert!(token.len() <= MAX_TOKEN_LEN);
                verifier.verify(&token, "send_email", &args, NOW).unwrap();
            }
            Err(MintError::TooLong { len: l, max }) => {
                assert_eq!(max, MAX_TOKEN_LEN);
                assert!(l > max);
                // The check without signing computes the same length.
                assert!(
                    matches!(checked, Err(MintError::TooLong { len: c, .. }) if c == l),
                    "{len}: {checked:?}"
                );
            }
            Err(e) => panic!("{len}: {e}"),
        }
    }
}

#[test]
fn signing_keys_are_written_as_pkcs8_v1_and_v2_reads() {
    let key = Ed25519Key::generate().unwrap();
    let pem = key.to_pkcs8_pem().unwrap();
    let body: String = pem
        .expose_secret()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    // v1: SEQUENCE { INTEGER 0, AlgorithmIdentifier, OCTET STRING }: 48 bytes, version 0.
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    assert_eq!(der.len(), 48);
    assert_eq!(&der[2..5], &[2, 1, 0], "version must be v1 (0)");
    let back = Ed25519Key::from_pkcs8_pem(&pem).unwrap();
    assert_eq!(back.kid(), key.kid());
    // v2 (RFC 5958, public key included) as earlier versions wrote it.
    let v2 = SecretString::from(
        "-----BEGIN PRIVATE KEY-----\n\
         MFECAQEwBQYDK2VwBCIEIIbPuVfbY1N993VdjtFErTKyXUam8pVtKxIOSguBSlRT\n\
         gSEA0aPBpPNCBAM+KR9YBG3/EzK29QTjUSXtLrJj/O+JCCc=\n\
         -----END PRIVATE KEY-----\n",
    );
    assert_eq!(
        Ed25519Key::from_pkcs8_pem(&v2).unwrap().kid(),
        "NWostNOhitq7yBx2KfQNexdCxoGuZs0epKsl1-5oCuo"
    );
}
