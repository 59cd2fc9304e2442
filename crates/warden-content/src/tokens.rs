//! Literal-anchored detectors: API keys and tokens, JWTs, PEM private keys, AWS secret keys in
//! key/value context, and the anchors of the context-read secrets in `secrets` (connection
//! strings, service-account JSON, database URLs, secret-like names). One Aho-Corasick automaton
//! finds the anchors of the enabled detectors; only at an anchor does the detector's
//! `^`-anchored regex run, on the rest of the string.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::Regex;

use crate::builtin::{Builtin, Sink};
use crate::bytes::{alnum, at, before};
use crate::secrets::{self, SecretRegexes};

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
    /// `secret` in its usual casings: an AWS secret key name, or a `generic_secret` name.
    Secret,
    Npm,
    Pypi,
    Gitlab,
    Azure,
    Gcp,
    /// The other secret words of `generic_secret` names (`password`, `token`, `api_key`...).
    Generic,
    Database,
}

/// Where the word an anchor literal stands for starts, relative to the literal's match.
///
/// The automaton's SIMD prefilter (Teddy) takes at most 64 literals (beyond, the scan runs
/// without it and took several times as long) and fingerprints the first three bytes of each
/// in a handful of buckets: each literal added, and each literal starting with a common
/// trigram (`pas`, `tok`, `sec`, `pri`, `red`, `pos`, `acc`), makes it stop at more ordinary
/// words. So words that start commonly, or several words sharing a tail, are anchored on a
/// rarer inner part (`ssw` for `password`), and the word itself is checked at the hit; the
/// anchor positions handed on are the same. (A 2-byte literal such as `gl` for all GitLab
/// prefixes would shorten every fingerprint to two bytes: slower, not faster.)
#[derive(Clone, Copy, Debug)]
enum Start {
    /// At the literal.
    Here,
    /// This many bytes before the literal, when one of the words starts there.
    Back(usize, &'static [&'static str]),
    /// At the database URL scheme ([`secrets::DATABASE_SCHEMES`]) ending at the literal
    /// (`://`): one literal instead of one per scheme, several of them common words.
    Scheme,
}

impl Start {
    /// The start of the anchored word for a literal matched at `q` in `b`, if the word is there.
    fn resolve(self, b: &[u8], q: usize) -> Option<usize> {
        match self {
            Start::Here => Some(q),
            Start::Back(n, words) => {
                let p = q.checked_sub(n)?;
                let rest = b.get(p..)?;
                words
                    .iter()
                    .any(|w| rest.starts_with(w.as_bytes()))
                    .then_some(p)
            }
            Start::Scheme => {
                let head = b.get(..q)?;
                secrets::DATABASE_SCHEMES
                    .iter()
                    .find(|sc| head.ends_with(sc.as_bytes()))
                    .map(|sc| q - sc.len())
            }
        }
    }
}

