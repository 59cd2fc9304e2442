//! Evasions found by an adversarial run (Unicode look-alikes and invisible characters,
//! URL-encoding and HTML references, internationalised addresses, AWS secret key names), each
//! with hard negatives for the rule that closes it. Offsets are checked against the original text.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::*;
use serde_json::json;
use warden_content::{Action, KNOWN_DETECTORS};

/// The original text of each finding of `id` alone in `text`.
fn found(id: &str, text: &str) -> Vec<String> {
    spans(&policy(&[id], None), text)
        .into_iter()
        .map(|(_, a, z)| text.chars().skip(a).take(z - a).collect())
        .collect()
}

/// Redacts `text` with every built-in detector.
fn redact_all(text: &str) -> String {
    let all: Vec<&str> = KNOWN_DETECTORS.to_vec();
    let out = scan_prompt(&policy(&all, Some(Action::Redact)), text);
    out.redacted
        .map(|v| v.as_str().unwrap().to_owned())
        .unwrap_or_else(|| text.to_owned())
}

#[test]
fn unicode_digits_and_invisible_characters_do_not_hide_digit_detectors() {
    let cases = [
        (
            "credit_card",
            "card ４１１１ １１１１ １１１１ １１１１ ok",
            "４１１１ １１１１ １１１１ １１１１",
        ),
        (
            "credit_card",
            "card ٤١١١١١١١١١١١١١١١ ok",
            "٤١١١١١١١١١١١١١١١",
        ),
        (
            "credit_card",
            "card ۴۱۱۱-۱۱۱۱-۱۱۱۱-۱۱۱۱.",
            "۴۱۱۱-۱۱۱۱-۱۱۱۱-۱۱۱۱",
        ),
        (
            "credit_card",
            "card 4111\u{200B}1111\u{200B}1111\u{200B}1111",
            "4111\u{200B}1111\u{200B}1111\u{200B}1111",
        ),
        (
            "credit_card",
            "card 4111\u{A0}1111\u{A0}1111\u{A0}1111!",
            "4111\u{A0}1111\u{A0}1111\u{A0}1111",
        ),
        (
            "credit_card",
            "4\u{AD}111 1111 1111 1111",
            "4\u{AD}111 1111 1111 1111",
        ),
        ("us_ssn", "ssn 123\u{AD}-45-6789", "123\u{AD}-45-6789"),
        (
            "us_ssn",
            "ssn １２３－４５－６７８９",
            "１２３－４５－６７８９",
        ),
        (
            "us_ssn",
            "ssn 123\u{2010}45\u{2010}6789",
            "123\u{2010}45\u{2010}6789",
        ),
        (
            "phone",
            "call +1 415\u{2060} 555 2671",
            "+1 415\u{2060} 555 2671",
        ),
        (
            "phone",
            "call ＋４４ ２０ ７９４６ ０９５８",
            "＋４４ ２０ ７９４６ ０９５８",
        ),
        ("ipv4", "host １０．０．０．１ up", "１０．０．０．１"),
        (
            "iban",
            "IBAN GB82\u{A0}WEST\u{A0}1234\u{A0}5698\u{A0}7654\u{A0}32",
            "GB82\u{A0}WEST\u{A0}1234\u{A0}5698\u{A0}7654\u{A0}32",
        ),
    ];
    for (id, text, secret) in cases {
        assert_eq!(found(id, text), [secret], "{id}: {text:?}");
        let red = redact_all(text);
        assert!(!red.contains(secret), "{id}: {red:?}");
        assert!(red.contains(&format!("[REDACTED:{id}]")), "{id}: {red:?}");
    }
}

