//! The compiled policy, the per-request scan, overlap resolution and redaction.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::LazyLock;

use regex::{Regex, RegexBuilder};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::builtin::{self, Builtin, COUNT, Cand, Sink};
use crate::bytes::CharCounter;
use crate::context;
use crate::digits::{self, PhoneRegexes};
use crate::injection::{FAMILIES, Injection, Normalized};
use crate::json::{self, Edit, Leaf, Seg, pointer};
use crate::net;
use crate::secrets;
use crate::spec::{Action, CUSTOM_PATTERN_SIZE_LIMIT, ContentError, ContentSpec, InjectionAction};
use crate::tokens::{Anchors, TokenRegexes};
use crate::view;

pub use crate::json::Part;

/// Patterns shared by every policy: compiled once per process.
struct Shared {
    tokens: TokenRegexes,
    phone: PhoneRegexes,
    injection: Injection,
}

static SHARED: LazyLock<Result<Shared, String>> = LazyLock::new(|| {
    Ok(Shared {
        tokens: TokenRegexes::new().map_err(|e| e.to_string())?,
        phone: PhoneRegexes::new().map_err(|e| e.to_string())?,
        injection: Injection::new().map_err(|e| e.to_string())?,
    })
});

const CLASS_DIGIT: u8 = 1;
const CLASS_AT: u8 = 2;
const CLASS_COLON: u8 = 3;

/// A compiled `content:` section: immutable, `Send + Sync`, built once per policy load.
pub struct ContentPolicy {
    shared: &'static Shared,
    /// Rank (policy order) of each enabled built-in.
    ranks: [Option<u16>; COUNT],
    /// Detector ids by rank.
    names: Vec<String>,
    custom: Vec<(u16, Regex)>,
    anchors: Option<Anchors>,
    /// `gcp_service_account` is on (object values look at their siblings).
    gcp_on: bool,
    /// A detector that reads a value by its object key (`generic_secret`, `azure_storage_key`,
    /// `gcp_service_account`) is on.
    pair_keys: bool,
    /// Byte classes that start the hand-written scanners (digits, `@`, `:`).
    table: [u8; 256],
    scan_bytes: bool,
    input: Action,
    output: Action,
    injection: Option<InjectionAction>,
    /// Minimum injection score for a finding (validated to lie in [0, 1]).
    injection_threshold: f64,
}

impl fmt::Debug for ContentPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContentPolicy")
            .field("detectors", &self.names)
            .field("input", &self.input)
            .field("output", &self.output)
            .field("injection", &self.injection)
            .field("injection_threshold", &self.injection_threshold)
            .finish_non_exhaustive()
    }
}

fn valid_custom_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