/// Anchor literals, matched case-sensitively (token formats are case-sensitive; the AWS prefixes
/// and secret key names are listed in their common casings) so the automaton's SIMD prefilter
/// stays sharp (see [`Start`]).
const ANCHORS: &[(&str, Anchor, &[Builtin])] = &[
    ("AKIA", Anchor::Aws, &[Builtin::AwsAccessKey]),
    ("ASIA", Anchor::Aws, &[Builtin::AwsAccessKey]),
    // A key in lower or title case is the same key (the format is upper case only).
    ("akia", Anchor::Aws, &[Builtin::AwsAccessKey]),
    ("asia", Anchor::Aws, &[Builtin::AwsAccessKey]),
    ("Akia", Anchor::Aws, &[Builtin::AwsAccessKey]),
    ("Asia", Anchor::Aws, &[Builtin::AwsAccessKey]),
    ("ghp_", Anchor::GithubClassic, &[Builtin::GithubToken]),
    ("gho_", Anchor::GithubClassic, &[Builtin::GithubToken]),
    ("ghu_", Anchor::GithubClassic, &[Builtin::GithubToken]),
    ("ghs_", Anchor::GithubClassic, &[Builtin::GithubToken]),
    ("ghr_", Anchor::GithubClassic, &[Builtin::GithubToken]),
    ("github_pat_", Anchor::GithubPat, &[Builtin::GithubToken]),
    ("xox", Anchor::Slack, &[Builtin::SlackToken]),
    ("xapp-", Anchor::Slack, &[Builtin::SlackToken]),
    (
        "hooks.slack.com/",
        Anchor::SlackWebhook,
        &[Builtin::SlackToken, Builtin::SlackWebhook],
    ),
    ("npm_", Anchor::Npm, &[Builtin::NpmToken]),
    // Every PyPI token is a macaroon whose serialisation starts with version 2 and its location
    // (`pypi.org`, `test.pypi.org`): base64 `AgE`.
    ("pypi-AgE", Anchor::Pypi, &[Builtin::PypiToken]),
    // GitLab's documented token prefixes (personal, project and group access, OAuth application
    // secret, deploy, runner authentication, CI/CD job, pipeline trigger, feed, incoming mail,
    // agent for Kubernetes, SCIM, feature flags client) and the legacy runner registration one.
    ("glpat-", Anchor::Gitlab, &[Builtin::GitlabToken]),
    ("gloas-", Anchor::Gitlab, &[Builtin::GitlabToken]),
    ("gldt-", Anchor::Gitlab, &[Builtin::GitlabToken]),
    ("glrt-", Anchor::Gitlab, &[Builtin::GitlabToken]),
    ("glcbt-", Anchor::Gitlab, &[Builtin::GitlabToken]),
    ("glptt-", Anchor::Gitlab, &[Builtin::GitlabToken]),
    ("glft-", Anchor::Gitlab, &[Builtin::GitlabToken]),
    ("glimt-", Anchor::Gitlab, &[Builtin::GitlabToken]),
    ("glagent-", Anchor::Gitlab, &[Builtin::GitlabToken]),
    ("glsoat-", Anchor::Gitlab, &[Builtin::GitlabToken]),
    ("glffct-", Anchor::Gitlab, &[Builtin::GitlabToken]),
    ("GR1348941", Anchor::Gitlab, &[Builtin::GitlabToken]),
    ("AZURE_STORAGE_", Anchor::Azure, &[Builtin::AzureStorageKey]),
    (
        "SharedAccessSignature",
        Anchor::Azure,
        &[Builtin::AzureStorageKey],
    ),
    (
        "sk-",
        Anchor::SkDash,
        &[Builtin::OpenaiKey, Builtin::AnthropicKey],
    ),
    ("AIza", Anchor::Google, &[Builtin::GoogleApiKey]),
    ("eyJ", Anchor::Jwt, &[Builtin::Jwt]),
    ("-----BEGIN ", Anchor::Pem, &[Builtin::PrivateKey]),
];

/// Anchor literals standing for a word around them (see [`Start`]).
const INNER_ANCHORS: &[(&str, Start, Anchor, &[Builtin])] = &[
    // Secret and restricted Stripe keys: one literal per mode, not per key kind.
    (
        "k_live_",
        Start::Back(1, &["sk_live_", "rk_live_"]),
        Anchor::Stripe,
        &[Builtin::StripeKey],
    ),
    (
        "k_test_",
        Start::Back(1, &["sk_test_", "rk_test_"]),
        Anchor::Stripe,
        &[Builtin::StripeKey],
    ),
    // Connection-string field names are case-insensitive; these are the casings in use.
    (
        "ntKey",
        Start::Back(5, &["AccountKey", "accountKey"]),
        Anchor::Azure,
        &[Builtin::AzureStorageKey],
    ),
    (
        "ntkey",
        Start::Back(5, &["accountkey"]),
        Anchor::Azure,
        &[Builtin::AzureStorageKey],
    ),
    (
        "NTKEY",
        Start::Back(5, &["ACCOUNTKEY"]),
        Anchor::Azure,
        &[Builtin::AzureStorageKey],
    ),
    (
        "ivate_key",
        Start::Back(2, &["private_key"]),
        Anchor::Gcp,
        &[Builtin::GcpServiceAccount],
    ),
    (
        "://",
        Start::Scheme,
        Anchor::Database,
        &[Builtin::DatabaseUrl],
    ),
];

