//! Rewritten views of a scanned string, each with a map from its bytes back to the original's:
//! detectors match what a reader (or a decoder downstream) sees, and findings keep their offsets
//! into the original text.
//!
//! - The *normalised* view: NFKC (full-width forms, NBSP and other spaces, ligatures folded),
//!   default-ignorable characters removed (zero-width spaces and joiners, soft hyphens, word
//!   joiners, bidi controls, variation selectors), decimal digits of every script as ASCII digits,
//!   Unicode dashes and minus signs as `-`.
//! - The *decoded* view: one level of URL-encoding (`%XX`) and of HTML character references
//!   (`&#52;`, `&#x34;`, `&amp;` and a few other names) decoded, then normalised.
//!
//! A string that needs neither has no view, so pure ASCII text without `%` or `&` costs one
//! `is_ascii` and one `memchr2`.

use unicode_normalization::char::canonical_combining_class;
use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfkc_quick};

/// A rewritten string and where each of its bytes came from.
#[derive(Debug)]
pub(crate) struct View {
    text: String,
    /// Pieces of `text` in order, each copied from or produced by one span of the source.
    pieces: Vec<Piece>,
    /// The view this one was built from, when it was not built from the original.
    parent: Option<Box<View>>,
}

#[derive(Clone, Copy, Debug)]
struct Piece {
    /// Start of the piece in the view.
    at: usize,
    /// Its source span.
    from: usize,
    to: usize,
    /// Copied byte for byte (offsets inside map one to one), else produced from the whole span.
    copied: bool,
}

impl View {
    /// The rewritten text.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// The span of the original string that view bytes `a..z` (`a < z`) came from: it covers
    /// every original character any of them was produced from, so a redaction of it leaves none
    /// of them behind.
    pub(crate) fn original(&self, a: usize, z: usize) -> (usize, usize) {
        let (a, z) = self.source(a, z);
        match &self.parent {
            Some(p) => p.original(a, z),
            None => (a, z),
        }
    }

    fn source(&self, a: usize, z: usize) -> (usize, usize) {
        let piece = |k: usize| {
            let i = self.pieces.partition_point(|p| p.at <= k).saturating_sub(1);
            self.pieces.get(i).copied()
        };
        let last = z.saturating_sub(1).max(a);
        let start = piece(a).map_or(a, |p| {
            if p.copied {
                (p.from + (a - p.at)).min(p.to)
            } else {
                p.from
            }
        });
        let end = piece(last).map_or(z, |p| {
            if p.copied {
                (p.from + (last - p.at) + 1).min(p.to)
            } else {
                p.to
            }
        });
        (start, end.max(start))
    }
}

/// Builds a view piece by piece.
struct Builder<'a> {
    src: &'a str,
    text: String,
    pieces: Vec<Piece>,
    /// Whether anything was produced rather than copied.
    changed: bool,
}

impl<'a> Builder<'a> {
    fn new(src: &'a str) -> Self {
        Builder {
            src,
            text: String::with_capacity(src.len()),
            pieces: Vec::new(),
            changed: false,
        }
    }

    /// Copy `src[from..to]` as it is.
    fn copy(&mut self, from: usize, to: usize) {
        let Some(part) = self.src.get(from..to) else {
            return;
        };
        if part.is_empty() {
            return;
        }
        let at = self.text.len();
        match self.pieces.last_mut() {
            Some(p) if p.copied && p.to == from && p.at + (p.to - p.from) == at => p.to = to,
            _ => self.pieces.push(Piece {
                at,
                from,
                to,
                copied: true,
            }),
        }
        self.text.push_str(part);
    }

    /// Emit `out` in place of `src[from..to]`.
    fn produce(&mut self, from: usize, to: usize, out: &str) {
        self.changed = true;
        if out.is_empty() {
            return;
        }
        self.pieces.push(Piece {
            at: self.text.len(),
            from,
            to,
            copied: false,
        });
        self.text.push_str(out);
    }

    fn finish(self, parent: Option<Box<View>>) -> Option<View> {
        self.changed.then_some(View {
            text: self.text,
            pieces: self.pieces,
            parent,
        })
    }
}