impl ContentPolicy {
    /// Validate and compile a `content:` section.
    ///
    /// # Errors
    /// A [`ContentError`] naming the first offending item (by its index in the spec's lists).
    pub fn compile(spec: &ContentSpec) -> Result<Self, ContentError> {
        let shared = SHARED.as_ref().map_err(|message| ContentError::Internal {
            message: message.clone(),
        })?;
        let injection_threshold = spec
            .injection_threshold
            .unwrap_or(crate::DEFAULT_INJECTION_THRESHOLD);
        // `contains` is false for NaN too.
        if !(0.0..=1.0).contains(&injection_threshold) {
            return Err(ContentError::InvalidInjectionThreshold {
                value: injection_threshold.to_string(),
            });
        }
        let mut ranks = [None; COUNT];
        let mut names = Vec::new();
        for (index, id) in spec.detectors.iter().enumerate() {
            let b = Builtin::from_id(id).ok_or_else(|| ContentError::UnknownDetector {
                index,
                id: id.clone(),
            })?;
            let slot = ranks
                .get_mut(b.index())
                .ok_or_else(|| ContentError::UnknownDetector {
                    index,
                    id: id.clone(),
                })?;
            if slot.is_some() {
                return Err(ContentError::RepeatedDetector {
                    index,
                    id: id.clone(),
                });
            }
            *slot = Some(rank_of(names.len()));
            names.push(id.clone());
        }
        let mut custom = Vec::new();
        for (index, c) in spec.custom.iter().enumerate() {
            if !valid_custom_id(&c.id) {
                return Err(ContentError::InvalidId {
                    index,
                    id: c.id.clone(),
                });
            }
            if Builtin::from_id(&c.id).is_some()
                || c.id == crate::INJECTION_DETECTOR
                || spec.custom.iter().take(index).any(|o| o.id == c.id)
            {
                return Err(ContentError::DuplicateDetector {
                    index,
                    id: c.id.clone(),
                });
            }
            let re = RegexBuilder::new(&c.pattern)
                .size_limit(CUSTOM_PATTERN_SIZE_LIMIT)
                .dfa_size_limit(2 * CUSTOM_PATTERN_SIZE_LIMIT)
                .build()
                .map_err(|e| ContentError::InvalidPattern {
                    index,
                    message: e.to_string(),
                })?;
            custom.push((rank_of(names.len()), re));
            names.push(c.id.clone());
        }
        let on = |b: Builtin| ranks.get(b.index()).copied().flatten().is_some();
        let anchors = Anchors::new(on).map_err(|e| ContentError::Internal {
            message: e.to_string(),
        })?;
        let mut table = [0u8; 256];
        let digit_on = [
            Builtin::CreditCard,
            Builtin::UsSsn,
            Builtin::Phone,
            Builtin::Ipv4,
            Builtin::Iban,
        ]
        .into_iter()
        .any(on);
        if digit_on {
            for d in b'0'..=b'9' {
                if let Some(t) = table.get_mut(usize::from(d)) {
                    *t = CLASS_DIGIT;
                }
            }
        }
        if on(Builtin::Email)
            && let Some(t) = table.get_mut(usize::from(b'@'))
        {
            *t = CLASS_AT;
        }
        if on(Builtin::Ipv6)
            && let Some(t) = table.get_mut(usize::from(b':'))
        {
            *t = CLASS_COLON;
        }
        let scan_bytes = table.iter().any(|&c| c != 0);
        Ok(ContentPolicy {
            shared,
            ranks,
            names,
            custom,
            anchors,
            gcp_on: on(Builtin::GcpServiceAccount),
            pair_keys: [
                Builtin::GcpServiceAccount,
                Builtin::AzureStorageKey,
                Builtin::GenericSecret,
            ]
            .into_iter()
            .any(on),
            table,
            scan_bytes,
            input: spec.input.unwrap_or(Action::Allow),
            output: spec.output.unwrap_or(Action::Allow),
            injection: spec.injection,
            injection_threshold,
        })
    }

    /// Detector ids in priority order (built-ins as listed, then custom detectors).
    pub fn detector_ids(&self) -> &[String] {
        &self.names
    }

    /// Candidates of every enabled detector in `s` (byte spans into `s`, unresolved): in `s`
    /// itself, and in its normalised and decoded views (see [`view`]) mapped back, so that
    /// full-width digits, zero-width characters or `%20` between digits hide nothing. `key` is
    /// the object key holding `s`, if any (context for `aws_secret_key`, `generic_secret`,
    /// `azure_storage_key`, and for SSNs and phone numbers as bare digits); `number`: `s` is the
    /// text of a JSON number; `sa`: `s` is a member of a service-account key object.
    fn candidates(&self, s: &str, key: Option<&str>, number: bool, sa: bool, out: &mut Vec<Cand>) {
        out.clear();
        self.candidates_in(s, key, number, sa, out);
        if !view::may_have_views(s) {
            return;
        }
        let norm = view::normalised(s);
        let dec = view::decoded(s);
        if norm.is_none() && dec.is_none() {
            return;
        }
        let key_view = key.and_then(view::normalised);
        let key = key_view.as_ref().map(view::View::text).or(key);
        let mut found = Vec::new();
        for v in [norm, dec].iter().flatten() {
            found.clear();
            self.candidates_in(v.text(), key, number, sa, &mut found);
            for c in &found {
                let (start, end) = v.original(c.start, c.end);
                out.push(Cand {
                    rank: c.rank,
                    start,
                    end,
                });
            }
        }
    }