/// The secret words of `generic_secret` names other than `secret` (which [`SECRET_NAMES`]
/// holds), in their usual casings; the name around the word is checked at the anchor.
const GENERIC_NAMES: &[(&str, Start)] = &[
    (
        "ssw",
        Start::Back(2, &["password", "Password", "passwd", "Passwd"]),
    ),
    ("SSW", Start::Back(2, &["PASSWORD", "PASSWD"])),
    ("ssph", Start::Back(2, &["passphrase", "Passphrase"])),
    ("SSPH", Start::Back(2, &["PASSPHRASE"])),
    ("oken", Start::Back(1, &["token", "Token"])),
    ("OKEN", Start::Back(1, &["TOKEN"])),
    // Rare enough as they are.
    ("api_key", Start::Here),
    ("api-key", Start::Here),
    ("apikey", Start::Here),
    ("apiKey", Start::Here),
    ("ApiKey", Start::Here),
    ("Api-Key", Start::Here),
    ("API_KEY", Start::Here),
    ("API-KEY", Start::Here),
    ("APIKEY", Start::Here),
];

/// The word every AWS secret key name holds, in its usual casings (`aws_secret_access_key`,
/// `AWS_SECRET_ACCESS_KEY`, `SecretAccessKey`, `Aws-Secret-Access-Key`): the name around it is
/// checked at the anchor ([`aws_secret`]). Anchored without the `s` (see [`Start`]).
const SECRET_NAMES: &[(&str, Start)] = &[
    ("ecret", Start::Back(1, &["secret", "Secret"])),
    ("ECRET", Start::Back(1, &["SECRET"])),
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
    npm: Regex,
    pypi: Regex,
    gitlab: Regex,
    /// Patterns of the context-read secrets.
    pub(crate) secrets: SecretRegexes,
}