/// Zero points of the Unicode decimal digit (`Nd`) ranges outside ASCII, each ten digits long
/// (Unicode 15).
const DIGIT_ZEROS: &[u32] = &[
    0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66, 0xDE6,
    0xE50, 0xED0, 0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90, 0x1B50,
    0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10,
    0x104A0, 0x10D30, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0, 0x11650,
    0x116C0, 0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0, 0x11F50, 0x16A60, 0x16AC0,
    0x16B50, 0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E4F0, 0x1E950,
    0x1FBF0,
];

/// The ASCII digit a non-ASCII decimal digit stands for.
fn ascii_digit(c: char) -> Option<char> {
    let u = u32::from(c);
    let i = DIGIT_ZEROS.partition_point(|&z| z <= u).checked_sub(1)?;
    let zero = *DIGIT_ZEROS.get(i)?;
    let d = u - zero;
    (d < 10).then(|| char::from_digit(d, 10)).flatten()
}

/// Unicode `Default_Ignorable_Code_Point`: invisible characters a reader never sees.
fn ignorable(c: char) -> bool {
    matches!(
        u32::from(c),
        0xAD | 0x34F
            | 0x61C
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF0..=0xFFF8
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
}

/// Hyphens, dashes and minus signs NFKC leaves alone.
fn dash(c: char) -> bool {
    matches!(
        c,
        '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{FE58}' | '\u{FE63}'
    )
}

/// One normalised character, or `None` when it is removed.
fn fold(c: char) -> Option<char> {
    if c.is_ascii() {
        Some(c)
    } else if ignorable(c) {
        None
    } else if dash(c) {
        Some('-')
    } else {
        Some(ascii_digit(c).unwrap_or(c))
    }
}

/// Whether the normalised view keeps `c` as it is (and so needs nothing around it either).
fn stable(c: char) -> bool {
    // The common cases first: Latin-1 letters (`é`, `ü`), CJK ideographs and Hangul syllables
    // are all NFKC, visible and not digits.
    c.is_ascii()
        || matches!(c, '\u{C0}'..='\u{FF}' | '\u{4E00}'..='\u{9FFF}' | '\u{AC00}'..='\u{D7A3}')
        || (!ignorable(c)
            && !dash(c)
            && ascii_digit(c).is_none()
            && is_nfkc_quick(std::iter::once(c)) == IsNormalized::Yes)
}

/// Start of the next non-ASCII byte of `b` at or after `i` (or `b.len()`), skipping ASCII text a
/// block at a time.
fn next_non_ascii(b: &[u8], mut i: usize) -> usize {
    const BLOCK: usize = 32;
    while let Some(block) = b.get(i..i + BLOCK) {
        if !block.is_ascii() {
            break;
        }
        i += BLOCK;
    }
    b.get(i..)
        .and_then(|r| r.iter().position(|c| !c.is_ascii()))
        .map_or(b.len(), |k| i + k)
}

/// The character starting at byte `i` of `s`.
fn char_at(s: &str, i: usize) -> Option<char> {
    s.get(i..).and_then(|r| r.chars().next())
}

/// Whether `s` may have a view: it is not pure ASCII, or it holds `%` or `&`. One pass for
/// very short strings (keys, enum-like values), where it is cheaper than two searches.
pub(crate) fn may_have_views(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() <= 16 {
        b.iter().any(|&c| !c.is_ascii() || c == b'%' || c == b'&')
    } else {
        !b.is_ascii() || memchr::memchr2(b'%', b'&', b).is_some()
    }
}

/// The normalised view of `s`, or `None` when it would equal `s`.
pub(crate) fn normalised(s: &str) -> Option<View> {
    normalised_from(s, None)
}

fn normalised_from(s: &str, parent: Option<Box<View>>) -> Option<View> {
    let b = s.as_bytes();
    if b.is_ascii() {
        return None;
    }
    // Most non-ASCII text (accented letters, CJK) is already normal: check before building.
    let mut i = next_non_ascii(b, 0);
    loop {
        let c = char_at(s, i)?;
        if !stable(c) {
            break;
        }
        i = next_non_ascii(b, i + c.len_utf8());
    }
    let mut v = Builder::new(s);
    let mut done = 0usize;
    let mut buf = String::new();
    while done < b.len() {
        let k = next_non_ascii(b, done);
        let Some(c) = char_at(s, k) else {
            v.copy(done, b.len());
            break;
        };
        // A combining mark composes with the character before it, even an ASCII one.
        let seg = if canonical_combining_class(c) != 0 && k > done {
            k - 1
        } else {
            k
        };
        v.copy(done, seg);
        let mut end = seg + char_at(s, seg).map_or(1, char::len_utf8);
        while let Some(m) = char_at(s, end).filter(|&m| canonical_combining_class(m) != 0) {
            end += m.len_utf8();
        }
        let part = s.get(seg..end).unwrap_or("");
        let mut chars = part.chars();
        if let (Some(only), None) = (chars.next(), chars.next())
            && stable(only)
        {
            v.copy(seg, end);
        } else {
            buf.clear();
            buf.extend(part.nfkc().filter_map(fold));
            if buf == part {
                v.copy(seg, end);
            } else {
                v.produce(seg, end, &buf);
            }
        }
        done = end;
    }
    v.finish(parent)
}

/// HTML character reference names decoded in the decoded view: the markup characters and those
/// that write parts of the detected formats.
const ENTITIES: &[(&str, char)] = &[
    ("amp", '&'),
    ("lt", '<'),
    ("gt", '>'),
    ("quot", '"'),
    ("apos", '\''),
    ("nbsp", '\u{A0}'),
    ("commat", '@'),
    ("period", '.'),
    ("colon", ':'),
    ("hyphen", '\u{2010}'),
    ("dash", '\u{2010}'),
    ("minus", '\u{2212}'),
    ("ndash", '\u{2013}'),
    ("mdash", '\u{2014}'),
    ("lowbar", '_'),
    ("sol", '/'),
    ("plus", '+'),
    ("equals", '='),
    ("num", '#'),
    ("percnt", '%'),
    ("lpar", '('),
    ("rpar", ')'),
    ("comma", ','),
    ("shy", '\u{AD}'),
    ("ZeroWidthSpace", '\u{200B}'),
    ("zwj", '\u{200D}'),
    ("zwnj", '\u{200C}'),
    ("NoBreak", '\u{2060}'),
];

/// The character reference starting at the `&` at byte `i` of `b`: its character and end.
fn entity(b: &[u8], i: usize) -> Option<(char, usize)> {
    let rest = b.get(i + 1..)?;
    let semi = rest.iter().take(33).position(|&c| c == b';')?;
    let name = rest.get(..semi)?;
    let end = i + 1 + semi + 1;
    let c = if let Some(num) = name.strip_prefix(b"#") {
        let (digits, radix) = match num.first() {
            Some(b'x' | b'X') => (num.get(1..)?, 16),
            _ => (num, 10),
        };
        if digits.is_empty() || digits.len() > 8 {
            return None;
        }
        let v = u32::from_str_radix(std::str::from_utf8(digits).ok()?, radix).ok()?;
        char::from_u32(v).filter(|&c| c != '\0')?
    } else {
        ENTITIES
            .iter()
            .find(|(n, _)| n.as_bytes() == name)
            .map(|(_, c)| *c)?
    };
    Some((c, end))
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The byte a `%XX` escape at `i` stands for.
fn percent(b: &[u8], i: usize) -> Option<u8> {
    if b.get(i) != Some(&b'%') {
        return None;
    }
    Some(hex(*b.get(i + 1)?)? << 4 | hex(*b.get(i + 2)?)?)
}

/// The decoded view of `s` (decoded, then normalised), or `None` when `s` has no escape.
pub(crate) fn decoded(s: &str) -> Option<View> {
    let b = s.as_bytes();
    let mut at = memchr::memchr2(b'%', b'&', b)?;
    let mut v = Builder::new(s);
    let mut done = 0usize;
    let mut bytes = Vec::new();
    let mut utf8 = [0u8; 4];
    loop {
        v.copy(done, at);
        done = at;
        if at_byte(b, at) == b'&' {
            if let Some((c, end)) = entity(b, at) {
                v.produce(at, end, c.encode_utf8(&mut utf8));
                done = end;
            }
        } else {
            // A run of escapes, decoded together: `%C3%A9` is one character.
            bytes.clear();
            let mut j = at;
            while let Some(x) = percent(b, j) {
                bytes.push(x);
                j += 3;
            }
            let mut k = 0usize;
            for chunk in bytes.utf8_chunks() {
                for c in chunk.valid().chars() {
                    let n = c.len_utf8();
                    v.produce(at + 3 * k, at + 3 * (k + n), c.encode_utf8(&mut utf8));
                    k += n;
                }
                // Bytes that are not UTF-8 stay escaped.
                let bad = chunk.invalid().len();
                v.copy(at + 3 * k, at + 3 * (k + bad));
                k += bad;
            }
            done = j;
        }
        // Past an escape that did not decode, keep looking after its first byte.
        let from = done.max(at + 1);
        v.copy(done, from);
        done = from;
        match b.get(from..).and_then(|r| memchr::memchr2(b'%', b'&', r)) {
            Some(k) => at = from + k,
            None => break,
        }
    }
    v.copy(done, b.len());
    let d = v.finish(None)?;
    let text = d.text.clone();
    let parent = Box::new(d);
    match normalised_from(&text, None) {
        Some(mut n) => {
            n.parent = Some(parent);
            Some(n)
        }
        None => Some(*parent),
    }
}

fn at_byte(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    /// The original text behind view bytes `a..z`.
    fn back<'a>(s: &'a str, v: &View, a: usize, z: usize) -> &'a str {
        let (a, z) = v.original(a, z);
        &s[a..z]
    }

    #[test]
    fn plain_text_has_no_view() {
        assert!(normalised("plain ascii 4111").is_none());
        assert!(normalised("Der Bericht für München, 東京").is_none());
        assert!(decoded("no escapes here").is_none());
        assert!(decoded("R&D at 100% & more").is_none());
    }

    #[test]
    fn normalised_view_folds_digits_spaces_and_invisibles() {
        let s = "card ４１１１\u{A0}1111\u{200B}-1111\u{AD}-١١١١ x";
        let v = normalised(s).unwrap();
        assert_eq!(v.text(), "card 4111 1111-1111-1111 x");
        let a = v.text().find('4').unwrap();
        let z = v.text().rfind('1').unwrap() + 1;
        assert_eq!(
            back(s, &v, a, z),
            "４１１１\u{A0}1111\u{200B}-1111\u{AD}-١١١١"
        );
        // Invisible characters at the edges are not part of the span.
        let s = "\u{200B}ab\u{2060}";
        let v = normalised(s).unwrap();
        assert_eq!(v.text(), "ab");
        assert_eq!(back(s, &v, 0, 2), "ab");
    }

    #[test]
    fn normalised_view_composes_and_folds_dashes() {
        let s = "jose\u{301}@example.com 123\u{2010}45\u{2212}6789";
        let v = normalised(s).unwrap();
        assert_eq!(v.text(), "jos\u{E9}@example.com 123-45-6789");
        assert_eq!(back(s, &v, 0, 5), "jose\u{301}");
    }

    #[test]
    fn decoded_view_maps_escapes_back() {
        let s = "4111%201111%201111%201111";
        let v = decoded(s).unwrap();
        assert_eq!(v.text(), "4111 1111 1111 1111");
        assert_eq!(back(s, &v, 0, 19), s);
        assert_eq!(back(s, &v, 5, 9), "1111");
        let s = "&#52;111 &#x31;111&nbsp;x%C3%A9%ZZ &amp;amp;";
        let v = decoded(s).unwrap();
        assert_eq!(v.text(), "4111 1111 x\u{E9}%ZZ &amp;");
        assert_eq!(back(s, &v, 0, 4), "&#52;111");
        assert_eq!(back(s, &v, 11, 13), "%C3%A9");
        // Invalid UTF-8 stays escaped: nothing to decode.
        assert!(decoded("a%FFb").is_none());
        let s = "x%FF%41";
        assert_eq!(decoded(s).unwrap().text(), "x%FFA");
    }
}