    /// Candidates of every enabled detector in `s` as it is, appended to `out`.
    fn candidates_in(
        &self,
        s: &str,
        key: Option<&str>,
        number: bool,
        sa: bool,
        out: &mut Vec<Cand>,
    ) {
        let sh = self.shared;
        let mut sink = Sink {
            ranks: &self.ranks,
            out,
        };
        if let Some(a) = &self.anchors {
            a.scan(s, &sh.tokens, &mut sink);
        }
        if self.scan_bytes {
            let b = s.as_bytes();
            let mut i = 0usize;
            while let Some(off) = b.get(i..).and_then(|r| {
                r.iter()
                    .position(|&c| self.table.get(usize::from(c)).is_some_and(|&k| k != 0))
            }) {
                let j = i + off;
                let class = b
                    .get(j)
                    .and_then(|&c| self.table.get(usize::from(c)))
                    .copied()
                    .unwrap_or(0);
                i = match class {
                    CLASS_DIGIT => {
                        let e = digits::cluster_end(b, j);
                        digits::cluster(s, j, e, &sh.phone, &mut sink);
                        e.max(j + 1)
                    }
                    CLASS_AT => net::email(s, j, &mut sink),
                    CLASS_COLON => net::ipv6(s, j, &mut sink),
                    _ => j + 1,
                };
            }
        }
        if let Some(k) = key
            && sink.on(Builtin::AwsSecretKey)
            && let Some((start, end)) = sh.tokens.aws_secret_pair(k, s)
        {
            sink.push(Builtin::AwsSecretKey, start, end);
        }
        if let Some(k) = key
            && !number
        {
            self.secret_pairs(k, s, sa, &mut sink);
        }
        // Only a value of digits can be one (checked first: most values are not).
        if let Some(k) = key
            && s.trim_start()
                .bytes()
                .next()
                .is_some_and(|c| c.is_ascii_digit() || c == b'+')
        {
            context::digits_by_key(k, s, number, &mut sink);
        }
        for (rank, re) in &self.custom {
            for m in re.find_iter(s) {
                if m.end() > m.start() {
                    out_push(&mut sink, *rank, m.start(), m.end());
                }
            }
        }
    }

    /// Secrets a string value is by its object key (and, for service-account keys, by the
    /// object holding it): the whole value is the finding.
    fn secret_pairs(&self, k: &str, s: &str, sa: bool, sink: &mut Sink<'_>) {
        // One cheap look at the key before the word split the rules need.
        if !self.pair_keys || !secrets::may_name_secret(k) {
            return;
        }
        let spans = [
            (
                Builtin::GcpServiceAccount,
                sa && sink.on(Builtin::GcpServiceAccount),
                secrets::gcp_pair as fn(&str, &str) -> Option<(usize, usize)>,
            ),
            (
                Builtin::AzureStorageKey,
                sink.on(Builtin::AzureStorageKey),
                secrets::azure_pair,
            ),
            (
                Builtin::GenericSecret,
                sink.on(Builtin::GenericSecret),
                secrets::generic_pair,
            ),
        ];
        for (b, on, rule) in spans {
            if on && let Some((start, end)) = rule(k, s) {
                sink.push(b, start, end);
            }
        }
    }

    /// Resolved detector findings in `s`: `(rank, char start, char end, byte start, byte end)`,
    /// sorted by start.
    fn detect(
        &self,
        s: &str,
        key: Option<&str>,
        number: bool,
        sa: bool,
        cands: &mut Vec<Cand>,
    ) -> Vec<Hit> {
        self.candidates(s, key, number, sa, cands);
        if cands.is_empty() {
            return Vec::new();
        }
        resolve(s, cands)
    }

    /// Whether an object key may hold a finding: a short key of letters, `_` and `-` holds
    /// none of the built-in formats (the shortest without a digit, `@`, `:`, `.` or a space is
    /// an 18-character Stripe key), so the common `to`, `subject`, `user_name` cost nothing.
    fn scans_key(&self, key: &str) -> bool {
        !self.custom.is_empty()
            || key.len() >= 18
            || !key
                .bytes()
                .all(|c| c.is_ascii_alphabetic() || matches!(c, b'_' | b'-'))
    }

    /// Whether a number may hold a finding (see [`json::large`]); custom detectors see all.
    fn scans_number(&self, n: &serde_json::Number) -> bool {
        !self.custom.is_empty() || json::large(n)
    }