impl TokenRegexes {
    /// Compile the token patterns.
    pub(crate) fn new() -> Result<Self, regex::Error> {
        Ok(TokenRegexes {
            aws: Regex::new(r"^(?i-u:AKIA|ASIA)[A-Za-z0-9]{16}")?,
            gh_classic: Regex::new(r"^gh[pousr]_[A-Za-z0-9]{36}")?,
            gh_pat: Regex::new(r"^github_pat_[A-Za-z0-9_]{82}")?,
            slack: Regex::new(
                r"^(?:xox[abposre]-[0-9]{6,}-[A-Za-z0-9-]{8,}|xapp-[0-9]-[A-Z0-9]{6,}-[0-9]{6,}-[A-Za-z0-9]{16,})",
            )?,
            // Incoming webhooks (team, bot, secret), workflow webhooks (team, app or workflow,
            // numeric id, secret) and trigger URLs (team, numeric id, secret).
            slack_webhook: Regex::new(
                r"^hooks\.slack\.com/(?:services/T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9]{16,}|workflows/T[A-Z0-9]{6,}/A[A-Z0-9]{6,}/[0-9]{6,}/[A-Za-z0-9]{16,}|triggers/T[A-Z0-9]{6,}/[0-9]{6,}/[A-Za-z0-9]{16,})",
            )?,
            npm: Regex::new(r"^npm_[A-Za-z0-9]{36}")?,
            // Real tokens are 150+ characters; the shortest macaroon with a caveat is well over 80.
            pypi: Regex::new(r"^pypi-AgE[A-Za-z0-9_\-]{80,}")?,
            // A routable token (GitLab 17.x+) ends in `.<version>.<checksum>`.
            gitlab: Regex::new(
                r"^(?:gl(?:pat|oas|dt|rt|cbt|ptt|ft|imt|agent|soat|ffct)-|GR1348941)(?P<body>[0-9A-Za-z_\-]{20,})(?:\.[0-9]{1,3}\.[0-9A-Za-z]{6,12})?",
            )?,
            secrets: SecretRegexes::new()?,
            openai: Regex::new(r"^sk-[A-Za-z0-9_\-]{20,}")?,
            anthropic: Regex::new(r"^sk-ant-[A-Za-z0-9_\-]{20,}")?,
            stripe: Regex::new(r"^[rs]k_(?:live|test)_[0-9A-Za-z]{10,247}")?,
            google: Regex::new(r"^AIza[0-9A-Za-z_\-]{35}")?,
            // Base64 padding some encoders add is part of the token.
            jwt: Regex::new(r"^eyJ[A-Za-z0-9_\-]{2,}\.eyJ[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]*=*")?,
            pem_begin: Regex::new(r"^-----BEGIN (?:[A-Z0-9]+ ){0,4}PRIVATE KEY(?: BLOCK)?-----")?,
            pem_end: Regex::new(r"^-----END (?:[A-Z0-9]+ ){0,4}PRIVATE KEY(?: BLOCK)?-----")?,
            // From `secret`: the rest of the name (`access key` in any case and spelling, or
            // anything after an `aws` prefix), `=`, `:` or `=>`, and the value, on the same line
            // or the next one.
            aws_secret: Regex::new(
                r#"^(?i-u:secret)(?P<access>[_\-. ]?(?i-u:access)[_\-. ]?(?i-u:key))?[A-Za-z0-9_\-.]*["']?[ \t]*(?:=>|=|:)[ \t]*(?:\r?\n[ \t]*)?["']?(?P<value>[A-Za-z0-9/+]{40})"#,
            )?,
            aws_secret_value: Regex::new(r#"^\s*["']?(?P<value>[A-Za-z0-9/+]{40})["']?\s*$"#)?,
            aws_secret_key_name: Regex::new(
                r"(?i)^(?:aws[_\-. ]?)?secret[_\-. ]?(?:access[_\-. ]?)?key$",
            )?,
        })
    }

    /// The span of an AWS secret key in `value` when the JSON object key holding it names one
    /// and the value (quotes and surrounding whitespace aside) has the shape.
    pub(crate) fn aws_secret_pair(&self, key: &str, value: &str) -> Option<(usize, usize)> {
        if !self.aws_secret_key_name.is_match(key) {
            return None;
        }
        let m = self.aws_secret_value.captures(value)?.name("value")?;
        Some((m.start(), m.end()))
    }
}

/// Most literals the automaton may hold: beyond 64 its SIMD prefilter (Teddy) is not used at
/// all, and a scan of prose takes several times as long (checked by a test).
#[cfg(test)]
const PREFILTER_LIMIT: usize = 64;

/// The anchor automaton for one policy: only the anchors of enabled detectors.
pub(crate) struct Anchors {
    ac: AhoCorasick,
    /// Per literal: what it hands over to, and where its word starts.
    kinds: Vec<(Anchor, Start)>,
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
                kinds.push((*kind, Start::Here));
            }
        }
        for (lit, start, kind, dets) in INNER_ANCHORS {
            if dets.iter().any(|&d| enabled(d)) {
                pats.push(*lit);
                kinds.push((*kind, *start));
            }
        }
        if enabled(Builtin::AwsSecretKey) || enabled(Builtin::GenericSecret) {
            for (lit, start) in SECRET_NAMES {
                pats.push(*lit);
                kinds.push((Anchor::Secret, *start));
            }
        }
        if enabled(Builtin::GenericSecret) {
            for (lit, start) in GENERIC_NAMES {
                pats.push(*lit);
                kinds.push((Anchor::Generic, *start));
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
        // Whether `s` declares a service-account key: looked up at the first `private_key`.
        let mut sa = None;
        // End of the last service-account private key: a `private_key` inside it is not a member.
        let mut gcp_end = 0;
        // For the kinds whose pattern ends in an unbounded run, the end of the run the last
        // anchor of the kind examined: an anchor inside it could only find a suffix of the same
        // token (which overlap resolution drops) and would scan the run again, so
        // `sk-sk-sk-...` would take quadratic time.
        let mut run_end = [0usize; GREEDY];
        for m in self.ac.find_iter(s) {
            let Some(&(kind, start)) = self.kinds.get(m.pattern().as_usize()) else {
                continue;
            };
            // The word's start: where the detectors read from, as if it were the literal.
            let Some(p) = start.resolve(s.as_bytes(), m.start()) else {
                continue;
            };
            if kind == Anchor::Pem {
                if p >= pem_end {
                    pem_end = pem(s, p, re, sink);
                }
                continue;
            }
            if kind == Anchor::Gcp {
                if p >= gcp_end {
                    gcp_end = secrets::gcp(s, p, &re.secrets, &mut sa, sink);
                }
                continue;
            }
            let greedy = greedy(kind);
            if let Some((i, _)) = greedy
                && run_end.get(i).is_some_and(|&e| p < e)
            {
                continue;
            }
            at_anchor(s, p, kind, re, sink);
            // `sk-` after a letter or digit is not examined (`task-`): a key may follow in its run.
            let examined = !(kind == Anchor::SkDash && alnum(before(s.as_bytes(), p)));
            if let Some((i, class)) = greedy
                && examined
                && let Some(e) = run_end.get_mut(i)
            {
                let b = s.as_bytes();
                let mut j = p;
                while class(at(b, j)) {
                    j += 1;
                }
                *e = j;
            }
        }
    }
}