#[test]
fn unicode_and_invisible_characters_do_not_hide_tokens() {
    let cases = [
        ("aws_access_key", "AKIA\u{200B}IOSFODNN7EXAMPLE"),
        ("aws_access_key", "ＡＫＩＡＩＯＳＦＯＤＮＮ７ＥＸＡＭＰＬＥ"),
        ("aws_access_key", "AKIAIOSFO\u{2060}DNN7EXAMPLE"),
        (
            "github_token",
            "ghp_a1B2a1B2a1B2\u{AD}a1B2a1B2a1B2a1B2a1B2a1B2",
        ),
        (
            "anthropic_key",
            "sk-ant-\u{FEFF}api03-abcdefghijklmnopqrstuvwxyz0123",
        ),
        (
            "openai_key",
            "sk\u{2011}proj-abcdefghijklmnopqrstuvwxyz0123",
        ),
        (
            "jwt",
            "eyJhbGciOiJIUzI1NiJ9\u{200C}.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
        ),
        (
            "google_api_key",
            "AIzaSyDaGmWKa4JsXZ\u{200D}-HjGw7ISLn_3namBGewQe",
        ),
    ];
    for (id, text) in cases {
        assert_eq!(found(id, text), [text], "{id}: {text:?}");
        assert_eq!(
            redact_all(&format!("k {text} .")),
            format!("k [REDACTED:{id}] .")
        );
    }
}

#[test]
fn unicode_hard_negatives() {
    let all: Vec<&str> = KNOWN_DETECTORS.to_vec();
    let p = policy(&all, None);
    for text in [
        "Der Bericht für München enthält Zahlen für 2024.",
        "東京都港区１２３番地、電話は後で。",
        "version ３.２.１ released",
        "date ٢٠٢٤-٠١-١٥ at ١٠:٣٠",
        "count ４１１１ １１１１ １１１１ １１１２", // Luhn fails
        "ratio 1\u{2044}2 and x² + y³",
        "soft\u{AD}hyphen and zero\u{200B}width in prose",
        "asia\u{200B}pacific summit",
    ] {
        assert!(
            spans(&p, text).is_empty(),
            "{text:?}: {:?}",
            spans(&p, text)
        );
    }
}

#[test]
fn internationalised_email_addresses() {
    assert_eq!(
        found("email", "mail josé@example.com."),
        ["josé@example.com"]
    );
    assert_eq!(found("email", "user@bücher.de, thanks"), ["user@bücher.de"]);
    assert_eq!(
        found("email", "Grüße an jürgen.müller@straße.example"),
        ["jürgen.müller@straße.example"]
    );
    assert_eq!(found("email", "почта иван@пример.рф"), ["иван@пример.рф"]);
    assert_eq!(
        found("email", "mail jose\u{301}@example.com"),
        ["jose\u{301}@example.com"]
    );
    assert_eq!(found("email", "“bob@example.com”"), ["bob@example.com"]);
    assert_eq!(
        found("email", "ｂｏｂ＠ｅｘａｍｐｌｅ．ｃｏｍ"),
        ["ｂｏｂ＠ｅｘａｍｐｌｅ．ｃｏｍ"]
    );
    assert_eq!(
        found("email", "bob\u{200B}@example.com"),
        ["bob\u{200B}@example.com"]
    );
    for text in [
        "café@home",
        "名前@例",
        "😀@example.com",
        "price 5€@each",
        "über@2x.png",
        "naïve @ example.com",
        "user@bücher.d",
    ] {
        assert!(found("email", text).is_empty(), "{text}");
    }
}

#[test]
fn url_encoding_and_html_references_do_not_hide_values() {
    let cases = [
        (
            "credit_card",
            "card=4111%201111%201111%201111&x=1",
            "4111%201111%201111%201111",
        ),
        (
            "credit_card",
            "&#52;111 1111 1111 1111",
            "&#52;111 1111 1111 1111",
        ),
        (
            "credit_card",
            "<td>&#x34;&#x31;11&nbsp;1111&nbsp;1111&nbsp;1111</td>",
            "&#x34;&#x31;11&nbsp;1111&nbsp;1111&nbsp;1111",
        ),
        ("us_ssn", "ssn=123%2D45%2D6789", "123%2D45%2D6789"),
        ("email", "to=alice%40example.com&go", "alice%40example.com"),
        ("email", "alice&#64;example.com", "alice&#64;example.com"),
        (
            "email",
            "alice&commat;example&period;com",
            "alice&commat;example&period;com",
        ),
        (
            "email",
            "to=jos%C3%A9%40example.com",
            "jos%C3%A9%40example.com",
        ),
        (
            "aws_access_key",
            "k=%41KIAIOSFODNN7EXAMPLE",
            "%41KIAIOSFODNN7EXAMPLE",
        ),
        (
            "phone",
            "tel=%2B1%20415%20555%202671",
            "%2B1%20415%20555%202671",
        ),
    ];
    for (id, text, secret) in cases {
        assert_eq!(found(id, text), [secret], "{id}: {text:?}");
        let red = redact_all(text);
        assert!(!red.contains(secret), "{id}: {red:?}");
    }
    // One level only: a double-encoded value is left as it reads after one decoding.
    assert!(found("credit_card", "4111%25201111%25201111%25201111").is_empty());
}