    /// Scan one request.
    pub fn scan(&self, req: &ScanRequest<'_>) -> ScanOutcome {
        let mut out = ScanOutcome::default();
        let mut cands = Vec::new();
        for (parts, action) in [(&req.input, self.input), (&req.output, self.output)] {
            for (ptr, part) in parts {
                let redact_here = action == Action::Redact && req.redact_target == Some(*ptr);
                let mut edits: Vec<Edit> = Vec::new();
                // Names given so far to keys holding findings, per object (by address).
                let mut taken: HashMap<*const Map<String, Value>, Vec<String>> = HashMap::new();
                json::walk(part, |segs, member, leaf| {
                    let key = member.map(|(k, _)| k);
                    // Only members named like a service-account secret look at their siblings.
                    let sa = self.gcp_on
                        && member.is_some_and(|(k, o)| {
                            k.starts_with("private_key")
                                && o.get("type").and_then(Value::as_str) == Some("service_account")
                        });
                    let (text, key, number) = match leaf {
                        Leaf::Str(s) => (Cow::Borrowed(s), key, false),
                        Leaf::Num(n) if self.scans_number(n) => {
                            (Cow::Owned(json::number_text(n)), key, true)
                        }
                        Leaf::Key { name, .. } if self.scans_key(name) => {
                            (Cow::Borrowed(name), None, false)
                        }
                        Leaf::Num(_) | Leaf::Key { .. } => return None,
                    };
                    let hits = self.detect(&text, key, number, sa, &mut cands);
                    if hits.is_empty() {
                        return None;
                    }
                    // A key holding a finding is named by its redacted form in every path, so
                    // no path carries the finding's text.
                    let renamed = match leaf {
                        Leaf::Key { object, .. } => Some(json::unique_name(
                            self.redact_str(&text, &hits),
                            object,
                            taken.entry(std::ptr::from_ref(object)).or_default(),
                        )),
                        _ => None,
                    };
                    let mut path = pointer(ptr, segs);
                    if let Some(name) = &renamed {
                        path.push_str(&pointer("", &[Seg::Key(Cow::Borrowed(name))]));
                    }
                    let last = hits.len() - 1;
                    for (i, h) in hits.iter().enumerate() {
                        let id = self.name(h.rank);
                        out.findings.push(Finding {
                            detector: id.to_owned(),
                            path: if i == last {
                                std::mem::take(&mut path)
                            } else {
                                path.clone()
                            },
                            start: h.cstart,
                            end: h.cend,
                            key: renamed.is_some(),
                            family: None,
                            score: None,
                            families: Vec::new(),
                        });
                        match action {
                            Action::Deny if out.deny.is_none() => {
                                out.deny = Some(format!("content:{id}"))
                            }
                            Action::Warn => add_warning(&mut out.warnings, id),
                            _ => {}
                        }
                    }
                    if redact_here {
                        edits.push(match (&leaf, &renamed) {
                            (Leaf::Key { name, .. }, Some(to)) => {
                                Edit::Rename(pointer("", segs), (*name).to_owned(), to.clone())
                            }
                            _ => Edit::Value(
                                pointer("", segs),
                                Value::String(self.redact_str(&text, &hits)),
                            ),
                        });
                    }
                    renamed
                });
                if !edits.is_empty() {
                    out.redacted = Some(json::apply(part, edits));
                }
            }
        }
        if let Some(action) = self.injection {
            let mut norm = Normalized::default();
            for (ptr, part) in &req.injection {
                json::walk(part, |segs, _key, leaf| {
                    let Leaf::Str(s) = leaf else {
                        return None;
                    };
                    let scored = self
                        .shared
                        .injection
                        .scan(s, &mut norm, self.injection_threshold);
                    if scored.hits.is_empty() {
                        return None;
                    }
                    // Every finding of the string carries the string's score and all the
                    // families that fired in it, so one finding tells the whole story.
                    let mut families: Vec<String> = Vec::new();
                    for (i, f) in FAMILIES.iter().enumerate() {
                        if scored.hits.iter().any(|h| h.0 == i) {
                            families.push((*f).to_owned());
                        }
                    }
                    let path = pointer(ptr, segs);
                    for &(fam, a, z) in &scored.hits {
                        out.findings.push(Finding {
                            detector: crate::INJECTION_DETECTOR.to_owned(),
                            path: path.clone(),
                            start: a,
                            end: z,
                            key: false,
                            family: FAMILIES.get(fam).map(|f| (*f).to_owned()),
                            score: Some(scored.score),
                            families: families.clone(),
                        });
                    }
                    match action {
                        InjectionAction::Deny if out.deny.is_none() => {
                            out.deny = Some(format!("content:{}", crate::INJECTION_DETECTOR));
                        }
                        InjectionAction::Warn => {
                            add_warning(&mut out.warnings, crate::INJECTION_DETECTOR)
                        }
                        _ => {}
                    }
                    None
                });
            }
        }
        out
    }

    fn name(&self, rank: u16) -> &str {
        self.names.get(usize::from(rank)).map_or("", String::as_str)
    }

    fn redact_str(&self, s: &str, hits: &[Hit]) -> String {
        let mut r = String::with_capacity(s.len());
        let mut last = 0usize;
        for h in hits {
            r.push_str(s.get(last..h.bstart).unwrap_or(""));
            r.push_str("[REDACTED:");
            r.push_str(self.name(h.rank));
            r.push(']');
            last = h.bend;
        }
        r.push_str(s.get(last..).unwrap_or(""));
        r
    }
}