/// Number of kinds [`greedy`] names.
const GREEDY: usize = 6;

/// A byte class.
type Class = fn(u8) -> bool;

/// Kinds whose pattern ends in an unbounded run of characters: a slot and the run's byte class.
fn greedy(kind: Anchor) -> Option<(usize, Class)> {
    match kind {
        Anchor::SkDash => Some((0, key_char)),
        Anchor::Slack => Some((1, key_char)),
        Anchor::Jwt => Some((2, |c| key_char(c) || c == b'=')),
        Anchor::Gitlab => Some((3, key_char)),
        Anchor::Pypi => Some((4, key_char)),
        // A connection-string field: another field name inside its value is not a field.
        Anchor::Azure => Some((5, secrets::field_char)),
        _ => None,
    }
}

/// Characters of API key bodies.
fn key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

/// End of the anchored match of `re` at `p`. What follows the token is not looked at: a
/// character glued to it (`AKIA...123`, a JWT followed by `=`) must not hide it.
fn token(s: &str, p: usize, re: &Regex) -> Option<usize> {
    re.find(s.get(p..)?).map(|m| p + m.end())
}

/// Whether `b` holds an ASCII digit.
fn has_digit(b: &[u8]) -> bool {
    b.iter().any(u8::is_ascii_digit)
}

/// `AKIA`/`ASIA` + 16 at `p` (matched case-insensitively). Upper case between non-alphanumeric
/// characters is the documented format, taken as it is. Glued to other characters, or in another
/// case (reversible, since the format is upper case only), the body must look issued by AWS:
/// base32 (`A-Z`, `2-7`) with a digit, which words and identifiers rarely are. In another case it
/// must also stand alone, so `malaysiaairlines777...` is not a key.
fn aws(s: &str, p: usize, re: &TokenRegexes, sink: &mut Sink<'_>) {
    let Some(end) = token(s, p, &re.aws) else {
        return;
    };
    let b = s.as_bytes();
    let key = b.get(p..end).unwrap_or(&[]);
    let body = key.get(4..).unwrap_or(&[]);
    let upper = key
        .iter()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    let alone = !alnum(before(b, p)) && !alnum(at(b, end));
    let issued = has_digit(body)
        && body
            .iter()
            .all(|c| c.is_ascii_alphabetic() || (b'2'..=b'7').contains(c));
    if (upper && (alone || issued)) || (alone && issued) {
        sink.push(Builtin::AwsAccessKey, p, end);
    }
}

/// An AWS secret access key after its name, at the `secret` anchor `p`. The name is
/// `aws` + `secret` + anything (`aws_secret_key`, `AWS Secret`), or `secret access key` in any
/// spelling (`secret_access_key`, `SecretAccessKey`, `secret-access-key`); a bare `secret` or
/// `secret_key` is too common a name for a 40-character value to mean AWS. Only the value is the
/// finding, so redaction keeps the name.
fn aws_secret(s: &str, p: usize, re: &TokenRegexes, sink: &mut Sink<'_>) {
    let b = s.as_bytes();
    let Some(caps) = s.get(p..).and_then(|r| re.aws_secret.captures(r)) else {
        return;
    };
    let Some(v) = caps.name("value") else {
        return;
    };
    if caps.name("access").is_none() && !aws_before(b, p) {
        return;
    }
    let end = p + v.end();
    let x = at(b, end);
    if !(alnum(x) || matches!(x, b'/' | b'+' | b'=')) {
        sink.push(Builtin::AwsSecretKey, p + v.start(), end);
    }
}

