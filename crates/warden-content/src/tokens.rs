//! Literal-anchored detectors: API keys and tokens, JWTs, PEM private keys and AWS secret keys in
//! key/value context. One Aho-Corasick automaton finds the anchors of the enabled detectors;
//! only at an anchor does the detector's `^`-anchored regex run, on the rest of the string.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::Regex;

use crate::builtin::{Builtin, Sink};
use crate::bytes::{alnum, at, before, word};

/// What an anchor hit hands over to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Anchor {
    Aws,
    GithubClassic,
    GithubPat,
    Slack,
    SlackWebhook,
    SkDash,
    Stripe,
    Google,
    Jwt,
    Pem,
    AwsSecret,
}

/// Anchor literals, matched case-sensitively (token formats are case-sensitive; the AWS secret
/// key names are listed in their common casings) so the automaton's SIMD prefilter stays sharp.
const ANCHORS: &[(&str, Anchor, &[Builtin])] = &[
    ("AKIA", Anchor::Aws, &[Builtin::AwsAccessKey]),
    ("ASIA", Anchor::Aws, &[Builtin::AwsAccessKey]),
    ("ghp_", Anchor::GithubClassic, &[Builtin::GithubToken]),
    ("gho_", Anchor::GithubClassic, &[Builtin::GithubToken]),
    ("ghu_", Anchor::GithubClassic, &[Builtin::GithubToken]),
    ("ghs_", Anchor::GithubClassic, &[Builtin::GithubToken]),
    ("ghr_", Anchor::GithubClassic, &[Builtin::GithubToken]),
    ("github_pat_", Anchor::GithubPat, &[Builtin::GithubToken]),
    ("xox", Anchor::Slack, &[Builtin::SlackToken]),
    ("xapp-", Anchor::Slack, &[Builtin::SlackToken]),
    (
        "hooks.slack.com/services/",
        Anchor::SlackWebhook,
        &[Builtin::SlackToken],
    ),
    (
        "sk-",
        Anchor::SkDash,
        &[Builtin::OpenaiKey, Builtin::AnthropicKey],
    ),
    ("sk_live_", Anchor::Stripe, &[Builtin::StripeKey]),
    ("sk_test_", Anchor::Stripe, &[Builtin::StripeKey]),
    ("rk_live_", Anchor::Stripe, &[Builtin::StripeKey]),
    ("rk_test_", Anchor::Stripe, &[Builtin::StripeKey]),
    ("AIza", Anchor::Google, &[Builtin::GoogleApiKey]),
    ("eyJ", Anchor::Jwt, &[Builtin::Jwt]),
    ("-----BEGIN ", Anchor::Pem, &[Builtin::PrivateKey]),
];

/// Key names that put an AWS secret access key in key/value context, in their common casings.
const AWS_SECRET_NAMES: &[&str] = &[
    "aws_secret",
    "AWS_SECRET",
    "Aws_Secret",
    "secret_access_key",
    "SECRET_ACCESS_KEY",
    "Secret_Access_Key",
    "SecretAccessKey",
    "secretAccessKey",
    "secretaccesskey",
    "SECRETACCESSKEY",
];

/// Compiled token patterns, shared by every policy (see `scan::Shared`).
pub(crate) struct TokenRegexes {
    aws: Regex,
    gh_classic: Regex,
    gh_pat: Regex,
    slack: Regex,
    slack_webhook: Regex,
    openai: Regex,
    anthropic: Regex,
    stripe: Regex,
    google: Regex,
    jwt: Regex,
    pem_begin: Regex,
    pem_end: Regex,
    aws_secret: Regex,
    aws_secret_value: Regex,
    aws_secret_key_name: Regex,
}