fn rank_of(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

fn out_push(sink: &mut Sink<'_>, rank: u16, start: usize, end: usize) {
    sink.out.push(Cand { rank, start, end });
}

fn add_warning(w: &mut Vec<String>, id: &str) {
    let tag = format!("content:{id}");
    if !w.contains(&tag) {
        w.push(tag);
    }
}

/// A resolved finding inside one string.
#[derive(Clone, Copy, Debug)]
struct Hit {
    rank: u16,
    cstart: usize,
    cend: usize,
    bstart: usize,
    bend: usize,
}

/// Overlap resolution (spec section 9): the longest candidate (in chars), then the earliest start,
/// then the detector listed first; candidates overlapping an accepted one are dropped.
fn resolve(s: &str, cands: &[Cand]) -> Vec<Hit> {
    let mut hits: Vec<Hit> = if s.is_ascii() {
        cands
            .iter()
            .map(|c| Hit {
                rank: c.rank,
                cstart: c.start,
                cend: c.end,
                bstart: c.start,
                bend: c.end,
            })
            .collect()
    } else {
        let mut offs: Vec<usize> = cands.iter().flat_map(|c| [c.start, c.end]).collect();
        offs.sort_unstable();
        offs.dedup();
        let mut cc = CharCounter::new(s);
        let chars: Vec<usize> = offs.iter().map(|&o| cc.chars_at(o)).collect();
        let to_char = |o: usize| {
            offs.binary_search(&o)
                .ok()
                .and_then(|i| chars.get(i).copied())
                .unwrap_or(0)
        };
        cands
            .iter()
            .map(|c| Hit {
                rank: c.rank,
                cstart: to_char(c.start),
                cend: to_char(c.end),
                bstart: c.start,
                bend: c.end,
            })
            .collect()
    };
    if hits.len() == 1 {
        return hits;
    }
    hits.sort_by_key(|h| (std::cmp::Reverse(h.cend - h.cstart), h.cstart, h.rank));
    // Accepted spans keyed by start; they never overlap each other.
    let mut taken: BTreeMap<usize, Hit> = BTreeMap::new();
    for h in hits {
        let clash = taken
            .range(..h.bend)
            .next_back()
            .is_some_and(|(_, o)| o.bend > h.bstart);
        if !clash {
            taken.insert(h.bstart, h);
        }
    }
    taken.into_values().collect()
}

/// What to scan in one request, built by the core from the request kind (spec section 9): each
/// part with its JSON Pointer in the request.
#[derive(Clone, Debug, Default)]
pub struct ScanRequest<'a> {
    /// Input parts: tool_call `args`, prompt `text`, the `http` request (path, query, headers,
    /// body).
    pub input: Vec<(&'a str, Part<'a>)>,
    /// Output parts: tool_result `result`, completion `text`.
    pub output: Vec<(&'a str, Part<'a>)>,
    /// Where injection heuristics run: prompt text, tool_result strings, http body.
    pub injection: Vec<(&'a str, Part<'a>)>,
    /// Pointer of the part whose rewritten form goes to `redacted` (`/args`, `/result`, `/text`,
    /// `/http`);
    /// `None`: nothing is redacted.
    pub redact_target: Option<&'a str>,
}

/// One finding: positions only, never the matched text.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    /// Detector id (`email`, a custom id, or `injection`).
    pub detector: String,
    /// JSON Pointer of the string in the request.
    pub path: String,
    /// Start offset in chars (Unicode scalar values) of the original string.
    pub start: usize,
    /// End offset (exclusive) in chars.
    pub end: usize,
    /// The finding is in the object key of the member `path` names (offsets into the key), not
    /// in its value. Such a key appears in every path in its redacted form (`[REDACTED:<id>]`,
    /// with `#2`, `#3`... when the object has that name already), so no path carries its text.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub key: bool,
    /// Injection family of the signal this finding marks (`injection` findings only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// Injection score of the whole string, in [0, 1] (`injection` findings only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Every injection family that fired in the string, in [`crate::INJECTION_FAMILIES`] order
    /// (`injection` findings only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub families: Vec<String>,
}

/// The result of [`ContentPolicy::scan`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScanOutcome {
    /// In request order: input parts, then output parts (part order, document order inside a
    /// part, then start offset); injection findings come after detector findings.
    pub findings: Vec<Finding>,
    /// `content:<detector id>` of the first deny-action detector finding, else `content:injection`
    /// when injection's action is deny and it found something.
    pub deny: Option<String>,
    /// `content:<id>` for findings whose action is warn, once per id, in first-occurrence order.
    pub warnings: Vec<String>,
    /// The rewritten redact target (a `Value::String` for a text part) iff at least one finding
    /// in it was redacted. The core drops it when the decision is deny.
    pub redacted: Option<Value>,
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<ContentPolicy>();
    let _ = builtin::ALL;
}