#[test]
fn decoding_hard_negatives() {
    let all: Vec<&str> = KNOWN_DETECTORS.to_vec();
    let p = policy(&all, None);
    for text in [
        "100%25 sure, R&D and Q&A",
        "a=1&b=2&c=3 %20%20%20",
        "&#52;111 1111 1111 1112",
        "&amp;&lt;&gt; &#9731; %E2%98%83",
        "50% off & 20% more",
        "%FF%FE%00 bytes",
    ] {
        assert!(
            spans(&p, text).is_empty(),
            "{text:?}: {:?}",
            spans(&p, text)
        );
    }
}

#[test]
fn views_keep_json_values_and_offsets() {
    let p = policy(&["credit_card", "email"], Some(Action::Redact));
    let args = json!({"note": "pay ４１１１ １１１１ １１１１ １１１１ or mail josé@example.com"});
    let out = scan_args(&p, &args);
    let text = args["note"].as_str().unwrap();
    let got: Vec<String> = out
        .findings
        .iter()
        .map(|f| text.chars().skip(f.start).take(f.end - f.start).collect())
        .collect();
    assert_eq!(
        got,
        ["４１１１ １１１１ １１１１ １１１１", "josé@example.com"]
    );
    assert_eq!(
        out.redacted,
        Some(json!({"note": "pay [REDACTED:credit_card] or mail [REDACTED:email]"}))
    );
}

#[test]
fn aws_secret_key_names_spelled_differently() {
    let v = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    for text in [
        format!("aws-secret-access-key: {v}"),
        format!("Aws_Secret_Access_Key = {v}"),
        format!("AWS_Secret_Access_Key={v}"),
        format!("AWS Secret Access Key: {v}"),
        format!("aws_secret_access_key:\n  {v}\n"),
        format!("aws_secret_access_key =\r\n{v}"),
        format!("secret-access-key: \"{v}\""),
        format!("\"SecretAccessKey\":\n    \"{v}\""),
        format!("aws.secret.key={v}"),
        format!("[default]\naws_secret_access_key = {v}\n"),
        format!("aws_secret_access_key = {v}"),
    ] {
        assert_eq!(found("aws_secret_key", &text), [v], "{text:?}");
    }
    // JSON key context: any spelling of the name; quotes and whitespace around the value.
    let p = policy(&["aws_secret_key"], Some(Action::Redact));
    let args = json!({"Aws-Secret-Access-Key": format!("\n  {v} "), "aws secret key": v});
    let out = scan_args(&p, &args);
    assert_eq!(out.findings.len(), 2, "{:?}", out.findings);
    assert_eq!((out.findings[0].start, out.findings[0].end), (3, 43));
    assert_eq!(
        out.redacted,
        Some(
            json!({"Aws-Secret-Access-Key": "\n  [REDACTED:aws_secret_key] ", "aws secret key": "[REDACTED:aws_secret_key]"})
        )
    );
}

#[test]
fn aws_secret_key_name_hard_negatives() {
    let v = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    for text in [
        format!("client_secret = {v}"),
        format!("SECRET_KEY = '{v}'"),
        format!("secret: {v}"),
        format!("laws_secret = {v}"),
        format!("secret_key:\n  {v}"),
        format!("aws_secret_access_key:\n\n{v}"), // a blank line: not its value
        format!("the secret access key is rotated; sha {v}"),
        "aws-secret-access-key: ${AWS_SECRET}".to_owned(),
    ] {
        assert!(found("aws_secret_key", &text).is_empty(), "{text:?}");
    }
}