impl TokenRegexes {
    /// Compile the token patterns.
    pub(crate) fn new() -> Result<Self, regex::Error> {
        Ok(TokenRegexes {
            aws: Regex::new(r"^(?:AKIA|ASIA)[A-Z0-9]{16}")?,
            gh_classic: Regex::new(r"^gh[pousr]_[A-Za-z0-9]{36}")?,
            gh_pat: Regex::new(r"^github_pat_[A-Za-z0-9_]{82}")?,
            slack: Regex::new(
                r"^(?:xox[abposre]-[0-9]{6,}-[A-Za-z0-9-]{8,}|xapp-[0-9]-[A-Z0-9]{6,}-[0-9]{6,}-[A-Za-z0-9]{16,})",
            )?,
            slack_webhook: Regex::new(
                r"^hooks\.slack\.com/services/T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9]{16,}",
            )?,
            openai: Regex::new(r"^sk-[A-Za-z0-9_\-]{20,}")?,
            anthropic: Regex::new(r"^sk-ant-[A-Za-z0-9_\-]{20,}")?,
            stripe: Regex::new(r"^[rs]k_(?:live|test)_[0-9A-Za-z]{10,247}")?,
            google: Regex::new(r"^AIza[0-9A-Za-z_\-]{35}")?,
            jwt: Regex::new(r"^eyJ[A-Za-z0-9_\-]{2,}\.eyJ[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]*")?,
            pem_begin: Regex::new(r"^-----BEGIN (?:[A-Z0-9]+ ){0,4}PRIVATE KEY(?: BLOCK)?-----")?,
            pem_end: Regex::new(r"^-----END (?:[A-Z0-9]+ ){0,4}PRIVATE KEY(?: BLOCK)?-----")?,
            aws_secret: Regex::new(
                r#"^(?i:aws_secret|secret_access_key|secretaccesskey)[A-Za-z0-9_]*["']?[ \t]*(?:=>|=|:)[ \t]*["']?([A-Za-z0-9/+]{40})"#,
            )?,
            aws_secret_value: Regex::new(r"^[A-Za-z0-9/+]{40}$")?,
            aws_secret_key_name: Regex::new(
                r"(?i)^(?:aws[_\-.]?)?secret[_\-.]?(?:access[_\-.]?)?key$",
            )?,
        })
    }

    /// Whether a JSON object key names an AWS secret key and its string value has the shape.
    pub(crate) fn aws_secret_pair(&self, key: &str, value: &str) -> bool {
        self.aws_secret_key_name.is_match(key) && self.aws_secret_value.is_match(value)
    }
}

/// The anchor automaton for one policy: only the anchors of enabled detectors.
pub(crate) struct Anchors {
    ac: AhoCorasick,
    kinds: Vec<Anchor>,
}

impl Anchors {
    /// Build the automaton for the enabled built-ins; `None` when no anchored detector is on.
    pub(crate) fn new(
        enabled: impl Fn(Builtin) -> bool,
    ) -> Result<Option<Self>, aho_corasick::BuildError> {
        let mut pats = Vec::new();
        let mut kinds = Vec::new();
        for (lit, kind, dets) in ANCHORS {
            if dets.iter().any(|&d| enabled(d)) {
                pats.push(*lit);
                kinds.push(*kind);
            }
        }
        if enabled(Builtin::AwsSecretKey) {
            for name in AWS_SECRET_NAMES {
                pats.push(*name);
                kinds.push(Anchor::AwsSecret);
            }
        }
        if pats.is_empty() {
            return Ok(None);
        }
        let ac = AhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&pats)?;
        Ok(Some(Anchors { ac, kinds }))
    }

    /// Run the anchored detectors over `s`.
    pub(crate) fn scan(&self, s: &str, re: &TokenRegexes, sink: &mut Sink<'_>) {
        // End of the last private key block: a BEGIN inside it is part of it.
        let mut pem_end = 0;
        for m in self.ac.find_iter(s) {
            let Some(&kind) = self.kinds.get(m.pattern().as_usize()) else {
                continue;
            };
            if kind == Anchor::Pem {
                if m.start() >= pem_end {
                    pem_end = pem(s, m.start(), re, sink);
                }
                continue;
            }
            at_anchor(s, m.start(), kind, re, sink);
        }
    }
}

/// Anchored match of `re` at `p`, with the byte after it not satisfying `cont`.
fn token(s: &str, p: usize, re: &Regex, cont: impl Fn(u8) -> bool) -> Option<usize> {
    let m = re.find(s.get(p..)?)?;
    let end = p + m.end();
    (!cont(at(s.as_bytes(), end))).then_some(end)
}