/// Whether `aws` (any case, not the end of a longer word) and at most one separator end `b[..p]`.
fn aws_before(b: &[u8], p: usize) -> bool {
    let mut e = p;
    if matches!(before(b, e), b'_' | b'-' | b'.' | b' ') {
        e -= 1;
    }
    e >= 3
        && b.get(e - 3..e)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"aws"))
        && !before(b, e - 3).is_ascii_alphabetic()
}

/// Whether a token body looks issued rather than typed: upper and lower case letters and a
/// digit (36 random base62 characters lack one of them about once in 500), so
/// `npm_package_dependencies_typescript`-style identifiers are not tokens.
fn random_body(b: &[u8]) -> bool {
    b.iter().any(u8::is_ascii_digit)
        && b.iter().any(u8::is_ascii_uppercase)
        && b.iter().any(u8::is_ascii_lowercase)
}

/// Number of distinct bytes in `b`.
fn distinct(b: &[u8]) -> usize {
    let mut seen = [false; 256];
    for &x in b {
        if let Some(v) = seen.get_mut(usize::from(x)) {
            *v = true;
        }
    }
    seen.iter().filter(|&&v| v).count()
}

/// A GitLab token at `p`: a documented prefix and 20+ characters of `[0-9A-Za-z_-]`. The body
/// must hold a digit or an upper-case letter and 8 distinct characters, so documentation
/// placeholders (`glpat-xxxxxxxxxxxxxxxxxxxx`, `glpat-XXXXXXXXXXXXXXXXXXXX`) and kebab-case
/// words (`glpat-token-for-the-project`) are not tokens.
fn gitlab(s: &str, p: usize, re: &TokenRegexes, sink: &mut Sink<'_>) {
    let Some(c) = s.get(p..).and_then(|r| re.gitlab.captures(r)) else {
        return;
    };
    let (Some(m), Some(body)) = (c.get(0), c.name("body")) else {
        return;
    };
    let body = body.as_str().as_bytes();
    if distinct(body) >= 8
        && body
            .iter()
            .any(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
    {
        sink.push(Builtin::GitlabToken, p, p + m.end());
    }
}

/// A JWT at `p`. Glued to a letter or digit before it, its header and payload must be of a
/// plausible length (a real header is about 20 characters), so dotted words that happen to hold
/// `eyJ` twice (`heyJude.eyJohn.said`) are not tokens.
fn jwt(s: &str, p: usize, re: &TokenRegexes, sink: &mut Sink<'_>) {
    let Some(end) = token(s, p, &re.jwt) else {
        return;
    };
    if alnum(before(s.as_bytes(), p)) {
        let mut parts = s.get(p..end).unwrap_or("").split('.');
        let long = |x: Option<&str>| x.is_some_and(|x| x.len() >= 10);
        if !(long(parts.next()) && long(parts.next())) {
            return;
        }
    }
    sink.push(Builtin::Jwt, p, end);
}

fn at_anchor(s: &str, p: usize, kind: Anchor, re: &TokenRegexes, sink: &mut Sink<'_>) {
    let b = s.as_bytes();
    let prev = before(b, p);
    // Prefixes that are distinctive on their own are found whatever precedes them; `sk-` and
    // `sk_live_` also end ordinary words (`task-`, `risk_`), so a letter or digit before them
    // means a word, not a key.
    match kind {
        Anchor::Secret => {
            if sink.on(Builtin::AwsSecretKey) {
                aws_secret(s, p, re, sink);
            }
            if sink.on(Builtin::GenericSecret) {
                secrets::generic(s, p, &re.secrets, sink);
            }
        }
        Anchor::Generic => secrets::generic(s, p, &re.secrets, sink),
        Anchor::Npm => {
            if let Some(end) = token(s, p, &re.npm)
                && random_body(b.get(p + 4..end).unwrap_or(&[]))
            {
                sink.push(Builtin::NpmToken, p, end);
            }
        }
        Anchor::Pypi => {
            if let Some(end) = token(s, p, &re.pypi) {
                sink.push(Builtin::PypiToken, p, end);
            }
        }
        Anchor::Gitlab => gitlab(s, p, re, sink),
        Anchor::Azure => secrets::azure(s, p, &re.secrets, sink),
        Anchor::Database => secrets::database_url(s, p, &re.secrets, sink),
        // Handled by `Anchors::scan`, which caches the service-account lookup.
        Anchor::Gcp => {}
        Anchor::Aws => aws(s, p, re, sink),
        Anchor::GithubClassic => {
            if let Some(end) = token(s, p, &re.gh_classic) {
                sink.push(Builtin::GithubToken, p, end);
            }
        }
        Anchor::GithubPat => {
            if let Some(end) = token(s, p, &re.gh_pat) {
                sink.push(Builtin::GithubToken, p, end);
            }
        }
        Anchor::Slack => {
            if let Some(end) = token(s, p, &re.slack) {
                sink.push(Builtin::SlackToken, p, end);
            }
        }
        Anchor::SlackWebhook => {
            // The secret is the last path segment; the documentation's
            // `.../T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX` has one character in it.
            if let Some(end) = token(s, p, &re.slack_webhook)
                && let Some(secret) = s.get(p..end).and_then(|t| t.rsplit('/').next())
                && distinct(secret.as_bytes()) >= 8
            {
                let start = if p >= 8 && s.get(p - 8..p) == Some("https://") {
                    p - 8
                } else {
                    p
                };
                // `slack_token` reported incoming webhooks before `slack_webhook` existed:
                // policies listing only it keep finding them, as `slack_token`.
                if sink.on(Builtin::SlackWebhook) {
                    sink.push(Builtin::SlackWebhook, start, end);
                } else if s.get(p + 16..).is_some_and(|r| r.starts_with("services/")) {
                    sink.push(Builtin::SlackToken, start, end);
                }
            }
        }
        Anchor::SkDash => {
            if alnum(prev) {
                return;
            }
            let (det, re) = if s.get(p..p + 7) == Some("sk-ant-") {
                (Builtin::AnthropicKey, &re.anthropic)
            } else {
                (Builtin::OpenaiKey, &re.openai)
            };
            let Some(end) = token(s, p, re) else {
                return;
            };
            // After `_` or `-`, `sk-` may be one segment of an identifier
            // (`eu-sk-reservation-system`); keys are random and hold a digit.
            if matches!(prev, b'_' | b'-') && !has_digit(b.get(p + 3..end).unwrap_or(&[])) {
                return;
            }
            sink.push(det, p, end);
        }
        Anchor::Stripe => {
            if !alnum(prev)
                && let Some(end) = token(s, p, &re.stripe)
            {
                sink.push(Builtin::StripeKey, p, end);
            }
        }
        Anchor::Google => {
            if let Some(end) = token(s, p, &re.google) {
                sink.push(Builtin::GoogleApiKey, p, end);
            }
        }
        Anchor::Jwt => jwt(s, p, re, sink),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_stay_within_the_prefilter_limit() {
        let Ok(Some(a)) = Anchors::new(|_| true) else {
            panic!("the anchors of all built-ins build");
        };
        assert!(
            a.ac.patterns_len() <= PREFILTER_LIMIT,
            "{}",
            a.ac.patterns_len()
        );
    }

    #[test]
    fn inner_literals_resolve_to_the_word_start() {
        let at = |s: &str, lit: &str, start: Start| start.resolve(s.as_bytes(), s.find(lit)?);
        let pw = Start::Back(2, &["password", "passwd"]);
        assert_eq!(at("a password=", "ssw", pw), Some(2));
        assert_eq!(at("passwd", "ssw", pw), Some(0));
        // Another word around the literal, or none before it: no anchor.
        assert_eq!(at("crossword", "ssw", pw), None);
        assert_eq!(at("sw", "sw", Start::Back(2, &["sw"])), None);
        assert_eq!(at("u postgresql://a", "://", Start::Scheme), Some(2));
        assert_eq!(at("mongodb+srv://a", "://", Start::Scheme), Some(0));
        assert_eq!(at("rediss://", "://", Start::Scheme), Some(0));
        assert_eq!(at("https://x", "://", Start::Scheme), None);
        assert_eq!(at("://", "://", Start::Scheme), None);
    }
}