#[test]
fn object_keys_are_scanned_renamed_and_kept_out_of_paths() {
    let p = policy(&["credit_card", "email"], Some(Action::Redact));
    let args = json!({
        "4111 1111 1111 1111": 1,
        "keep": {"mail bob@example.com": "x@example.com", "n": null},
        "a@example.com": true,
        "b@example.com": [1],
        "[REDACTED:email]": "already taken"
    });
    let out = scan_args(&p, &args);
    let got: Vec<(&str, &str, usize, usize, bool)> = out
        .findings
        .iter()
        .map(|f| (f.detector.as_str(), f.path.as_str(), f.start, f.end, f.key))
        .collect();
    assert_eq!(
        got,
        [
            ("credit_card", "/args/[REDACTED:credit_card]", 0, 19, true),
            ("email", "/args/keep/mail [REDACTED:email]", 5, 20, true),
            ("email", "/args/keep/mail [REDACTED:email]", 0, 13, false),
            ("email", "/args/[REDACTED:email]#2", 0, 13, true),
            ("email", "/args/[REDACTED:email]#3", 0, 13, true),
        ]
    );
    // Keys are renamed in place; the values under them are redacted too; nothing else changes.
    let red = out.redacted.unwrap();
    assert_eq!(
        serde_json::to_string(&red).unwrap(),
        r#"{"[REDACTED:credit_card]":1,"keep":{"mail [REDACTED:email]":"[REDACTED:email]","n":null},"[REDACTED:email]#2":true,"[REDACTED:email]#3":[1],"[REDACTED:email]":"already taken"}"#
    );
    // No finding's text in any path, even without redaction.
    let out = scan_args(
        &policy(&["credit_card", "email"], Some(Action::Warn)),
        &args,
    );
    let dump = serde_json::to_string(&out.findings).unwrap();
    assert!(
        !dump.contains("4111") && !dump.contains("example.com"),
        "{dump}"
    );
    assert_eq!(out.redacted, None);
    // Redacting the redacted value again changes nothing.
    let again = scan_args(&p, &red);
    assert!(again.findings.is_empty(), "{:?}", again.findings);
}

#[test]
fn object_key_hard_negatives() {
    let all: Vec<&str> = KNOWN_DETECTORS.to_vec();
    let p = policy(&all, Some(Action::Redact));
    let args = json!({
        "to": 1, "user_name": 2, "created_at_2024-01-15": 3, "v1.2.3": 4, "10:30": 5,
        "order-2024-000123456": 6, "Content-Type": 7, "sk_live_mode_enabled": 8,
        "1717747200123": 9, "x-request-id": 10
    });
    let out = scan_args(&p, &args);
    assert!(out.findings.is_empty(), "{:?}", out.findings);
    assert_eq!(out.redacted, None);
}

#[test]
fn numbers_are_scanned_and_replaced_by_the_redaction_string() {
    let p = policy(&["credit_card", "us_ssn", "phone"], Some(Action::Redact));
    let raw = r#"{"card":4111111111111111,"f":4111111111111111.0,"neg":-5555555555554444,"ssn":123456789,"customer_ssn":12345678,"social_security_number":"078051120","phone":14155552671,"homePhone":"4155552671","mobile_no":"+442079460958","list":[4242424242424242],"keep":1.5,"small":42}"#;
    let args: serde_json::Value = serde_json::from_str(raw).unwrap();
    let out = scan_args(&p, &args);
    let got: Vec<(&str, &str, usize, usize)> = out
        .findings
        .iter()
        .map(|f| (f.detector.as_str(), f.path.as_str(), f.start, f.end))
        .collect();
    assert_eq!(
        got,
        [
            ("credit_card", "/args/card", 0, 16),
            ("credit_card", "/args/f", 0, 16),
            ("credit_card", "/args/neg", 1, 17),
            ("us_ssn", "/args/ssn", 0, 9),
            ("us_ssn", "/args/customer_ssn", 0, 8),
            ("us_ssn", "/args/social_security_number", 0, 9),
            ("phone", "/args/phone", 0, 11),
            ("phone", "/args/homePhone", 0, 10),
            ("phone", "/args/mobile_no", 0, 13),
            ("credit_card", "/args/list/0", 0, 16),
        ]
    );
    assert_eq!(
        out.redacted,
        Some(json!({
            "card": "[REDACTED:credit_card]", "f": "[REDACTED:credit_card]",
            "neg": "-[REDACTED:credit_card]", "ssn": "[REDACTED:us_ssn]",
            "customer_ssn": "[REDACTED:us_ssn]", "social_security_number": "[REDACTED:us_ssn]",
            "phone": "[REDACTED:phone]", "homePhone": "[REDACTED:phone]",
            "mobile_no": "[REDACTED:phone]", "list": ["[REDACTED:credit_card]"],
            "keep": 1.5, "small": 42
        }))
    );
}