fn key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

fn at_anchor(s: &str, p: usize, kind: Anchor, re: &TokenRegexes, sink: &mut Sink<'_>) {
    let b = s.as_bytes();
    let prev = before(b, p);
    match kind {
        Anchor::AwsSecret => {
            if let Some(caps) = s.get(p..).and_then(|r| re.aws_secret.captures(r))
                && let Some(v) = caps.get(1)
            {
                let end = p + v.end();
                let x = at(b, end);
                if !(alnum(x) || matches!(x, b'/' | b'+' | b'=')) {
                    sink.push(Builtin::AwsSecretKey, p + v.start(), end);
                }
            }
        }
        _ if alnum(prev) => {}
        Anchor::Aws => {
            if let Some(end) = token(s, p, &re.aws, alnum) {
                sink.push(Builtin::AwsAccessKey, p, end);
            }
        }
        Anchor::GithubClassic => {
            if prev != b'_'
                && let Some(end) = token(s, p, &re.gh_classic, word)
            {
                sink.push(Builtin::GithubToken, p, end);
            }
        }
        Anchor::GithubPat => {
            if prev != b'_'
                && let Some(end) = token(s, p, &re.gh_pat, word)
            {
                sink.push(Builtin::GithubToken, p, end);
            }
        }
        Anchor::Slack => {
            if let Some(end) = token(s, p, &re.slack, key_char) {
                sink.push(Builtin::SlackToken, p, end);
            }
        }
        Anchor::SlackWebhook => {
            if let Some(end) = token(s, p, &re.slack_webhook, alnum) {
                let start = if p >= 8 && s.get(p - 8..p) == Some("https://") {
                    p - 8
                } else {
                    p
                };
                sink.push(Builtin::SlackToken, start, end);
            }
        }
        Anchor::SkDash => {
            if matches!(prev, b'_' | b'-') {
                return;
            }
            if s.get(p..p + 7) == Some("sk-ant-") {
                if let Some(end) = token(s, p, &re.anthropic, key_char) {
                    sink.push(Builtin::AnthropicKey, p, end);
                }
            } else if let Some(end) = token(s, p, &re.openai, key_char) {
                sink.push(Builtin::OpenaiKey, p, end);
            }
        }
        Anchor::Stripe => {
            if prev != b'_'
                && let Some(end) = token(s, p, &re.stripe, alnum)
            {
                sink.push(Builtin::StripeKey, p, end);
            }
        }
        Anchor::Google => {
            if !matches!(prev, b'_' | b'-')
                && let Some(end) = token(s, p, &re.google, key_char)
            {
                sink.push(Builtin::GoogleApiKey, p, end);
            }
        }
        Anchor::Jwt => {
            if !matches!(prev, b'_' | b'-' | b'.')
                && let Some(end) = token(s, p, &re.jwt, |c| key_char(c) || c == b'=')
            {
                sink.push(Builtin::Jwt, p, end);
            }
        }
        // Handled by `Anchors::scan`, which skips anchors inside a block.
        Anchor::Pem => {}
    }
}

/// A PEM private key block from `-----BEGIN ... PRIVATE KEY-----` to the end of the first
/// `-----END ... PRIVATE KEY-----` line after it, whatever lies between: the body is not parsed,
/// since quoting (`> ` prefixes), escapes or one stray character in it must not end the block
/// early and let the rest through. With no END line the block runs to the end of the string.
/// Returns where the block ends, so anchors inside it are skipped.
fn pem(s: &str, p: usize, re: &TokenRegexes, sink: &mut Sink<'_>) -> usize {
    let Some(head) = s.get(p..).and_then(|r| re.pem_begin.find(r)) else {
        return p;
    };
    let mut j = p + head.end();
    let end = loop {
        let Some(off) = s.get(j..).and_then(|r| r.find("-----END ")) else {
            break s.len();
        };
        let at_end = j + off;
        if let Some(m) = s.get(at_end..).and_then(|r| re.pem_end.find(r)) {
            break at_end + m.end();
        }
        j = at_end + 5;
    };
    sink.push(Builtin::PrivateKey, p, end);
    end
}