#[test]
fn number_and_key_context_hard_negatives() {
    let all: Vec<&str> = KNOWN_DETECTORS.to_vec();
    let p = policy(&all, Some(Action::Redact));
    let args = json!({
        "id": 4111111111111112u64,        // Luhn fails
        "ts": 1717747200123u64,           // a timestamp
        "amount": 123456789,              // nine digits, not under an SSN key
        "count": 4155552671u64,           // ten digits, not under a phone key
        "version": 20240115,
        "ssn": 666123456,                 // area 666
        "ssn_hash": 123456789,            // not the SSN itself
        "phone_count": 12345678,
        "hotel": 4155552671u64,
        "mobile_build": 20240315,
        "phone": 12345,                   // too short for a phone number
        "tel": "415-555-abcd",
        "big": 12345678901234567890u64,   // 20 digits
        "ratio": 1234567.891011,
        "e": 1.5e300
    });
    let out = scan_args(&p, &args);
    assert!(out.findings.is_empty(), "{:?}", out.findings);
}

/// The secret detectors of issue 18 see through invisible and full-width characters like the
/// other tokens, and their findings cover the disguised original text.
#[test]
fn unicode_and_invisible_characters_do_not_hide_new_secrets() {
    let cases = [
        (
            "npm_token",
            "t npm_aB3dE5fG7hI9\u{200B}jK1lM3nO5pQ7rS9tU1vW3xY5 ok",
            "npm_aB3dE5fG7hI9\u{200B}jK1lM3nO5pQ7rS9tU1vW3xY5",
        ),
        (
            "gitlab_token",
            "t ｇｌｐａｔ－z_sxgtrfAxKr8q1TPY8Y ok",
            "ｇｌｐａｔ－z_sxgtrfAxKr8q1TPY8Y",
        ),
        (
            "slack_webhook",
            "https://hooks.slack.com/services/T0ABCDEFG/B0HIJKLMNOP/aB3dE5fG\u{2060}7hI9jK1lM3nO5pQ7 x",
            "https://hooks.slack.com/services/T0ABCDEFG/B0HIJKLMNOP/aB3dE5fG\u{2060}7hI9jK1lM3nO5pQ7",
        ),
        (
            "database_url",
            "postgres://app:s3cr\u{AD}3tPw@db/app",
            "s3cr\u{AD}3tPw",
        ),
        (
            "generic_secret",
            "ＤＢ＿ＰＡＳＳＷＯＲＤ＝Xk9#mQ2$vL7pR4",
            "Xk9#mQ2$vL7pR4",
        ),
        (
            "database_url",
            "postgres%3A%2F%2Fapp%3As3cr3tPw%40db%2Fapp",
            "s3cr3tPw",
        ),
    ];
    for (id, text, want) in cases {
        assert_eq!(found(id, text), [want], "{id}: {text}");
        assert!(!redact_all(text).contains(want), "{id}: {text}");
    }
    // Hard negatives stay clean once normalised.
    for (id, text) in [
        (
            "gitlab_token",
            "ｇｌｐａｔ－ｘｘｘｘｘｘｘｘｘｘｘｘｘｘｘｘｘｘｘｘ",
        ),
        ("database_url", "postgres://app:\u{200B}@db/app"),
        ("generic_secret", "password: ＜your-password＞"),
    ] {
        assert!(found(id, text).is_empty(), "{id}: {text}");
    }
}
